"""The servers and workers a chaos or nemesis run owns, and the faults it can put on them.

A redis-server with AOF (appendfsync always: a restart, even after SIGKILL, keeps every
acknowledged write), optionally a replica and three Sentinels (`RedisFleet`), and gated worker
processes kept at a count, some under libfaketime. Every `stop` first resumes what a fault left
SIGSTOPped, so a run ends with nothing of its own left behind, whichever way it ends.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
from bench.fleet import children
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sentinels import free_port, sentinel_binary

REPO = Path(__file__).resolve().parents[2]
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
SERVICE = "easeoff"

# libfaketime for a skewed worker (tests/test_fleet_clock.py): the monotonic clock stays true,
# and Python's time.sleep goes through a timed wait, which libfaketime 0.9.10 leaves alone.
LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
SKEWED_LAUNCH = (
    "import runpy, sys, threading, time\n"
    "_never = threading.Event()\n"
    "time.sleep = lambda seconds: _never.wait(max(seconds, 0.0))\n"
    "sys.argv[0] = 'easeoff'\n"
    "runpy.run_module('easeoff.workers.cli', run_name='__main__')\n"
)


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def close_quietly(conn: pymysql.connections.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def answers(port: int) -> bool:
    try:
        return bool(Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.5).ping())
    except (*REDIS_ERRORS, ResponseError):
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} after {timeout:g}s")
        time.sleep(0.05)


class RedisServer:
    """A redis-server of the run's own, with AOF on: a restart keeps every acknowledged write."""

    def __init__(self, workdir: Path, port: int | None = None, name: str = "redis") -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped by a fault

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, replica_of: int | None = None) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"]
        args += ["--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.stopped = False
        try:
            wait_until(lambda: answers(self.port), 20, f"redis-server {self.name} answering on {self.port}")
        except RuntimeError as exc:
            raise SystemExit(f"faults: {exc}") from None

    def pause(self) -> None:
        if self.running:
            signal_pid(self.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            self.stopped = True

    def resume(self) -> None:
        if self.running:
            signal_pid(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL, as a lost machine: appendfsync always has every acknowledged write on disk."""
        if self.proc is not None:
            kill9(self.proc.pid)
            self.proc.wait()
        self.stopped = False

    def stop(self) -> None:
        """SHUTDOWN: AOF is flushed (appendfsync always), so nothing acknowledged is lost."""
        if self.running:
            self.resume()
            with contextlib.suppress(*REDIS_ERRORS, ResponseError):
                Redis(port=self.port, socket_timeout=5).shutdown(nosave=True)
            try:
                self.proc.wait(timeout=20)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill()


class RedisFleet:
    """Two AOF redis-servers (a primary and its replica) and three Sentinels with production
    `down-after-milliseconds` (30 s, Sentinel's default): a failover takes the outage it takes in
    production. `primary()` asks the Sentinels which node is primary now."""

    def __init__(self, workdir: Path, base_port: int, sentinel_base: int, down_after_ms: int = 30000) -> None:
        self.nodes = [RedisServer(workdir, base_port + i, name=f"redis-{'ab'[i]}") for i in range(2)]
        self.sentinel_ports = [sentinel_base + i for i in range(3)]
        self.down_after_ms = down_after_ms
        self.workdir = workdir
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def ports_in_use(self) -> list[int]:
        return [p for p in [*(n.port for n in self.nodes), *self.sentinel_ports] if answers(p) or _listening(p)]

    def start(self) -> None:
        self.nodes[0].start()
        self.nodes[1].start(replica_of=self.nodes[0].port)
        wait_until(self._replica_in_sync, 30, "the replica in sync")
        for i, port in enumerate(self.sentinel_ports):
            folder = self.workdir / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'log.txt'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.nodes[0].port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 60000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n",
                encoding="utf-8",
            )
            args = [*sentinel_binary(), str(conf), "--sentinel"]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
            self.sentinels.append(proc)
            wait_until(lambda port=port: answers(port), 15, f"sentinel on {port}")  # type: ignore[misc]
        wait_until(lambda: all(self._sees_replica(p) for p in self.sentinel_ports), 30, "sentinels seeing the replica")

    def primary(self) -> RedisServer:
        """The node the Sentinels name primary now (the first that answers them)."""
        for port in self.sentinel_ports:
            try:
                _, master = Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
            except (*REDIS_ERRORS, ResponseError, TypeError):
                continue
            return next(n for n in self.nodes if n.port == int(master))
        raise RuntimeError("no sentinel answers")

    def other(self, node: RedisServer) -> RedisServer:
        return self.nodes[1] if node is self.nodes[0] else self.nodes[0]

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again: as primary if the Sentinels still name it, else as a replica
        of the one they do (an operator's rejoin; Sentinel would also demote it, after a while)."""
        primary = self.primary()
        node.start(replica_of=None if primary is node else primary.port)

    def wait_promoted(self, away_from: RedisServer, timeout: float) -> None:
        def promoted() -> bool:
            try:
                return self.primary() is not away_from and self.other(away_from).running
            except RuntimeError:
                return False

        wait_until(promoted, timeout, f"promoted away from {away_from.name}")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                kill9(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.sentinels.clear()
        for node in self.nodes:
            node.stop()

    def _replica_in_sync(self) -> bool:
        try:
            info = Redis(port=self.nodes[1].port, socket_timeout=1).info("replication")
        except REDIS_ERRORS:
            return False
        return info.get("master_link_status") == "up"

    def _sees_replica(self, port: int) -> bool:
        try:
            replicas = Redis(port=port, socket_timeout=1).sentinel_slaves(SERVICE)
        except (*REDIS_ERRORS, ResponseError):
            return False
        return any(int(r["port"]) == self.nodes[1].port for r in replicas)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Workers:
    """Gated worker processes, kept at `count`; a kill takes the worker and its work horse at once.
    A worker may run under libfaketime (`skew` seconds off), or be SIGSTOPped (its horse runs on)."""

    def __init__(self, config: Path, count: int, workdir: Path, env: dict[str, str], queue: str = "heavy") -> None:
        self.config, self.count, self.workdir, self.env, self.queue = config, count, workdir, env, queue
        self.procs: list[subprocess.Popen[bytes]] = []
        self.skewed: list[subprocess.Popen[bytes]] = []  # on top of `count`, until retired
        self.started = 0
        self.kills = 0
        self.killed: set[int] = set()
        self.crashed = 0  # workers that exited by themselves (Redis or MariaDB away must not end one)
        self.paused: set[int] = set()
        self.logs: dict[int, Path] = {}  # pid → its log
        self.crash_logs: list[Path] = []  # the logs of workers that exited by themselves

    def start_one(self, skew: float | None = None) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"worker-{self.started}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child's
        cli = ["--config", str(self.config), "worker", self.queue]
        env = dict(self.env)
        if skew is None:
            args = [sys.executable, "-m", "easeoff.workers.cli", *cli]
        else:
            if not LIBFAKETIME:
                raise SystemExit("faults: Debian's faketime is missing (apt-get install faketime)")
            env.update(LD_PRELOAD=str(LIBFAKETIME[0]), FAKETIME=f"{skew:+.0f}", FAKETIME_DONT_FAKE_MONOTONIC="1")
            args = [sys.executable, "-c", SKEWED_LAUNCH, *cli]
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.logs[proc.pid] = log_path
        self.started += 1
        (self.skewed if skew is not None else self.procs).append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs + self.skewed if p.poll() is None]

    def keep_up(self) -> None:
        gone = [p for p in self.procs if p.poll() is not None and p.pid not in self.killed]
        self.crashed += len(gone)
        self.crash_logs += [self.logs[p.pid] for p in gone]
        self.procs = [p for p in self.procs if p.poll() is None]
        while len(self.procs) < self.count:
            self.start_one()

    def kill_one(self, rng: random.Random) -> int | None:
        """SIGKILL a worker and its work horse together, as a lost machine would."""
        live = self.live()
        if not live:
            return None
        victim = rng.choice(live)
        for pid in children(victim.pid):  # the work horse, in a process group of its own
            kill9(pid)
        self.killed.add(victim.pid)
        kill9(victim.pid)
        victim.wait(timeout=10)
        self.paused.discard(victim.pid)
        self.kills += 1
        return victim.pid

    def kill_horse(self, rng: random.Random) -> int | None:
        """SIGKILL one running work horse alone: its worker lives on and sees it die."""
        horses = [h for p in self.live() if p.pid not in self.paused for h in children(p.pid)]
        if not horses:
            return None
        horse = rng.choice(horses)
        kill9(horse)
        return horse

    def pause_one(self, rng: random.Random) -> int | None:
        """SIGSTOP a worker's parent only: its work horse, if any, runs on unwatched."""
        live = [p for p in self.live() if p.pid not in self.paused]
        if not live:
            return None
        victim = rng.choice(live)
        signal_pid(victim.pid, signal.SIGSTOP)
        self.paused.add(victim.pid)
        return victim.pid

    def resume(self, pid: int) -> None:
        signal_pid(pid, signal.SIGCONT)
        self.paused.discard(pid)

    def retire(self, proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
        """Warm shutdown of one worker (SIGTERM: it finishes its job), SIGKILL after `grace`."""
        self._end([proc], grace)
        if proc in self.skewed:
            self.skewed.remove(proc)

    def stop(self) -> None:
        self._end(self.procs + self.skewed, 20.0)

    def _end(self, procs: list[subprocess.Popen[bytes]], grace: float) -> None:
        for proc in procs:
            if proc.poll() is None:
                for pid in [proc.pid, *children(proc.pid)]:
                    signal_pid(pid, signal.SIGCONT)  # a stopped worker cannot act on SIGTERM
                self.paused.discard(proc.pid)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                for pid in children(proc.pid):
                    kill9(pid)
                proc.kill()
                proc.wait()
