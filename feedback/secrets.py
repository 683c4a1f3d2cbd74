"""Keep passwords out of anything a person or a log may read.

A password reaches text in three forms, each redacted whole: a URL's userinfo
(`mysql://app:pw@db`, `redis://:pw@h`, Sentinel's `host:port,host:port` lists too), a query or
DSN parameter whose name says secret (`?password=`, `&sentinel_password=`, `passwd=`, `pwd=`,
`ssl_password=`, `token=`; its name may be percent-encoded, as redis-py decodes it), and a whole
URL percent-encoded inside another (`?next=redis%3A%2F%2F%3Apw%40h`). A password that is itself
percent-encoded goes with the value it is part of, so neither spelling survives.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"
# `scheme://` then the authority: up to a path, query, fragment, whitespace, quote or bracket.
# The userinfo is everything before the authority's last `@` (a raw `@` in a password is common).
_AUTHORITY = re.compile(r"""(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#"<>]*)""")
# `name=value` where the name ends like a secret's; the value runs to the next parameter.
_PARAMETER = re.compile(r"""(?<![\w%.-])([\w%.-]+)=([^&#\s"<>]*)""")
_SECRET_NAME = re.compile(r"(?i)(password|passwd|pwd|pass|secret|token|api_?key)$")
# A URL percent-encoded inside another: `redis%3A%2F%2F...`, to the end of its parameter.
_ENCODED_URL = re.compile(r"""(?i)\b[a-z][a-z0-9+.-]*%3A%2F%2F[^\s&#"<>]*""")


def redact_url(url: str) -> str:
    """`redis://user:pw@host/0?password=pw` → `redis://user:***@host/0?password=***`; a URL
    without a password passes unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        url = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"))
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every password in free text (an exception message, a traceback line, an operator's note)
    masked, in every form the module docstring names; text without one passes unchanged."""
    if "%" in text:
        text = _ENCODED_URL.sub(_redact_encoded_url, text)
    if "://" in text:
        text = _AUTHORITY.sub(_redact_authority, text)
    if "=" in text:
        text = _PARAMETER.sub(_redact_parameter, text)
    return text


def _redact_authority(match: re.Match[str]) -> str:
    scheme, authority = match[1], match[2]
    userinfo, at, hosts = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return match[0]
    return f"{scheme}{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"


def _redact_parameter(match: re.Match[str]) -> str:
    name, value = match[1], match[2]
    if not value or value == MASK or not _SECRET_NAME.search(unquote(name)):
        return match[0]
    return f"{name}={MASK}"


def _redact_encoded_url(match: re.Match[str]) -> str:
    decoded = unquote(match[0])
    redacted = redact_text(decoded)
    return match[0] if redacted == decoded else quote(redacted, safe="")
