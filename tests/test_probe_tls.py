"""Probe connections and TLS, on real mariadbd instances of the sandbox: a server that offers no
TLS costs a cold worker no CA-store load (about 50 ms before its first reading), and one that
offers TLS still gets an encrypted probe, every connection of a process on one shared context.
A host given `ssl_ca` is probed over verified TLS only: a certificate naming another host, or a
server without TLS, is a probe error (fail closed); a client certificate logs in a `REQUIRE X509`
user. The certificates come from a CA made here with openssl."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.readings import Reading
from tests.conftest import TEST_REDIS_URL
from tests.sandbox_support import sandbox_mod

pytestmark = pytest.mark.slow

# Run in a process of its own: the shared context is per process, and must start unbuilt.
PROBE = """
import json, sys
from easeoff.feedback.signals.probe_connection import _ProbeConnection, _SharedPreferredContext
seen = []
for port in map(int, sys.argv[1:]):
    conn = _ProbeConnection(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        cipher = cur.fetchone()[1]
    conn.close()
    context = _SharedPreferredContext._context
    seen.append({"cipher": cipher, "context": None if context is None else id(context)})
print(json.dumps(seen))
"""


@dataclass
class TLSServers:
    plain: int  # offers no TLS
    right: int  # a certificate for 127.0.0.1 and localhost, from the CA; verifies client certificates
    wrong: int  # a certificate from the same CA for wrong.example
    certs: Path


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certs(folder: Path) -> None:
    """ca.pem; server certificates right.pem and wrong.pem; client.pem (each with its .key)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", folder / "ca.key", "-out", folder / "ca.pem", "-days", "2",
            "-subj", "/CN=easeoff test CA")  # fmt: skip
    names = {"right": "IP:127.0.0.1,DNS:localhost", "wrong": "DNS:wrong.example", "client": "DNS:easeoff-probe"}
    for name, alt in names.items():
        (folder / f"{name}.ext").write_text(f"subjectAltName={alt}\n")
        openssl("req", *ec, "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.csr",
                "-subj", f"/CN={alt.split(',')[0].split(':')[1]}")  # fmt: skip
        signed_by_ca = ("-CA", folder / "ca.pem", "-CAkey", folder / "ca.key", "-CAcreateserial", "-days", "2")
        openssl("x509", "-req", "-in", folder / f"{name}.csr", *signed_by_ca, "-out", folder / f"{name}.pem",
                "-extfile", folder / f"{name}.ext")  # fmt: skip


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServers]:
    """Three single primaries: one without TLS, one with the right name, one with a wrong one."""
    base = tmp_path_factory.mktemp("tls")
    certs = base / "certs"
    certs.mkdir()
    make_certs(certs)
    box: Any = sandbox_mod.Sandbox(base / "sb", base_port=sandbox_mod.free_base_port(3900, shards=(1, 2, 3)))
    try:
        topology = box.up(shards=[1, 2, 3], replicas=0, shape="primary")
        plain, right, wrong = (topology.instances[n] for n in ("s1a", "s2a", "s3a"))
        box.set_tls(right.name, certs / "right.pem", certs / "right.key", ca=certs / "ca.pem")
        box.set_tls(wrong.name, certs / "wrong.pem", certs / "wrong.key")
        yield TLSServers(plain.port, right.port, wrong.port, certs)
    finally:
        box.down()


@pytest.fixture
def servers(tls_servers: TLSServers) -> tuple[int, int]:
    """(port without TLS, port with TLS)."""
    return tls_servers.plain, tls_servers.right


def test_tls_context_is_built_only_for_a_server_that_offers_it(servers: tuple[int, int]) -> None:
    plain, tls = servers
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(plain), str(tls), str(tls)], check=True, capture_output=True, text=True
    )
    first, second, third = json.loads(out.stdout)
    assert first == {"cipher": "", "context": None}  # no TLS offered: the CA store was never loaded
    assert second["cipher"] and third["cipher"]  # TLS offered: PREFERRED mode took it
    assert second["context"] is not None and second["context"] == third["context"]  # one context, shared


