"""The decoded file (feedback/config/schema.py) made into the settings (feedback/config/model.py):
the environment's overrides, the defaults that follow other settings, and the few rules that
one value cannot state alone. Each rule names the key at fault, as msgspec's own errors do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from easeoff.feedback.config import schema
from easeoff.feedback.config.errors import ConfigError, env_name, key_of
from easeoff.feedback.config.model import BackoffConfig, Config, MySQLHost
from easeoff.feedback.config.rules import Rules
from easeoff.feedback.schedules import Schedule, ScheduleError, make_schedule
from easeoff.feedback.sentinel import is_sentinel_url, parse_sentinel_url
from easeoff.feedback.tls import HostTLS, client_context

REDIS_URL_ENV = "EASEOFF_REDIS_URL"
TASK_MODULES_ENV = "EASEOFF_TASK_MODULES"  # comma-separated; replaces [tasks] modules


def host_env_prefix(host_name: str) -> str:
    """`db-1` → `EASEOFF_MYSQL_DB_1`: where a host's URL and password overrides live."""
    return "EASEOFF_MYSQL_" + env_name(host_name)


class Builder:
    """One file's settings; `fail` phrases a rule's complaint with the file's name."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ

    def fail(self, key: str | list[str], problem: str) -> ConfigError:
        return ConfigError(self.source, key if isinstance(key, str) else key_of(key), problem)

    def config(self, file: schema.File) -> Config:
        probe = file.probe
        interval = float(probe.interval)
        stale_after = float(probe.stale_after) if probe.stale_after is not None else 5 * interval
        if stale_after < interval:
            raise self.fail("probe.stale_after", f"must be at least probe.interval ({interval:g}s)")
        dormant = float(probe.dormant_interval) if probe.dormant_interval is not None else max(5.0, interval)
        if dormant < interval:
            raise self.fail("probe.dormant_interval", "must be at least probe.interval (equal: probing never slows)")
        timeout = float(probe.timeout) if probe.timeout is not None else min(0.5, interval)
        rules = Rules(self.fail, self.environ)
        hosts = self.hosts(file.mysql.hosts, timeout)
        signals = rules.signals(file.signals)
        resources = rules.resources(file.resources, hosts, signals)
        return Config(
            source=self.source,
            redis_url=self.redis_url(file.redis),
            probe_interval=interval,
            probe_timeout=timeout,
            probe_concurrency=probe.concurrency,
            probe_dormant_after=float(probe.dormant_after),
            probe_dormant_interval=dormant,
            replica_acks=file.redis.replica_acks,
            replica_ack_timeout=float(file.redis.replica_ack_timeout),
            stale_after=stale_after,
            backoff=self.backoff(file.backoff),
            hosts=hosts,
            resources=resources,
            signals=signals,
            queues=rules.queues(file.queues, resources),
            task_modules=self.task_modules(file.tasks),
            switch_stale_after=float(file.switches.stale_after),
            schedules=self.schedules(file.schedules),
            levers=file.levers,
        )

    def redis_url(self, redis: schema.Redis) -> str:
        url = self.environ.get(REDIS_URL_ENV) or redis.url or "redis://127.0.0.1:6379/0"
        if is_sentinel_url(url):
            try:
                parse_sentinel_url(url)
            except ValueError as exc:
                raise self.fail("redis.url", str(exc)) from None
        elif urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise self.fail("redis.url", "must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
        return url

    def backoff(self, backoff: schema.Backoff) -> BackoffConfig:
        if backoff.cap < backoff.base:
            raise self.fail("backoff.cap", "must be >= backoff.base")
        return BackoffConfig(
            base=float(backoff.base),
            cap=float(backoff.cap),
            max_deferrals=backoff.max_deferrals or None,
            max_age=float(backoff.max_age) or None,
            unknown_resource_grace=float(backoff.unknown_resource_grace),
        )

    def task_modules(self, tasks: schema.Tasks) -> tuple[str, ...]:
        """`[tasks] modules`, unless the environment names others (a deploy's override)."""
        override = self.environ.get(TASK_MODULES_ENV)
        if override is not None:
            modules, key = tuple(m.strip() for m in override.split(",") if m.strip()), TASK_MODULES_ENV
        else:
            modules, key = tasks.modules, "tasks.modules"
        for module in modules:
            if not all(part.isidentifier() for part in module.split(".")):
                raise self.fail(key, f"{module!r} is not a module name (like myapp.tasks)")
        return modules

    def schedules(self, tables: Mapping[str, schema.ScheduleTable]) -> dict[str, Schedule]:
        found = {}
        for name, t in tables.items():
            every = float(t.every) if t.every is not None else None
            try:
                where = key_of(["schedules", name])
                found[name] = make_schedule(name, t.task, t.args, t.kwargs, t.cron, every, t.timezone, key=where)
            except ScheduleError as exc:
                raise self.fail(exc.key, exc.problem) from None
        return found

    def hosts(self, tables: Mapping[str, schema.Host], timeout: float) -> dict[str, MySQLHost]:
        hosts: dict[str, MySQLHost] = {}
        for name, table in tables.items():
            key = ["mysql", "hosts", name]
            prefix = host_env_prefix(name)
            url = self.environ.get(f"{prefix}_URL") or table.url
            if url is None:
                raise self.fail([*key, "url"], "missing (expected a mysql:// URL)")
            parts = urlsplit(url)
            if parts.scheme != "mysql" or not parts.hostname:
                raise self.fail([*key, "url"], "must look like mysql://USER[:PASSWORD]@HOST[:PORT]")
            try:
                port = parts.port or 3306
            except ValueError:
                raise self.fail([*key, "url"], "has a port that is not a number") from None
            hosts[name] = MySQLHost(
                name=name,
                host=parts.hostname,
                port=port,
                user=unquote(parts.username or "root"),
                password=self.environ.get(f"{prefix}_PASSWORD", unquote(parts.password or "")),
                connect_timeout=timeout,
                tls=self.host_tls(table, key),
            )
        return hosts

    def host_tls(self, table: schema.Host, key: list[str]) -> HostTLS | None:
        """Each TLS file must exist and load (checked now, so a typo is a one-line error at
        start, not a probe_error later); paths are relative to the config file's folder."""
        ca, cert, keyfile = (self.tls_file(p, [*key, n]) for n, p in table_tls_paths(table))
        if ca is None and cert is None:
            for name, given in (("ssl_key", table.ssl_key), ("ssl_verify_identity", table.ssl_verify_identity)):
                if given is not None:
                    raise self.fail([*key, name], "needs ssl_ca (or ssl_cert) in the same table")
            return None
        if keyfile is not None and cert is None:
            raise self.fail([*key, "ssl_key"], "needs ssl_cert (the client certificate it belongs to)")
        verify = table.ssl_verify_identity is not False
        tls = HostTLS(ca=ca, cert=cert, key=keyfile, verify_identity=verify)
        checks = [("ssl_ca", HostTLS(ca=ca))] if ca is not None else []  # the CA alone, then the chain
        checks += [("ssl_cert", tls)] if cert is not None else []
        for name, loaded in checks:
            try:
                client_context(loaded)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise self.fail([*key, name], f"cannot load: {getattr(exc, 'reason', None) or exc}") from None
        return tls

    def tls_file(self, given: str | None, key: list[str]) -> str | None:
        if given is None:
            return None
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = Path(self.source).resolve().parent / path
        if not path.is_file():
            raise self.fail(key, f"no such file {str(path)!r}")
        return str(path)


def table_tls_paths(table: schema.Host) -> tuple[tuple[str, str | None], ...]:
    return (("ssl_ca", table.ssl_ca), ("ssl_cert", table.ssl_cert), ("ssl_key", table.ssl_key))
