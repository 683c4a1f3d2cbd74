"""Safe defaults: a least-privilege MySQL probe user; Redis ACL users and TLS through the URL."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from rq.registry import FinishedJobRegistry

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from tests.conftest import MYSQL, TEST_REDIS_URL, WorkerProcesses, run_cli, wait_until

PROBE_USER, PROBE_PASSWORD = "easeoff_probe_t", "probe-" + uuid.uuid4().hex[:12]
# What the probes need, as the README documents it: status and variables need nothing; the
# heartbeat needs its table; replica status needs SLAVE MONITOR (MariaDB 10.5+).
PROBE_GRANTS = (
    f"GRANT SLAVE MONITOR ON *.* TO '{PROBE_USER}'@'%'",
    f"GRANT SELECT, INSERT, DELETE, CREATE ON `easeoff`.* TO '{PROBE_USER}'@'%'",
)


def root_sql(*statements: str) -> list[tuple]:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            rows: list[tuple] = []
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
            return rows
    finally:
        conn.close()


@pytest.fixture
def probe_user() -> Iterator[str]:
    root_sql(
        f"DROP USER IF EXISTS '{PROBE_USER}'@'%'",
        f"CREATE USER '{PROBE_USER}'@'%' IDENTIFIED BY '{PROBE_PASSWORD}'",
        *PROBE_GRANTS,
    )
    yield PROBE_USER
    root_sql(f"DROP USER IF EXISTS '{PROBE_USER}'@'%'")


def probe_config(tmp_path: Path, user: str, password: str) -> Path:
    """db1 as a primary (heartbeat written) and, under another name, as a replica (replica status read)."""
    url = f"mysql://{user}:{password}@127.0.0.1:3306"
    path = tmp_path / "probe.toml"
    path.write_text(
        f"""[redis]
url = "{TEST_REDIS_URL}"
[mysql.hosts.writer]
url = "{url}"
[mysql.hosts.reader]
url = "{url}"
[resources."shard:1"]
primary = "writer"
replicas = ["reader"]
[signals.connections]
high = 0.9
low = 0.8
[signals.lag]
high = 5
low = 2
""",
        encoding="utf-8",
    )
    return path


def test_the_documented_probe_grants_are_enough_and_no_more(probe_user: str, tmp_path: Path, redis_conn: Redis) -> None:
    grants = sorted(row[0] for row in root_sql(f"SHOW GRANTS FOR '{probe_user}'@'%'"))
    assert len(grants) == 2, grants  # the two grants above, and nothing else
    assert grants[0].startswith("GRANT SELECT, INSERT, DELETE, CREATE ON `easeoff`.* TO"), grants
    assert grants[1].startswith("GRANT SLAVE MONITOR ON *.* TO"), grants
    snapshot = ReadingsCache(redis_conn, load_config(probe_config(tmp_path, probe_user, PROBE_PASSWORD))).probe_now()
    writer, reader = snapshot.get("writer"), snapshot.get("reader")
    assert writer is not None and writer.error is None, writer
    assert "connections" in writer.values and "heartbeat_at" in writer.counters  # the heartbeat row was written
    assert reader is not None and reader.error is None, reader  # SHOW SLAVE STATUS was allowed
    assert reader.notes.get("replication") == "not replicating (no replica status)"


def test_without_slave_monitor_the_replica_probe_fails_closed_and_says_why(
    probe_user: str, tmp_path: Path, redis_conn: Redis
) -> None:
    root_sql(f"REVOKE SLAVE MONITOR ON *.* FROM '{probe_user}'@'%'")
    snapshot = ReadingsCache(redis_conn, load_config(probe_config(tmp_path, probe_user, PROBE_PASSWORD))).probe_now()
    reader = snapshot.get("reader")
    assert reader is not None and reader.error is not None
    assert "1227" in reader.error or "denied" in reader.error.lower(), reader.error
    assert PROBE_PASSWORD not in reader.error


@pytest.fixture
def acl_user(redis_conn: Redis) -> Iterator[tuple[str, str]]:
    name, password = "easeoff_acl_t", "acl-" + uuid.uuid4().hex[:12]
    redis_conn.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", "~*", "&*", "+@all")
    yield name, password
    redis_conn.execute_command("ACL", "DELUSER", name)


def test_a_redis_acl_user_and_password_work_through_the_url(
    acl_user: tuple[str, str], tmp_path: Path, write_config
) -> None:
    name, password = acl_user
    config = str(write_config())
    url = TEST_REDIS_URL.replace("redis://", f"redis://{name}:{password}@")
    good = run_cli("--config", config, "status", "--json", env={"EASEOFF_REDIS_URL": url})
    assert good.returncode == 0, good.stderr
    wrong = run_cli("--config", config, "status", env={"EASEOFF_REDIS_URL": url.replace(password, "wrong-pw-123")})
    assert wrong.returncode == 2
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    assert "wrong-pw-123" not in wrong.stderr and password not in good.stdout + good.stderr


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own, speaking TLS only, with a self-signed certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"

    def answers() -> bool:
        try:
            return bool(Redis.from_url(url, socket_connect_timeout=0.3).ping())
        except Exception:
            return False

    wait_until(answers, timeout=20, what="the TLS redis-server")
    yield url
    server.terminate()
    server.wait(timeout=20)


def test_redis_over_tls_through_the_url(tls_redis: str, shards, write_config, workers: WorkerProcesses) -> None:
    config = write_config(redis_url=tls_redis)
    enqueued = run_cli("--config", str(config), "enqueue", "record_run", "--args", '{"shard": 1, "tag": "tls"}')
    assert enqueued.returncode == 0, enqueued.stderr
    proc = workers.start(config, "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    status = json.loads(run_cli("--config", str(config), "status", "--json").stdout)
    assert status["queues"]["heavy"]["ready"] == 0
    assert FinishedJobRegistry("heavy", connection=Redis.from_url(tls_redis)).count == 1
    plain = run_cli("--config", str(config), "status", env={"EASEOFF_REDIS_URL": tls_redis.replace("rediss", "redis")})
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