def probe_hosts(redis: Redis, tmp_path: Path, hosts: dict[str, str]) -> dict[str, Reading]:
    """One probe of each `[mysql.hosts.NAME]` (NAME → the table's lines), each its own resource."""
    tables = "".join(f"[mysql.hosts.{name}]\n{lines}\n" for name, lines in hosts.items())
    resources = "".join(f'[resources."r:{name}"]\nhosts = ["{name}"]\n' for name in hosts)
    path = tmp_path / "tls.toml"
    path.write_text(
        f'[redis]\nurl = "{TEST_REDIS_URL}"\n[probe]\ntimeout = 2\n{tables}{resources}'
        "[signals.connections]\nhigh = 0.9\nlow = 0.8\n",
        encoding="utf-8",
    )
    snapshot = ReadingsCache(redis, load_config(path)).probe_now()
    found = {name: snapshot.get(name) for name in hosts}
    assert all(r is not None for r in found.values()), found
    return {name: r for name, r in found.items() if r is not None}


def test_a_verified_probe_needs_the_right_name_and_fails_closed_otherwise(
    tls_servers: TLSServers, redis_conn: Redis, tmp_path: Path
) -> None:
    ca = tls_servers.certs / "ca.pem"
    readings = probe_hosts(
        redis_conn,
        tmp_path,
        {
            "right": f'url = "mysql://root@127.0.0.1:{tls_servers.right}"\nssl_ca = "{ca}"',
            "by_name": f'url = "mysql://root@localhost:{tls_servers.right}"\nssl_ca = "{ca}"',
            "wrong": f'url = "mysql://root@127.0.0.1:{tls_servers.wrong}"\nssl_ca = "{ca}"',
            "plain": f'url = "mysql://root@127.0.0.1:{tls_servers.plain}"\nssl_ca = "{ca}"',
            "unchecked": f'url = "mysql://root@127.0.0.1:{tls_servers.wrong}"\nssl_ca = "{ca}"\n'
            "ssl_verify_identity = false",
            "preferred": f'url = "mysql://root@127.0.0.1:{tls_servers.wrong}"',  # no TLS keys: as before
        },
    )
    for good in ("right", "by_name"):
        assert readings[good].error is None and "connections" in readings[good].values, readings[good]
    wrong = readings["wrong"].error
    assert wrong is not None and "tls: certificate verify failed" in wrong and "mismatch" in wrong, wrong
    assert readings["wrong"].values == {} or "connections" not in readings["wrong"].values
    plain = readings["plain"].error
    assert plain is not None and "TLS" in plain.upper().replace("SSL", "TLS"), plain
    assert readings["unchecked"].error is None, readings["unchecked"]  # the CA still vouches for it
    assert readings["preferred"].error is None, readings["preferred"]


def test_a_client_certificate_logs_in_a_require_x509_user(
    tls_servers: TLSServers, redis_conn: Redis, tmp_path: Path
) -> None:
    root = pymysql.connect(host="127.0.0.1", port=tls_servers.right, user="root", ssl_disabled=True, autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE OR REPLACE USER 'probe_x509'@'%' REQUIRE X509")
    root.close()
    certs = tls_servers.certs
    url = f'url = "mysql://probe_x509@127.0.0.1:{tls_servers.right}"\nssl_ca = "{certs / "ca.pem"}"'
    readings = probe_hosts(
        redis_conn,
        tmp_path,
        {
            "with_cert": f'{url}\nssl_cert = "{certs / "client.pem"}"\nssl_key = "{certs / "client.key"}"',
            "without": url,
        },
    )
    assert readings["with_cert"].error is None, readings["with_cert"]
    without = readings["without"].error
    assert without is not None and without.startswith("1045"), without  # access denied
