"""scripts/sandbox.py on real mariadbd instances: a master-master pair and a replica, real lag, stopped threads.

One shard (s1a <-> s1b, s1r1 <- s1a) is started once for the module in a private directory on a
free block of ports, and torn down at the end. Each test restores what it changes.
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import stays_true, wait_until
from tests.sandbox_support import SCRIPT, sandbox_mod

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base_dir = tmp_path_factory.mktemp("sandbox")
    sandbox = sandbox_mod.Sandbox(base_dir / "sb", base_port=sandbox_mod.free_base_port(3600))
    try:
        sandbox.up(shards=[1], replicas=1)
        yield sandbox
    finally:
        sandbox.down()


@pytest.fixture
def table(sb: Any) -> str:
    """A fresh table in `easeoff`, created on s1a and replicated to every member of the shard."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    sb.query("s1a", f"CREATE TABLE easeoff.{name} (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(64) NOT NULL)")
    sb.wait_synced(timeout=20)
    return f"easeoff.{name}"


def has_row(sb: Any, instance: str, table: str, tag: str) -> bool:
    return bool(sb.query(instance, f"SELECT 1 FROM {table} WHERE tag = %s", (tag,)))


def test_topology_is_recorded_and_up_is_idempotent(sb: Any) -> None:
    topo = sb.topology()
    shard = topo.shards[1]
    assert shard.shape == "pair+replicas"
    assert [(i.name, i.role, i.source) for i in shard.instances] == [
        ("s1a", "pair", "s1b"),
        ("s1b", "pair", "s1a"),
        ("s1r1", "replica", "s1a"),
    ]
    assert [i.port for i in shard.instances] == [sb.base_port, sb.base_port + 1, sb.base_port + 2]
    assert sb.port("s1r1") == sb.base_port + 2
    assert sb.url("s1b") == f"mysql://root@127.0.0.1:{sb.base_port + 1}"
    pids = {name: sb.pid(name) for name in topo.instances}
    assert all(pids.values())
    again = sb.up(shards=[1], replicas=1)
    assert again.to_dict() == topo.to_dict()
    assert {name: sb.pid(name) for name in topo.instances} == pids
    for name in topo.instances:
        assert sb.query(name, "SHOW DATABASES LIKE 'easeoff'") == [("easeoff",)]


def test_master_master_replicates_both_ways(sb: Any, table: str) -> None:
    sb.query("s1a", f"INSERT INTO {table} (tag) VALUES ('from-a')")
    for instance in ("s1b", "s1r1"):
        wait_until(lambda i=instance: has_row(sb, i, table, "from-a"), 15, what=f"s1a's row on {instance}")

    sb.query("s1b", f"INSERT INTO {table} (tag) VALUES ('from-b')")
    for instance in ("s1a", "s1r1"):
        wait_until(lambda i=instance: has_row(sb, i, table, "from-b"), 15, what=f"s1b's row on {instance}")

    # auto_increment_increment=2 with distinct offsets: the two writers never hand out the same id.
    ids = {tag: id_ for id_, tag in sb.query("s1r1", f"SELECT id, tag FROM {table}")}
    assert ids["from-a"] % 2 == 1 and ids["from-b"] % 2 == 0


def test_master_delay_makes_real_lag(sb: Any, table: str) -> None:
    delay = 3
    sb.delay("s1r1", delay)
    try:
        assert sb.replica_status("s1r1")["SQL_Delay"] == delay
        written = time.monotonic()
        sb.query("s1a", f"INSERT INTO {table} (tag) VALUES ('late')")
        wait_until(lambda: has_row(sb, "s1b", table, "late"), 15, what="the row on the undelayed s1b")

        def lagging_without_the_row() -> bool:
            lag = sb.replica_status("s1r1")["Seconds_Behind_Master"]
            return lag is not None and lag >= 1 and not has_row(sb, "s1r1", table, "late")

        wait_until(lagging_without_the_row, delay + 5, what="Seconds_Behind_Master >= 1 on s1r1, row not applied")
        wait_until(lambda: has_row(sb, "s1r1", table, "late"), delay + 15, what="the delayed row on s1r1")
        # MASTER_DELAY counts from the event's timestamp, which has one-second resolution.
        assert time.monotonic() - written >= delay - 1
    finally:
        sb.delay("s1r1", 0)
    sb.wait_synced(["s1r1"], timeout=20)


def test_stopped_sql_thread_shows_and_holds_back_changes(sb: Any, table: str) -> None:
    sb.stop_sql("s1r1")
    try:
        st = sb.replica_status("s1r1")
        assert st["Slave_SQL_Running"] == "No"
        assert st["Slave_IO_Running"] == "Yes"
        assert st["Seconds_Behind_Master"] is None
        sb.query("s1a", f"INSERT INTO {table} (tag) VALUES ('held')")
        wait_until(lambda: has_row(sb, "s1b", table, "held"), 15, what="the row on s1b")
        stays_true(lambda: not has_row(sb, "s1r1", table, "held"), 1.0, what="s1r1 applies nothing")
    finally:
        sb.start_sql("s1r1")
    wait_until(lambda: sb.replica_status("s1r1")["Slave_SQL_Running"] == "Yes", 15, what="SQL thread running")
    wait_until(lambda: has_row(sb, "s1r1", table, "held"), 15, what="the held row on s1r1 after start-sql")


def test_killed_pair_half_is_unreachable_and_catches_up_when_started(sb: Any, table: str) -> None:
    port = sb.instance("s1b").port
    sb.kill("s1b")
    try:
        with pytest.raises(pymysql.err.OperationalError):
            sandbox_mod.connect(port, timeout=1)
        assert sb.pid("s1b") is None
        sb.query("s1a", f"INSERT INTO {table} (tag) VALUES ('while-b-down')")
        wait_until(lambda: sb.replica_status("s1a")["Slave_IO_Running"] != "Yes", 15, what="s1a notices s1b is gone")
    finally:
        sb.start("s1b")
    # start() returns once both links of the pair run again: s1b follows s1a, and s1a has reconnected to s1b.
    assert sb.replica_status("s1b")["Slave_IO_Running"] == "Yes"
    assert sb.replica_status("s1a")["Slave_IO_Running"] == "Yes"
    replicas_of_b = {int(row[0]) for row in sb.query("s1b", "SHOW SLAVE HOSTS")}
    assert sb.instance("s1a").server_id in replicas_of_b
    wait_until(lambda: has_row(sb, "s1b", table, "while-b-down"), 20, what="s1b catches up after start")
    sb.query("s1b", f"INSERT INTO {table} (tag) VALUES ('after-restart')")
    wait_until(lambda: has_row(sb, "s1a", table, "after-restart"), 20, what="s1a reconnects to s1b")
    wait_until(lambda: has_row(sb, "s1r1", table, "after-restart"), 20, what="s1b's row on s1r1 via s1a")


def run_cli(*args: str, sandbox_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(sandbox_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_status_and_bad_arguments(sb: Any) -> None:
    status = run_cli("status", sandbox_dir=sb.base_dir)
    assert status.returncode == 0, status.stderr
    assert "s1r1" in status.stdout and "SQL Yes" in status.stdout
    for bad in (["delay", "s9r1", "3"], ["delay", "s1r1", "-1"], ["up", "--shards", "x"], ["stop-sql", "s1z"], []):
        result = run_cli(*bad, sandbox_dir=sb.base_dir)
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (bad, result.stderr)
        assert "Traceback" not in result.stderr
