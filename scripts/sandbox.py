#!/usr/bin/env python3
"""Start and stop extra real mariadbd instances wired for replication, for tests and demos.

Each shard is a master-master pair (``s1a`` <-> ``s1b``) plus read replicas of A
(``s1r1``, ``s1r2``, ...), or a plain primary (``s1a``) plus replicas. Every instance
is a real ``mariadbd`` in its own directory under the sandbox directory (default
``/tmp/easeoff-sandbox``, or ``--dir`` / ``EASEOFF_SANDBOX_DIR``), listening on
127.0.0.1 with root and an empty password. Ports: ``base + 10 * (shard - 1) + slot``
with slot 0 = A, 1 = B, 2.. = replicas (base 3400 unless ``--base-port`` /
``EASEOFF_SANDBOX_PORT``). Replication is GTID based (``MASTER_USE_GTID=slave_pos``,
one ``gtid_domain_id`` per server), so it survives a killed instance.

    python scripts/sandbox.py up --shards 1,2 --replicas 1   # idempotent
    python scripts/sandbox.py status [--json]
    python scripts/sandbox.py delay s1r1 5                   # MASTER_DELAY=5 (0 clears it)
    python scripts/sandbox.py stop-sql s1r1 | start-sql s1r1 | stop-io s1r1 | start-io s1r1
    python scripts/sandbox.py kill s1b [--graceful] | start s1b
    python scripts/sandbox.py down

The same as a Python API (scripts/ is not a package: load this file with importlib)::

    sb = Sandbox("/tmp/x", base_port=3600)
    topo = sb.up(shards=[1], replicas=1)
    sb.delay("s1r1", 3); sb.stop_sql("s1r1"); sb.kill("s1b"); sb.start("s1b")
    sb.down()

Needs only the standard library and pymysql.
"""

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

try:
    import pymysql
    import pymysql.cursors
except ImportError:  # pragma: no cover - reported when a server is needed
    pymysql = None  # type: ignore[assignment]

DEFAULT_DIR = "/tmp/easeoff-sandbox"
DEFAULT_BASE_PORT = 3400
DIR_ENV = "EASEOFF_SANDBOX_DIR"
PORT_ENV = "EASEOFF_SANDBOX_PORT"
HOST = "127.0.0.1"
PORTS_PER_SHARD = 10
MAX_REPLICAS = PORTS_PER_SHARD - 2
SHAPES = {"pair": "pair+replicas", "primary": "primary+replicas"}
REPL_USER = "repl"
REPL_PASSWORD = "repl"
DATABASE = "easeoff"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
MARKER = ".easeoff-sandbox"
TOPOLOGY_FILE = "topology.json"
NAME_RE = re.compile(r"^s([1-9][0-9]*)(a|b|r([1-9][0-9]*))$")

# Small buffers so that many instances fit; durability relaxed (a test sandbox).
COMMON_SETTINGS = """\
user=root
skip-name-resolve
host-cache-size=0
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
performance-schema=OFF
innodb-buffer-pool-size=32M
innodb-log-file-size=8M
innodb-log-buffer-size=4M
innodb-flush-log-at-trx-commit=2
innodb-doublewrite=0
innodb-read-io-threads=1
innodb-write-io-threads=1
innodb-purge-threads=1
innodb-buffer-pool-dump-at-shutdown=0
innodb-buffer-pool-load-at-startup=0
aria-pagecache-buffer-size=8M
key-buffer-size=1M
query-cache-type=OFF
query-cache-size=0
max-connections=100
thread-cache-size=8
table-open-cache=400
table-definition-cache=400
tmp-table-size=16M
max-heap-table-size=16M
"""

# mariadb-install-db also creates root@<hostname>, which skip-name-resolve ignores with a warning at
# every start: drop it (and its proxy grant) so error logs stay about real problems.
TEMPLATE_SQL = f"""\
DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS root@'%' IDENTIFIED BY '';
GRANT ALL ON *.* TO root@'%' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS {REPL_USER}@'%' IDENTIFIED BY '{REPL_PASSWORD}';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {REPL_USER}@'%';
"""


class SandboxError(Exception):
    """Something went wrong with the servers; the message is one line for humans."""


class UsageError(SandboxError):
    """The caller asked for something that does not exist or makes no sense."""


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Instance:
    name: str
    shard: int
    slot: int  # 0 = A (pair half or primary), 1 = B, 2.. = replicas
    role: str  # "pair" | "primary" | "replica"
    port: int
    server_id: int
    source: str | None  # the instance it replicates from, if any
    host: str = HOST

    @property
    def url(self) -> str:
        return f"mysql://root@{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shard": self.shard,
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "server_id": self.server_id,
            "source": self.source,
        }


