#!/usr/bin/env python3
"""A Redis primary, a replica and three Sentinels on loopback, for tests and benchmarks.

Real Debian `redis-server` and `redis-sentinel` processes, each in a directory of its own
under a scratch directory, on free ports. `kill_primary()` SIGKILLs the primary; the
sentinels (quorum 2, `down-after-milliseconds` DOWN_AFTER_MS) promote the replica.

    with RedisSentinels(tmp) as rs:
        url = rs.url(db=0)             # redis+sentinel://127.0.0.1:p1,...,127.0.0.1:p3/easeoff/0
        rs.kill_primary(); rs.wait_promoted(timeout=30)

Needs only the standard library and redis-py.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from redis import Redis

SERVICE = "easeoff"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A port from bind(0) is an
    ephemeral one: until the server binds it, any outgoing connection may take it as its local
    port, and the server then dies on "Address already in use" (seen in a full test run)."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(first_ephemeral, 20001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 20000 and {first_ephemeral}")


def sentinel_binary() -> list[str]:
    """Debian's redis-sentinel, else redis-server in sentinel mode (the same program)."""
    found = shutil.which("redis-sentinel")
    if found:
        return [found]
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("neither redis-sentinel nor redis-server is installed")
    return [server]


class RedisSentinels:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    def __enter__(self) -> RedisSentinels:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.down()

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def up(self, timeout: float = 30.0) -> None:
        self._server("primary", self.primary_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        self._wait(
            lambda: Redis(port=self.replica_port).info("replication").get("master_link_status") == "up",
            timeout,
            what="replica in sync",
            logs=("primary", "replica"),
        )
        for i, port in enumerate(self.sentinel_ports):
            folder = self.base_dir / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n",
                encoding="utf-8",
            )
            self._start(f"sentinel{i}", [*sentinel_binary(), str(conf), "--sentinel"], folder)
        self._wait(
            lambda: all(self._sentinel_sees_replica(p) for p in self.sentinel_ports),
            timeout,
            what="seeing the replica from every sentinel",
            logs=("sentinel0",),
        )

    def primary(self) -> tuple[str, int]:
        host, port = Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return str(host), int(port)

    def kill_primary(self) -> float:
        """SIGKILL the current primary; returns when (time.time())."""
        _, port = self.primary()
        name = "primary" if port == self.primary_port else "replica"
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        return time.time()

    def rejoin_killed(self, timeout: float = 60.0) -> None:
        """Restart the server kill_primary() killed, as a replica of the promoted one, as an
        operator would; returns once the new primary has a replica in sync again."""
        name = next(n for n, proc in self.procs.items() if n in ("primary", "replica") and proc.poll() is not None)
        _, primary_port = self.primary()
        port = self.primary_port if name == "primary" else self.replica_port
        self._server(name, port, "--replicaof", "127.0.0.1", str(primary_port))
        self._wait(
            lambda: Redis(port=port).info("replication").get("master_link_status") == "up",
            timeout,
            what=f"{name} in sync with the promoted primary on port {primary_port}",
            logs=(name, "replica" if name == "primary" else "primary"),
        )

    def wait_promoted(self, away_from: int, timeout: float = 30.0) -> None:
        """Until every sentinel names a primary other than port `away_from`, and it accepts writes."""

        def promoted() -> bool:
            for port in self.sentinel_ports:
                _, master = Redis(port=port).sentinel_get_master_addr_by_name(SERVICE)
                if int(master) == away_from:
                    return False
            return Redis(port=self.primary()[1]).info("replication")["role"] == "master"

        self._wait(promoted, timeout, what=f"promoted away from port {away_from}", logs=("sentinel0", "sentinel1"))

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()

    def _server(self, name: str, port: int, *extra: str) -> None:
        folder = self.base_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""]
        # A full sync starts at once rather than after Redis's default 5 s wait for more replicas.
        self._start(name, [*args, "--appendonly", "no", "--repl-diskless-sync-delay", "0", *extra], folder)

    def _start(self, name: str, args: list[str], folder: Path) -> None:
        log = open(folder / "log.txt", "wb")  # noqa: SIM115 - the process holds it
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        port = int(args[args.index("--port") + 1]) if "--port" in args else None
        if port is not None:
            self._wait(lambda: _answers(port), 15, what=f"answering on port {port}", logs=(folder.name,))

    def _sentinel_sees_replica(self, port: int) -> bool:
        if not _answers(port):
            return False
        replicas = Redis(port=port).sentinel_slaves(SERVICE)
        return any(int(r["port"]) == self.replica_port for r in replicas)

    def _wait(  # type: ignore[no-untyped-def]
        self, predicate, timeout: float, what: str = "ready", logs: tuple[str, ...] = ()
    ) -> None:
        """Poll `predicate` until `timeout`; a failure carries the tails of the `logs` named,
        since the scratch directory is gone by the time anyone reads a CI report."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                if predicate():
                    return
            except Exception as exc:
                last_error = f"; last error: {exc!r}"
            if time.monotonic() > deadline:
                tails = "".join(self._log_tail(name) for name in logs)
                raise RuntimeError(f"redis sentinels: not {what} after {timeout}s{last_error}{tails}")
            time.sleep(0.05)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        log = self.base_dir / name / "log.txt"
        if not log.exists():
            return f"\n--- {name}: no log"
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return f"\n--- {name} ({log}):\n" + "\n".join(tail)


def _answers(port: int) -> bool:
    try:
        return bool(Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5).ping())
    except Exception:
        return False
