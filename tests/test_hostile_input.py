"""Hostile input, fuzzed with hypothesis: config files, command lines and job payloads never
end in a traceback; each gets a clear one-line error (exit 2 from the CLI) and no job is lost."""

from __future__ import annotations

import contextlib
import io
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.config import ConfigError, packaged_example_path, parse_config
from easeoff.workers.cli import main
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, run_cli
from tests.placement import misplaced

EXAMPLE = packaged_example_path().read_text(encoding="utf-8")
SETTING = re.compile(r"^(\s*[\w.\"-]+\s*=\s*)(.+?)(\s*#.*)?$")
ODD_VALUES = ('"x"', "-1", "0", "1e308", "-1e308", "nan", "inf", "-inf", "[]", "{}", '[1, "a"]', "true", '""')
ODD_STRINGS = ('"mysql://"', '"redis://:@/"', '"mysql://u:p@h:99999"', '"\\u0000"', "2024-01-01", '"../../etc"')
HOSTILE_VALUES = st.one_of(
    st.sampled_from([*ODD_VALUES, *ODD_STRINGS]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).lower()),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)


def mutated_config(data: st.DataObject) -> str:
    """The example config with some of its settings' values replaced, or lines dropped."""
    lines = EXAMPLE.splitlines()
    settable = [i for i, line in enumerate(lines) if SETTING.match(line) and not line.lstrip().startswith("#")]
    for i in data.draw(st.lists(st.sampled_from(settable), min_size=1, max_size=4, unique=True)):
        if data.draw(st.booleans()):
            match = SETTING.match(lines[i])
            assert match is not None
            lines[i] = match.group(1) + data.draw(HOSTILE_VALUES)
        else:
            lines[i] = data.draw(st.sampled_from(["", "[", "x", "[queues.heavy]", "= 1"]))
    return "\n".join(lines)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_configs_parse_or_name_the_problem(data: st.DataObject) -> None:
    text = mutated_config(data)
    try:
        config = parse_config(text, "fuzzed.toml", {})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzzed.toml"), message
        assert "\n" not in message.strip(), message
        return
    for signal in config.signals.values():  # what parses is usable: thresholds are real, ordered numbers
        assert signal.low <= signal.high, signal
        assert signal.high == signal.high and signal.low == signal.low, signal  # no NaN
    assert config.probe_interval > 0


def run_main(argv: list[str]) -> tuple[int, str]:
    """`easeoff ARGV` in this process: its exit code and what it printed on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


ARG_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
COMMANDS = st.one_of(
    st.tuples(st.just("enqueue"), ARG_TEXT, st.just("--args"), ARG_TEXT),
    st.tuples(st.just("enqueue"), st.just("record_run"), st.just("--args"), ARG_TEXT),
    st.tuples(st.just("pause"), ARG_TEXT, st.just("--reason"), ARG_TEXT, st.just("--ttl"), ARG_TEXT),
    st.tuples(st.just("throttle"), st.sampled_from(["record_run", "nope"]), ARG_TEXT, st.just("--reason"), ARG_TEXT),
    st.tuples(st.just("threshold"), ARG_TEXT, st.just("--high"), ARG_TEXT, st.just("--low"), ARG_TEXT),
    st.tuples(st.just("host"), st.sampled_from(["out", "in"]), ARG_TEXT, st.just("--reason"), ARG_TEXT),
    st.tuples(st.sampled_from(["worker", "status", "log", "annotate", "resume"]), ARG_TEXT, ARG_TEXT),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=COMMANDS)
def test_fuzzed_command_lines_never_trace_back(argv: tuple[str, ...], write_config, redis_conn: Redis) -> None:
    if argv[0] == "worker":
        argv = (*argv, "--burst")  # a worker that does start must stop on its own
    code, err = run_main(["--config", str(write_config()), *argv])
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(("easeoff: error:", "Error:")), err
    redis_conn.flushdb()


def test_hostile_job_payloads_fail_with_a_reason_and_the_worker_goes_on(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    queue = Queue("heavy", connection=redis_conn, serializer=JSONSerializer)
    good = queue.enqueue("easeoff.tasks.catalog.noop", 1)
    hostile = []
    for data in (
        pickle.dumps(("easeoff.tasks.catalog.noop", None, (1,), {})),  # a pickled job: refused, never unpickled
        b"\x00\xff garbage",
        b'["easeoff.tasks.catalog.noop"',  # truncated JSON
        b'{"not": "a job"}',
    ):
        job = queue.enqueue("easeoff.tasks.catalog.noop", 1)
        redis_conn.hset(job.key, "data", data)
        hostile.append(job)
    meta = queue.enqueue("easeoff.tasks.catalog.noop", 1)
    redis_conn.hset(meta.key, "meta", b"\x80\x04 not json meta")
    unknown = queue.enqueue("easeoff.tasks.catalog.no_such_function", 1)
    hostile += [meta, unknown]
    after = queue.enqueue("easeoff.tasks.catalog.noop", 2)
    proc = workers.start(write_config(), "heavy", burst=True)
    assert proc.wait(timeout=60) == 0, workers.logs()
    failed = set(FailedJobRegistry("heavy", connection=redis_conn).get_job_ids())
    where = {j.id: redis_conn.hget(j.key, "status") for j in hostile if j.id not in failed}
    assert not where, (where, workers.logs()[-3000:])
    assert {good.id, after.id} <= set(FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids())
    assert misplaced(redis_conn, ["heavy"], [j.id for j in [good, after, *hostile]]) == {}
    pickled = Job.fetch(hostile[0].id, connection=redis_conn, serializer=JSONSerializer)
    assert "JSON" in (redis_conn.hget(pickled.key, "exc_info") or b"").decode(errors="replace")


@pytest.fixture
def secret_config(tmp_path: Path) -> Path:
    path = tmp_path / "secret.toml"
    path.write_text(
        f"""[redis]
url = "{TEST_REDIS_URL}"
[probe]
interval = 0.5
[mysql.hosts.db1]
url = "mysql://root:Sup3rSecretPw@127.0.0.1:1"
[resources."shard:1"]
hosts = ["db1"]
[signals.connections]
high = 0.9
low = 0.8
[queues.heavy]
""",
        encoding="utf-8",
    )
    return path


def test_a_password_never_shows_in_status_probe_errors_or_logs(
    redis_conn: Redis, secret_config: Path, tmp_path: Path, workers: WorkerProcesses
) -> None:
    outputs = []
    for args in (["status"], ["status", "--json"], ["probe"], ["probe", "--json"], ["config", "check"]):
        result = run_cli("--config", str(secret_config), *args)
        outputs.append(result.stdout + result.stderr)
    env_secret = run_cli("--config", str(secret_config), "status", env={"EASEOFF_MYSQL_DB1_PASSWORD": "EnvPw123"})
    outputs.append(env_secret.stdout + env_secret.stderr)
    bad_redis = run_cli(
        "--config", str(secret_config), "status", env={"EASEOFF_REDIS_URL": "redis://u:RedisPw999@127.0.0.1:1/0"}
    )
    assert bad_redis.returncode == 1  # Redis unreachable: rq's exit code
    outputs.append(bad_redis.stdout + bad_redis.stderr)
    proc = workers.start(secret_config, "heavy", burst=True)
    proc.wait(timeout=30)
    outputs.append(workers.logs())
    text = "\n".join(outputs)
    assert "probe_error:db1" in text  # the probes did run, and failed, and said so
    for secret in ("Sup3rSecretPw", "EnvPw123", "RedisPw999"):
        assert secret not in text