@dataclass
class Shard:
    number: int
    shape: str  # "pair+replicas" | "primary+replicas"
    instances: list[Instance]

    @property
    def writer(self) -> Instance:
        """A: the pair half the replicas follow, or the primary."""
        return self.instances[0]

    @property
    def pair(self) -> list[Instance]:
        return [i for i in self.instances if i.role == "pair"]

    @property
    def primary(self) -> Instance | None:
        return next((i for i in self.instances if i.role == "primary"), None)

    @property
    def replicas(self) -> list[Instance]:
        return [i for i in self.instances if i.role == "replica"]

    def to_dict(self) -> dict[str, Any]:
        primary = self.primary
        return {
            "shape": self.shape,
            "pair": [i.to_dict() for i in self.pair],
            "primary": primary.to_dict() if primary else None,
            "replicas": [i.to_dict() for i in self.replicas],
        }


@dataclass
class Topology:
    base_dir: Path
    base_port: int
    shards: dict[int, Shard] = field(default_factory=dict)

    @property
    def instances(self) -> dict[str, Instance]:
        return {i.name: i for shard in self.shards.values() for i in shard.instances}

    def shard_urls(self) -> dict[str, str]:
        """Shard number -> the writer's URL (the shape of easeoff's EASEOFF_SHARD_URLS)."""
        return {str(n): s.writer.url for n, s in sorted(self.shards.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.base_dir),
            "base_port": self.base_port,
            "host": HOST,
            "shards": {str(n): s.to_dict() for n, s in sorted(self.shards.items())},
            "instances": {name: i.to_dict() for name, i in sorted(self.instances.items(), key=_name_order)},
            "shard_urls": self.shard_urls(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        topo = cls(Path(data["dir"]), int(data["base_port"]))
        for number, shard in data["shards"].items():
            shape = "pair" if shard["shape"] == SHAPES["pair"] else "primary"
            topo.shards[int(number)] = plan_shard(int(number), shape, len(shard["replicas"]), topo.base_port)
        return topo


def _name_order(item: tuple[str, Instance]) -> tuple[int, int]:
    return (item[1].shard, item[1].slot)


def plan_shard(shard: int, shape: str, replicas: int, base_port: int) -> Shard:
    """The instances of one shard: names, roles, ports, server ids, replication sources."""
    if shape not in SHAPES:
        raise UsageError(f"unknown shape {shape!r} (use pair or primary)")
    if shard < 1:
        raise UsageError(f"shard numbers start at 1, not {shard}")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise UsageError(f"replicas must be between 0 and {MAX_REPLICAS}, not {replicas}")
    first = base_port + PORTS_PER_SHARD * (shard - 1)
    if first < 1024 or first + PORTS_PER_SHARD - 1 > 65535:
        raise UsageError(f"shard {shard} would need ports {first}-{first + PORTS_PER_SHARD - 1}, outside 1024-65535")

    def make(slot: int, suffix: str, role: str, source: str | None) -> Instance:
        return Instance(f"s{shard}{suffix}", shard, slot, role, first + slot, shard * 100 + slot + 1, source)

    a, b = f"s{shard}a", f"s{shard}b"
    members = [make(0, "a", "pair", b), make(1, "b", "pair", a)] if shape == "pair" else [make(0, "a", "primary", None)]
    members += [make(1 + n, f"r{n}", "replica", a) for n in range(1, replicas + 1)]
    return Shard(shard, SHAPES[shape], members)


def instance_name(shard: int, which: str | int) -> str:
    """`instance_name(1, "a")` -> "s1a"; `instance_name(1, 2)` -> "s1r2" (replicas count from 1)."""
    return f"s{int(shard)}r{which}" if isinstance(which, int) else f"s{int(shard)}{which}"


# --------------------------------------------------------------------------- processes


def _mariadbd() -> str:
    for candidate in (shutil.which("mariadbd"), "/usr/sbin/mariadbd", shutil.which("mysqld"), "/usr/sbin/mysqld"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SandboxError("mariadbd not found (install mariadb-server)")


def _install_db() -> str:
    for candidate in (shutil.which("mariadb-install-db"), shutil.which("mysql_install_db")):
        if candidate:
            return candidate
    raise SandboxError("mariadb-install-db not found (install mariadb-server)")


def _alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (nobody may reap orphans here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pids_using(defaults_prefix: str) -> dict[int, str]:
    """mariadbd processes started with a --defaults-file under `defaults_prefix` -> that file."""
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not os.path.basename(argv[0].decode(errors="replace")).startswith(("mariadbd", "mysqld")):
            continue
        for arg in argv[1:]:
            text = arg.decode(errors="replace")
            if text.startswith("--defaults-file=") and text[len("--defaults-file=") :].startswith(defaults_prefix):
                if _alive(int(entry.name)):
                    found[int(entry.name)] = text[len("--defaults-file=") :]
                break
    return found


def _wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Poll until every pid has exited; return those still alive at the deadline."""
    remaining = set(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = {p for p in remaining if _alive(p)}
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return remaining


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _tail(path: Path, lines: int = 3, prefix: str | None = None) -> str:
    """The last lines of a log on one line; with `prefix`, nothing at all when the log is empty or missing."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        text = []
    tail = " | ".join(line.strip() for line in text[-lines:])
    if prefix is not None:
        return prefix + tail if tail else ""
    return tail or f"(nothing in {path})"


def _port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_base_port(start: int = DEFAULT_BASE_PORT, shards: Iterable[int] = (1,), tries: int = 50) -> int:
    """The first base port from `start` (in steps of 100) whose ports for `shards` nothing listens on."""
    numbers = list(shards)
    for base in range(start, start + 100 * tries, 100):
        ports = [base + PORTS_PER_SHARD * (n - 1) + slot for n in numbers for slot in range(PORTS_PER_SHARD)]
        if ports[-1] <= 65535 and not any(_port_open(p, timeout=0.05) for p in ports):
            return base
    raise SandboxError(f"no free block of ports from {start}")


def _require_pymysql() -> Any:
    if pymysql is None:
        raise SandboxError("pymysql is not installed (pip install pymysql)")
    return pymysql


def connect(port: int, *, timeout: float = 5.0, read_timeout: float | None = 30.0, **kwargs: Any) -> Any:
    """A pymysql connection as root to 127.0.0.1:`port` (autocommit on unless told otherwise)."""
    driver = _require_pymysql()
    kwargs.setdefault("autocommit", True)
    return driver.connect(
        host=HOST,
        port=port,
        user="root",
        password="",
        connect_timeout=timeout,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        **kwargs,
    )


# --------------------------------------------------------------------------- the sandbox


class Sandbox:
    """Extra mariadbd instances under `base_dir`, on ports from `base_port` up."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, base_port: int | None = None) -> None:
        raw_dir = base_dir if base_dir is not None else os.environ.get(DIR_ENV) or DEFAULT_DIR
        self.base_dir = Path(raw_dir).expanduser().absolute()
        if base_port is None:
            env_port = os.environ.get(PORT_ENV)
            try:
                base_port = int(env_port) if env_port else DEFAULT_BASE_PORT
            except ValueError:
                raise UsageError(f"{PORT_ENV} must be a port number, not {env_port!r}") from None
        self.base_port = int(base_port)
        if self.base_dir == Path("/") or self.base_dir == Path.home():
            raise UsageError(f"refusing to use {self.base_dir} as the sandbox directory")

    # ------------------------------------------------------------------ paths & state

    def _dir(self, name: str) -> Path:
        return self.base_dir / name

    def _cnf(self, name: str) -> Path:
        return self._dir(name) / "my.cnf"

    def _pid_of(self, name: str) -> int | None:
        """The running mariadbd of instance `name`, found by its command line (never a stale pid file)."""
        pids = _pids_using(str(self._cnf(name)))
        return min(pids) if pids else None

    def pid(self, name: str) -> int | None:
        """The pid of instance `name`'s mariadbd, or None when it is not running."""
        self.instance(name)
        return self._pid_of(name)

    def is_running(self, name: str) -> bool:
        return self.pid(name) is not None

    def port(self, name: str) -> int:
        """The TCP port of instance `name` on 127.0.0.1."""
        return self.instance(name).port

    def url(self, name: str) -> str:
        """``mysql://root@127.0.0.1:PORT`` for instance `name`."""
        return self.instance(name).url

    def topology(self) -> Topology | None:
        """The recorded topology, or None when no sandbox is up in this directory."""
        path = self.base_dir / TOPOLOGY_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SandboxError(f"cannot read {path}: {exc}") from None
        topo = Topology.from_dict(data)
        topo.base_dir = self.base_dir
        return topo

    def instance(self, name: str) -> Instance:
        topo = self.topology()
        if topo is None:
            raise UsageError(f"no sandbox in {self.base_dir} (run up first)")
        try:
            return topo.instances[name]
        except KeyError:
            known = ", ".join(n for n, _ in sorted(topo.instances.items(), key=_name_order))
            raise UsageError(f"unknown instance {name!r} (known: {known})") from None

    def _write_topology(self, topo: Topology) -> None:
        path = self.base_dir / TOPOLOGY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(topo.to_dict(), indent=2) + "\n")
        tmp.replace(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One mutating command at a time per sandbox directory (the lock file sits beside it)."""
        self.base_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.base_dir.parent / f".{self.base_dir.name}.lock"
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _claim_dir(self) -> None:
        if self.base_dir.exists() and not (self.base_dir / MARKER).exists() and any(self.base_dir.iterdir()):
            raise UsageError(f"{self.base_dir} exists and is not a sandbox directory; pick another --dir")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / MARKER).touch()

    # ------------------------------------------------------------------ up

    def up(
        self, shards: Iterable[int] = (1,), replicas: int = 1, shape: str = "pair", timeout: float = START_TIMEOUT
    ) -> Topology:
        """Make sure these shards run and replicate; start what is missing or stopped. Idempotent."""
        wanted = sorted({int(s) for s in shards})
        if not wanted:
            raise UsageError("no shards given")
        plans = {n: plan_shard(n, shape, replicas, self.base_port) for n in wanted}
        with self._locked():
            self._claim_dir()
            topo = self.topology() or Topology(self.base_dir, self.base_port)
            if topo.shards and topo.base_port != self.base_port:
                raise UsageError(
                    f"the sandbox in {self.base_dir} uses base port {topo.base_port}, "
                    f"not {self.base_port}; run down first"
                )
            fresh: list[Shard] = []
            for n, plan in plans.items():
                have = topo.shards.get(n)
                if have is None:
                    fresh.append(plan)
                elif have.shape != plan.shape or len(have.replicas) != len(plan.replicas):
                    raise UsageError(
                        f"shard {n} is already up as {have.shape} with {len(have.replicas)} replica(s); run down first"
                    )
            # Instances of recorded shards that are stopped (killed, or after a reboot) just start again.
            restart = [
                i for n in wanted if n in topo.shards for i in topo.shards[n].instances if not self._pid_of(i.name)
            ]
            new = [i for shard in fresh for i in shard.instances]
            self._clear_leftovers(new)
            self._check_ports_free(restart + new)
            try:
                if new:
                    template = self._make_template()
                    try:
                        self._parallel(lambda i: self._create(i, template), new)
                    finally:
                        shutil.rmtree(template.parent, ignore_errors=True)
                self._parallel(lambda i: self._launch_and_wait(i, timeout), restart + new)
                if restart:
                    self._wait_reconnected(restart, topo, timeout)
                for shard in fresh:
                    self._wire(shard, timeout)
                    topo.shards[shard.number] = shard
                    self._write_topology(topo)
            except BaseException:
                # Unrecorded instances must not outlive a failed up (their directories stay for the logs).
                recorded = topo.instances
                self._stop_pids(
                    [p for i in new if i.name not in recorded for p in _pids_using(str(self._cnf(i.name)))],
                    graceful=False,
                )
                raise
            return topo

    def _parallel(self, fn: Callable[[Instance], object], instances: list[Instance]) -> None:
        if not instances:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(instances))) as pool:
            futures = [pool.submit(fn, i) for i in instances]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _clear_leftovers(self, instances: list[Instance]) -> None:
        """A shard that is not recorded was never finished: stop and wipe what an aborted up left."""
        stale = [i for i in instances if self._dir(i.name).exists()]
        for inst in stale:
            self._stop_pids(list(_pids_using(str(self._cnf(inst.name)))), graceful=False)
            shutil.rmtree(self._dir(inst.name))

    def _check_ports_free(self, instances: list[Instance]) -> None:
        for inst in instances:
            if _port_open(inst.port):
                raise SandboxError(f"port {inst.port} (for {inst.name}) is already in use by another process")

    def _cnf_text(self, inst: Instance | None, datadir: Path) -> str:
        if inst is None:  # the template: no networking, no binary log
            return f"[mysqld]\ndatadir={datadir}\nskip-networking\n{COMMON_SETTINGS}"
        d = self._dir(inst.name)
        lines = [
            "[mysqld]",
            f"datadir={datadir}",
            f"socket={d / 'mysqld.sock'}",
            f"pid-file={d / 'mysqld.pid'}",
            f"log-error={d / 'error.log'}",
            f"port={inst.port}",
            f"bind-address={HOST}",
            f"server-id={inst.server_id}",
            f"gtid-domain-id={inst.server_id}",
            "log-bin=binlog",
            "log-slave-updates",
            "binlog-format=ROW",
            "relay-log=relay",
            "slave-net-timeout=10",
        ]
        if inst.role == "pair":
            lines += ["auto-increment-increment=2", f"auto-increment-offset={inst.slot + 1}"]
        return "\n".join(lines) + "\n" + COMMON_SETTINGS

    def _make_template(self) -> Path:
        """One initialised data directory (system tables, root over TCP, replication user) to copy."""
        template = self.base_dir / "template"
        shutil.rmtree(template, ignore_errors=True)
        datadir = template / "data"
        datadir.mkdir(parents=True)
        cnf = template / "my.cnf"
        cnf.write_text(self._cnf_text(None, datadir))
        sql = template / "users.sql"
        sql.write_text(TEMPLATE_SQL)
        result = subprocess.run(
            [
                _install_db(),
                f"--defaults-file={cnf}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--user=root",
                f"--extra-file={sql}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            lines = [x for x in (result.stdout + result.stderr).splitlines() if "ERROR" in x or "error" in x.lower()]
            raise SandboxError(f"mariadb-install-db failed (exit {result.returncode}): {' | '.join(lines[:3])}")
        return datadir

    def _create(self, inst: Instance, template: Path) -> None:
        d = self._dir(inst.name)
        if len(str(d / "mysqld.sock")) > 107:
            raise UsageError(f"sandbox directory path too long for a unix socket: {d}")
        d.mkdir(parents=True)
        shutil.copytree(template, d / "data", symlinks=True)
        self._cnf(inst.name).write_text(self._cnf_text(inst, d / "data"))

    def _launch_and_wait(self, inst: Instance, timeout: float) -> None:
        pid = self._launch(inst)
        self._wait_accepting(inst, pid, timeout)

    def _launch(self, inst: Instance) -> int:
        """Start mariadbd detached: its own session, reparented away from us (a shell forks it and exits)."""
        d = self._dir(inst.name)
        out = d / "mariadbd.out"
        proc = subprocess.run(
            [
                "/bin/sh",
                "-c",
                'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!',
                "sh",
                str(out),
                _mariadbd(),
                f"--defaults-file={self._cnf(inst.name)}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            start_new_session=True,
            timeout=30,
            check=False,
        )
        try:
            return int(proc.stdout.strip())
        except ValueError:
            raise SandboxError(f"could not start mariadbd for {inst.name}: {proc.stderr.strip()}") from None

    def _wait_accepting(self, inst: Instance, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        d = self._dir(inst.name)
        last = ""
        while True:
            if not _alive(pid):
                raise SandboxError(
                    f"mariadbd for {inst.name} (port {inst.port}) exited during startup; "
                    f"error log: {_tail(d / 'error.log')}{_tail(d / 'mariadbd.out', 1, ' | ')}"
                )
            if _port_open(inst.port):
                try:
                    conn = connect(inst.port, timeout=1, read_timeout=5)
                    conn.close()
                    return
                except Exception as exc:  # not ready yet (still initialising)
                    last = str(exc)
            if time.monotonic() > deadline:
                _signal([pid], signal.SIGKILL)
                raise SandboxError(
                    f"{inst.name} (port {inst.port}) did not accept connections within {timeout:g} s"
                    f"{' (' + last + ')' if last else ''}; error log: {_tail(d / 'error.log')}"
                )
            time.sleep(0.05)

    def _wire(self, shard: Shard, timeout: float) -> None:
        """Point every member at its source, start replication, create `easeoff` on A and wait for it everywhere."""
        by_name = {i.name: i for i in shard.instances}
        for inst in shard.instances:
            if inst.source is None:
                continue
            source = by_name[inst.source]
            self._sql(
                inst,
                f"CHANGE MASTER TO MASTER_HOST='{HOST}', MASTER_PORT={source.port}, "
                f"MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', "
                "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                "START SLAVE",
            )
        self._sql(shard.writer, f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        deadline = time.monotonic() + timeout
        waiting = list(shard.instances)
        while waiting:
            waiting = [i for i in waiting if not self._has_database(i)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(i.name for i in waiting)
                detail = "; ".join(self._replication_problem(i) for i in waiting)
                raise SandboxError(f"database {DATABASE} did not replicate to {names} within {timeout:g} s: {detail}")
            time.sleep(0.05)

    def _has_database(self, inst: Instance) -> bool:
        rows = self._sql(inst, f"SHOW DATABASES LIKE '{DATABASE}'")
        return bool(rows)

    def _replication_problem(self, inst: Instance) -> str:
        try:
            st = self._replica_status_of(inst)
        except Exception as exc:
            return f"{inst.name}: {exc}"
        if st is None:
            return f"{inst.name}: not replicating"
        return (
            f"{inst.name}: IO={st.get('Slave_IO_Running')} SQL={st.get('Slave_SQL_Running')} "
            f"{st.get('Last_IO_Error') or ''} {st.get('Last_SQL_Error') or ''}".strip()
        )

    # ------------------------------------------------------------------ down / kill / start

    def down(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop every instance of this sandbox and remove its directory. False if there was nothing."""
        with self._locked():
            if not self.base_dir.exists():
                return False
            if not (self.base_dir / MARKER).exists():
                raise UsageError(f"{self.base_dir} is not a sandbox directory; not removing it")
            pids = list(_pids_using(str(self.base_dir) + "/"))
            stuck = self._stop_pids(pids, graceful=True, timeout=timeout)
            if stuck:
                raise SandboxError(f"mariadbd pids {sorted(stuck)} would not exit; not removing {self.base_dir}")
            shutil.rmtree(self.base_dir)
            return True

    def _stop_pids(self, pids: list[int], graceful: bool, timeout: float = STOP_TIMEOUT) -> set[int]:
        """SIGTERM (a clean shutdown) and wait; SIGKILL whatever is left at the deadline."""
        if not pids:
            return set()
        if graceful:
            _signal(pids, signal.SIGTERM)
            pids = list(_wait_gone(pids, timeout))
        _signal(pids, signal.SIGKILL)
        return _wait_gone(pids, 10.0)

    def kill(self, name: str, graceful: bool = False) -> None:
        """Make `name` unreachable: SIGKILL (a crash) by default, or a clean shutdown. Waits until it is gone."""
        inst = self.instance(name)
        with self._locked():
            pids = list(_pids_using(str(self._cnf(inst.name))))
            stuck = self._stop_pids(pids, graceful=graceful)
            if stuck:
                raise SandboxError(f"{name} (pid {min(stuck)}) would not exit")
            deadline = time.monotonic() + 10
            while _port_open(inst.port):
                if time.monotonic() > deadline:
                    raise SandboxError(f"port {inst.port} still accepts connections after stopping {name}")
                time.sleep(0.05)

    def start(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Start a stopped instance again and wait until it accepts connections (no-op if it runs).

        Its own replication threads start by themselves; its peers reconnect within a second
        (MASTER_CONNECT_RETRY=1).
        """
        inst = self.instance(name)
        with self._locked():
            if self._pid_of(name):
                return
            self._check_ports_free([inst])
            self._launch_and_wait(inst, timeout)
            topo = self.topology()
            assert topo is not None
            self._wait_reconnected([inst], topo, timeout)

    def set_tls(self, name: str, cert: Path, key: Path, ca: Path | None = None) -> None:
        """Restart `name` offering TLS with this certificate (and, with `ca`, able to verify client
        certificates: `REQUIRE X509` users); `ssl-*` lines set before are replaced."""
        self.kill(name, graceful=True)
        cnf = self._cnf(name)
        kept = [line for line in cnf.read_text().splitlines() if not line.startswith("ssl-")]
        tls = [f"ssl-cert={cert}", f"ssl-key={key}", *([f"ssl-ca={ca}"] if ca is not None else [])]
        cnf.write_text("\n".join([*kept, *tls]) + "\n")
        self.start(name)

    def _wait_reconnected(self, restarted: list[Instance], topo: Topology, timeout: float) -> None:
        """Wait until the replication links of freshly started instances run again (in both directions).

        A restarted instance's own IO thread must reach ``Yes`` (its process is new, so that is no
        stale state), and every running instance that follows it and is still trying (IO not ``No``)
        must show up in its SHOW SLAVE HOSTS: the new process lists only replicas that reconnected.
        Links whose other end is down are skipped.
        """
        names = {i.name for i in restarted}
        links = [
            (replica, topo.instances[replica.source])
            for replica in topo.instances.values()
            if replica.source is not None and (replica.name in names or replica.source in names)
        ]
        deadline = time.monotonic() + timeout
        pending = [(r, s) for r, s in links if self._pid_of(r.name) is not None and self._pid_of(s.name) is not None]
        while pending:
            pending = [(r, s) for r, s in pending if not self._link_up(r, s, fresh=r.name in names)]
            if not pending:
                return
            if time.monotonic() > deadline:
                detail = "; ".join(self._replication_problem(r) for r, _ in pending)
                links_text = ", ".join(f"{r.name} <- {s.name}" for r, s in pending)
                raise SandboxError(f"replication did not resume within {timeout:g} s ({links_text}): {detail}")
            time.sleep(0.05)

    def _link_up(self, replica: Instance, source: Instance, fresh: bool) -> bool:
        try:
            st = self._replica_status_of(replica, timeout=2)
            if st is None or st.get("Slave_IO_Running") == "No":
                return True  # not replicating, or its IO thread was stopped on purpose: nothing to wait for
            if fresh:
                return st.get("Slave_IO_Running") == "Yes"
            rows = self._sql(source, "SHOW SLAVE HOSTS", timeout=2)
        except Exception:  # not answering yet: keep waiting until the deadline
            return False
        return any(int(row[0]) == replica.server_id for row in rows)

    # ------------------------------------------------------------------ SQL & replication control

    def connect(self, name: str, **kwargs: Any) -> Any:
        """A pymysql connection as root to instance `name` (autocommit on unless told otherwise)."""
        return connect(self.instance(name).port, **kwargs)

    def _sql(self, inst: Instance, *statements: str, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        conn = connect(inst.port, timeout=timeout)
        try:
            rows: list[tuple[Any, ...]] = []
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    rows = list(cur.fetchall())
            return rows
        finally:
            conn.close()

    def query(self, name: str, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on `name` (autocommit) and return its rows."""
        conn = self.connect(name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def _replica_status_of(self, inst: Instance, timeout: float = 5.0) -> dict[str, Any] | None:
        driver = _require_pymysql()
        conn = connect(inst.port, timeout=timeout, read_timeout=timeout, cursorclass=driver.cursors.DictCursor)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
                return dict(row) if row else None
        finally:
            conn.close()

    def replica_status(self, name: str) -> dict[str, Any] | None:
        """SHOW SLAVE STATUS of `name` as a dict (None if it replicates from nothing)."""
        return self._replica_status_of(self.instance(name))

    def _replicating(self, name: str) -> Instance:
        inst = self.instance(name)
        if inst.source is None:
            raise UsageError(f"{name} is a {inst.role} and replicates from nothing")
        return inst

    def delay(self, name: str, seconds: int) -> None:
        """Real lag: `name` applies each event `seconds` after its source wrote it (0 clears the delay)."""
        inst = self._replicating(name)
        if int(seconds) < 0:
            raise UsageError(f"delay must be 0 or more seconds, not {seconds}")
        self._sql(inst, "STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY={int(seconds)}", "START SLAVE")

    def stop_sql(self, name: str) -> None:
        self._sql(self._replicating(name), "STOP SLAVE SQL_THREAD")

    def start_sql(self, name: str) -> None:
        self._sql(self._replicating(name), "START SLAVE SQL_THREAD")

    def stop_io(self, name: str) -> None:
        self._sql(self._replicating(name), "STOP SLAVE IO_THREAD")

    def start_io(self, name: str) -> None:
        self._sql(self._replicating(name), "START SLAVE IO_THREAD")

    def wait_synced(self, names: Iterable[str] | None = None, timeout: float = 30.0) -> None:
        """Wait until each replicating instance has applied everything its source has (MASTER_GTID_WAIT).

        Without `names`, every replicating instance of the sandbox. An instance's own GTID
        domain is left out (in a pair, B's own writes come back to it from A and are skipped).
        """
        topo = self.topology()
        if topo is None:
            raise UsageError(f"no sandbox in {self.base_dir} (run up first)")
        chosen = [self.instance(n) for n in names] if names is not None else list(topo.instances.values())
        deadline = time.monotonic() + timeout
        for inst in chosen:
            if inst.source is None:
                continue
            source = topo.instances[inst.source]
            (pos,) = self._sql(source, "SELECT @@GLOBAL.gtid_binlog_pos")[0]
            wanted = ",".join(g for g in str(pos).split(",") if g and not g.startswith(f"{inst.server_id}-"))
            left = max(0.1, deadline - time.monotonic())
            conn = connect(inst.port, read_timeout=left + 5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (wanted, left))
                    (result,) = cur.fetchone()
            finally:
                conn.close()
            if result != 0:
                problem = self._replication_problem(inst)
                raise SandboxError(f"{inst.name} did not catch up with {source.name} within {timeout:g} s ({problem})")

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        """One row per instance: the topology entry plus `up` and the replica state (None when down)."""
        topo = self.topology()
        if topo is None:
            return []
        instances = sorted(topo.instances.values(), key=lambda i: (i.shard, i.slot))

        def probe(inst: Instance) -> dict[str, Any]:
            row = inst.to_dict()
            row["up"] = self._pid_of(inst.name) is not None and _port_open(inst.port)
            row["replication"] = None
            if row["up"] and inst.source is not None:
                try:
                    st = self._replica_status_of(inst, timeout=2)
                except Exception as exc:
                    row["replication"] = {"error": str(exc)}
                else:
                    if st is not None:
                        row["replication"] = {
                            "io_running": st.get("Slave_IO_Running"),
                            "sql_running": st.get("Slave_SQL_Running"),
                            "seconds_behind_master": st.get("Seconds_Behind_Master"),
                            "sql_delay": st.get("SQL_Delay"),
                            "gtid_io_pos": st.get("Gtid_IO_Pos"),
                            "last_io_error": st.get("Last_IO_Error") or "",
                            "last_sql_error": st.get("Last_SQL_Error") or "",
                        }
            return row

        with ThreadPoolExecutor(max_workers=min(8, len(instances))) as pool:
            return list(pool.map(probe, instances))


# --------------------------------------------------------------------------- CLI


def format_topology(topo: Topology) -> str:
    lines = [f"sandbox {topo.base_dir} (base port {topo.base_port})"]
    for number, shard in sorted(topo.shards.items()):
        lines.append(f"shard {number}  {shard.shape}")
        for inst in shard.instances:
            source = f"<- {inst.source}" if inst.source else ""
            lines.append(f"  {inst.name:<6} {inst.host}:{inst.port:<6} {inst.role:<8} {source}".rstrip())
    lines.append(f"EASEOFF_SHARD_URLS='{json.dumps(topo.shard_urls())}'")
    return "\n".join(lines)


def format_status(topo: Topology, rows: list[dict[str, Any]]) -> str:
    lines = [f"sandbox {topo.base_dir} (base port {topo.base_port})"]
    shard = None
    for row in rows:
        if row["shard"] != shard:
            shard = row["shard"]
            lines.append(f"shard {shard}  {topo.shards[shard].shape}")
        head = f"  {row['name']:<6} {row['host']}:{row['port']:<6} {row['role']:<8}"
        if not row["up"]:
            lines.append(f"{head} down")
            continue
        repl = row["replication"]
        if row["source"] is None:
            state = "up"
        elif repl is None:
            state = f"up    <- {row['source']}  not configured"
        elif "error" in repl:
            state = f"up    <- {row['source']}  status error: {repl['error']}"
        else:
            lag = repl["seconds_behind_master"]
            state = (
                f"up    <- {row['source']:<5} IO {repl['io_running']:<10} SQL {repl['sql_running']:<3} "
                f"behind {'NULL' if lag is None else f'{lag}s'}  delay {repl['sql_delay']}s"
            )
            error = repl["last_io_error"] or repl["last_sql_error"]
            if error:
                state += f"  error: {error}"
        lines.append(f"{head} {state}")
    lines.append(f"EASEOFF_SHARD_URLS='{json.dumps(topo.shard_urls())}'")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr, exit 2, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _shard_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shards must be numbers like 1,2, not {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"shards must be numbers from 1, like 1,2, not {text!r}")
    return values


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds must be a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sandbox.py", description="Extra real mariadbd instances wired for replication.")
    dir_help = f"sandbox directory (default ${DIR_ENV} or {DEFAULT_DIR})"
    parser.add_argument("--dir", help=dir_help)
    # --dir is accepted after the command too (`status --dir X`).
    common = _Parser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help=dir_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="start shards (idempotent) and print the topology")
    up.add_argument("--shards", type=_shard_list, action="append", help="shard numbers, e.g. 1,2 (default 1)")
    up.add_argument("--shard", type=_shard_list, action="append", dest="shards", help="one shard (repeatable)")
    up.add_argument("--replicas", type=int, default=1, help="read replicas of A per shard (default 1)")
    up.add_argument("--shape", choices=sorted(SHAPES), default="pair", help="pair (A<->B + replicas) or primary")
    up.add_argument("--base-port", type=int, help=f"first port (default ${PORT_ENV} or {DEFAULT_BASE_PORT})")
    up.add_argument("--json", action="store_true", help="print the topology as JSON")

    sub.add_parser("down", parents=[common], help="stop every instance and remove the directory")
    status = sub.add_parser("status", parents=[common], help="each instance's port, role and replica state")
    status.add_argument("--json", action="store_true", help="topology plus live state as JSON")

    delay = sub.add_parser(
        "delay", parents=[common], help="set MASTER_DELAY: delay INSTANCE SECONDS, or delay SHARD REPLICA SECONDS"
    )
    delay.add_argument("target", nargs="+", metavar="ARG")
    for name, text in [
        ("stop-sql", "STOP SLAVE SQL_THREAD"),
        ("start-sql", "START SLAVE SQL_THREAD"),
        ("stop-io", "STOP SLAVE IO_THREAD"),
        ("start-io", "START SLAVE IO_THREAD"),
    ]:
        cmd = sub.add_parser(name, parents=[common], help=f"{text} on INSTANCE")
        cmd.add_argument("instance")
    kill = sub.add_parser("kill", parents=[common], help="make INSTANCE unreachable (SIGKILL, or --graceful shutdown)")
    kill.add_argument("instance")
    kill.add_argument("--graceful", action="store_true", help="clean shutdown instead of SIGKILL")
    start = sub.add_parser("start", parents=[common], help="start a stopped INSTANCE again")
    start.add_argument("instance")
    return parser


def _delay_target(parser: argparse.ArgumentParser, args: list[str]) -> tuple[str, int]:
    if len(args) == 2:
        name, seconds = args
    elif len(args) == 3:
        shard, replica, seconds = args
        if not (shard.isdigit() and replica.isdigit()):
            parser.error(f"delay SHARD REPLICA SECONDS takes numbers, not {shard!r} {replica!r}")
        name = instance_name(int(shard), int(replica))
    else:
        parser.error("delay takes INSTANCE SECONDS (e.g. s1r1 5) or SHARD REPLICA SECONDS (e.g. 1 1 5)")
    try:
        return name, _seconds(seconds)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            shards = sorted({s for group in (args.shards or [[1]]) for s in group})
            sandbox = Sandbox(args.dir, args.base_port)
            if args.base_port is None and (topo := sandbox.topology()) is not None:
                sandbox.base_port = topo.base_port  # up again without --base-port keeps the ports in use
            started = time.monotonic()
            topo = sandbox.up(shards=shards, replicas=args.replicas, shape=args.shape)
            if args.json:
                print(json.dumps(topo.to_dict(), indent=2))
            else:
                print(format_topology(topo))
                print(f"up in {time.monotonic() - started:.1f} s", file=sys.stderr)
            return 0
        sandbox = Sandbox(args.dir)
        if args.command == "down":
            removed = sandbox.down()
            print(f"stopped and removed {sandbox.base_dir}" if removed else f"no sandbox in {sandbox.base_dir}")
            return 0
        if args.command == "status":
            topo = sandbox.topology()
            if topo is None:
                print(f"sandbox.py: no sandbox in {sandbox.base_dir}", file=sys.stderr)
                return 1
            rows = sandbox.status()
            if args.json:
                data = topo.to_dict()
                for row in rows:
                    data["instances"][row["name"]].update(up=row["up"], replication=row["replication"])
                print(json.dumps(data, indent=2))
            else:
                print(format_status(topo, rows))
            return 0
        if args.command == "delay":
            name, seconds = _delay_target(parser, args.target)
            sandbox.delay(name, seconds)
            print(f"{name}: MASTER_DELAY={seconds}")
            return 0
        if args.command in ("stop-sql", "start-sql", "stop-io", "start-io"):
            getattr(sandbox, args.command.replace("-", "_"))(args.instance)
            print(f"{args.instance}: {args.command} done")
            return 0
        if args.command == "kill":
            sandbox.kill(args.instance, graceful=args.graceful)
            print(f"{args.instance}: stopped ({'clean shutdown' if args.graceful else 'SIGKILL'})")
            return 0
        if args.command == "start":
            sandbox.start(args.instance)
            print(f"{args.instance}: up on {HOST}:{sandbox.instance(args.instance).port}")
            return 0
    except UsageError as exc:
        print(f"sandbox.py: error: {exc}", file=sys.stderr)
        return 2
    except SandboxError as exc:
        print(f"sandbox.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a server error (pymysql) or OS error: one line, no traceback
        print(f"sandbox.py: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
