"""Where the example tasks find a shard's database.

The example catalog runs against the demo schema, one database per shard
(`easeoff_shard{N}`). By default every shard lives on the local MariaDB; the
sandbox and the demo point shards at other servers with `EASEOFF_SHARD_URLS`
(a JSON object, shard number → mysql:// URL).
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote, urlsplit

import pymysql

DEFAULT_URL = "mysql://root@127.0.0.1:3306"
URL_ENV = "EASEOFF_DEMO_MYSQL_URL"
SHARD_URLS_ENV = "EASEOFF_SHARD_URLS"


def database_name(shard: int) -> str:
    return f"easeoff_shard{int(shard)}"


def shard_url(shard: int) -> str:
    mapping = os.environ.get(SHARD_URLS_ENV)
    if mapping:
        urls = json.loads(mapping)
        if str(shard) in urls:
            return str(urls[str(shard)])
    return os.environ.get(URL_ENV, DEFAULT_URL)


def connect(shard: int | None = None, url: str | None = None, database: bool = True) -> pymysql.connections.Connection:
    """A connection to the shard's server, in its demo database unless `database=False`."""
    parts = urlsplit(url or shard_url(shard or 1))
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database_name(shard) if database and shard is not None else None,
        connect_timeout=5,
        autocommit=False,
    )
