"""Keep passwords out of anything a person or a log may read."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """`redis://user:pw@host/0` → `redis://user:***@host/0` (Sentinel's `host:port,host:port`
    lists too); URLs without a password pass unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        url = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hosts}"))
    return re.sub(r"sentinel_password=[^&]*", "sentinel_password=***", url)
