"""Probe connections and TLS, on real mariadbd instances of the sandbox: a server that offers no
TLS costs a cold worker no CA-store load (about 50 ms before its first reading), and one that
offers TLS still gets an encrypted probe, every connection of a process on one shared context."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sandbox_support import sandbox_mod

# Run in a process of its own: the shared context is per process, and must start unbuilt.
PROBE = """
import json, sys
from easeoff.feedback.signals.sources.mysql import _ProbeConnection, _SharedPreferredContext
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


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(port without TLS, port with TLS): two single primaries, the second given a certificate."""
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    box: Any = sandbox_mod.Sandbox(base / "sb", base_port=sandbox_mod.free_base_port(3900, shards=(1, 2)))
    try:
        topology = box.up(shards=[1, 2], replicas=0, shape="primary")
        plain, tls = topology.instances["s1a"], topology.instances["s2a"]
        box.kill(tls.name, graceful=True)
        with box._cnf(tls.name).open("a") as cnf:
            cnf.write(f"ssl-cert={cert}\nssl-key={key}\n")
        box.start(tls.name)
        yield plain.port, tls.port
    finally:
        box.down()


def test_tls_context_is_built_only_for_a_server_that_offers_it(servers: tuple[int, int]) -> None:
    plain, tls = servers
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(plain), str(tls), str(tls)], check=True, capture_output=True, text=True
    )
    first, second, third = json.loads(out.stdout)
    assert first == {"cipher": "", "context": None}  # no TLS offered: the CA store was never loaded
    assert second["cipher"] and third["cipher"]  # TLS offered: PREFERRED mode took it
    assert second["context"] is not None and second["context"] == third["context"]  # one context, shared
