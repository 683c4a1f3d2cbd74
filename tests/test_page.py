"""The exporter's page, rendered by a real headless Chromium from a real exporter on real Redis.

The live console is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
NUL-separated JSON on file descriptors 3 and 4), which needs nothing beyond the standard
library — no websocket client, no port — and lets a test wait on the live DOM.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec.structs
import pytest
from prometheus_client import CollectorRegistry
from redis import Redis
from rq.registry import FailedJobRegistry

from easeoff.feedback.config import load_config
from easeoff.feedback.levers import events
from easeoff.feedback.levers.switches import Switch, set_switch
from easeoff.feedback.observe.failed_jobs import FailedJob, FailedJobs
from easeoff.feedback.observe.history import Sample, read_history
from easeoff.feedback.observe.page import View, render, render_state, sections
from easeoff.feedback.observe.page_state import MAX_MARKERS, PageState, ShadowVerdict, SwitchView
from easeoff.feedback.observe.web import ExporterServer, Site
from easeoff.feedback.reasons import Kind, Reason
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.tally import shadow_tally
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.tasks.catalog import noop, recount_users
from tests.conftest import REPO, TEST_REDIS_URL, ConnectionHolder, wait_until
from tests.exporter_support import exporter_process

MARKS = """
[queues.heavy.watermarks.depth]
high = 3
low = 1
for = 0
"""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> list[Node]:
        return [self, *(n for child in self.children for n in child.walk())]

    def find(self, tag: str, cls: str | None = None, id: str | None = None) -> list[Node]:
        return [
            n
            for n in self.walk()
            if n.tag == tag and (cls is None or cls in n.classes()) and (id is None or n.attrs.get("id") == id)
        ]

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class TreeBuilder(HTMLParser):
    """Chromium's serialized DOM → a small tree (stdlib only)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].text += data


def parse_dom(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    return builder.root


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: run `apt-get install -y --no-install-recommends chromium` "
            "(scripts/test.sh installs it)"
        )
    return found


def headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


class Browser:
    """Headless Chromium over the DevTools protocol on a pipe: open a page, evaluate in it, wait on it."""

    def __init__(self, tmp_path: Path) -> None:
        args = [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,1800",
            f"--user-data-dir={tmp_path / 'chromium-live'}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.log = tmp_path / "chromium-live.log"
        with open(self.log, "wb") as err:
            # The protocol is on fds 3 (commands in) and 4 (replies out): our stdin and stdout pipes.
            self.proc = subprocess.Popen(
                ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.console: list[str] = []  # exceptions, console errors and CSP refusals seen in the page
        self.last_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buffer = b""
        while chunk := self.proc.stdout.read1(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                self._note(message)
                if "id" in message:
                    self.replies.put(message)
        self.replies.put(None)

    def _note(self, message: dict[str, Any]) -> None:
        """Keep what says the page went wrong: a thrown exception, a console error, a refused resource."""
        params = message.get("params", {})
        if message.get("method") == "Runtime.exceptionThrown":
            self.console.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif message.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console.append(params["entry"].get("text", "")[:500])
        elif message.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console.append(json.dumps(params.get("args", []))[:500])

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = False) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            reply = self.replies.get(timeout=30)
            if reply is None:
                raise AssertionError(f"chromium went away: {self.log.read_text(errors='replace')[-2000:]}")
            if reply["id"] == self.last_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        wait_until(lambda: self.evaluate("document.readyState") == "complete", timeout=20, what=f"{url} to load")

    def screenshot(self, path: Path) -> Path:
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        if self.proc.poll() is None:
            with suppress(AssertionError, OSError, queue.Empty):
                self.send("Browser.close")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # chromium and its helpers: the session it leads
                self.proc.wait(timeout=5)


@contextmanager
def browser(tmp_path: Path) -> Iterator[Browser]:
    driven = Browser(tmp_path)
    try:
        yield driven
    finally:
        driven.close()


@pytest.fixture
def busy_queue(redis_conn: Redis) -> Redis:
    """Five ready jobs on `heavy` (above its high mark of 3) and two events, one with markup in it."""
    for _ in range(5):
        noop.enqueue(shard=1, connection=redis_conn)
    events.record(redis_conn, "annotation", "deploy v2.3 <b>canary</b>", who="alice", why="release train")
    events.record(redis_conn, "host", "db1 out of production", who="bob", why="disk swap")
    return redis_conn


@pytest.mark.slow
def test_the_page_in_headless_chromium(
    busy_queue: Redis, write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(extra=MARKS)
    with exporter_process(path, tmp_path, "--sample-every", "0.5", "--evaluate-every", "0.25") as exporter:
        wait_until(lambda: len(read_history(busy_queue, 0)) >= 2, timeout=15, what="two history samples")
        url = f"{exporter.url}/?hours=1"

        dumped = headless(tmp_path, "--dump-dom", url)
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = parse_dom(dumped.stdout)

        (depth,) = dom.find("svg", id="depth-heavy")
        series = depth.find("path", cls="series")
        ready = [p for p in series if "ready" in p.classes()]
        assert ready and ready[0].attrs["d"].startswith("M") and " L" in ready[0].attrs["d"], ready
        (high,) = depth.find("line", cls="watermark-high")
        (low,) = depth.find("line", cls="watermark-low")
        assert float(high.attrs["y1"]) < float(low.attrs["y1"])  # SVG y grows downwards: high is drawn above low
        markers = [line.all_text() for line in depth.find("line", cls="event")]
        assert any("deploy v2.3 <b>canary</b>" in text and "alice" in text for text in markers), markers
        assert not dom.find("b"), "event text must be escaped, not rendered as markup"

        assert dom.find("section", id="deferrals") and dom.find("section", id="signals")
        items = [li.all_text() for li in dom.find("ul", id="events")[0].find("li")]
        assert any("db1 out of production" in t and "bob" in t and "disk swap" in t and "host" in t for t in items)

        screenshot = tmp_path / "page.png"
        shot = headless(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1600", url)
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert screenshot.stat().st_size > 20_000, screenshot.stat().st_size  # a blank page is a few kB
        with capsys.disabled():
            print(f"\nscreenshot (chromium --screenshot) of the first paint: {screenshot}")


def test_metrics_and_the_json_endpoints_share_the_server(busy_queue: Redis, write_config, tmp_path: Path) -> None:
    path = write_config(extra=MARKS)
    with exporter_process(path, tmp_path, "--sample-every", "0.5", "--evaluate-every", "0.25") as exporter:
        wait_until(lambda: len(read_history(busy_queue, 0)) >= 2, timeout=15, what="two history samples")
        status, content_type, body = get(f"{exporter.url}/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert b'easeoff_queue_ready_jobs{queue="heavy"} 5.0' in body

        status, content_type, body = get(f"{exporter.url}/api/history?hours=1")
        history = json.loads(body)
        assert status == 200 and content_type == "application/json"
        assert len(history) >= 2 and history[0]["t"] < history[-1]["t"]
        assert history[-1]["queues"]["heavy"]["ready"] == 5

        now_ms = int(time.time() * 1000)
        status, _, body = get(f"{exporter.url}/api/events?from={now_ms - 60_000}&to={now_ms + 1000}")
        annotations = [a for a in json.loads(body) if a["tags"] != ["watermark"]]  # the queue's alarm fires too
        assert status == 200
        assert [a["tags"] for a in annotations] == [["annotation"], ["host"]]
        first = annotations[0]
        assert first["title"] == "deploy v2.3 <b>canary</b>" and first["time"] == first["timeEnd"]
        assert "by alice" in first["text"] and "release train" in first["text"]
        assert abs(first["time"] - now_ms) < 60_000

        assert get(f"{exporter.url}/api/events?from={now_ms + 10_000}")[0] == 200
        assert get(f"{exporter.url}/nothing-here")[0] == 404
        status, _, body = get(f"{exporter.url}/?hours=lots")
        assert status == 400 and b"hours must be a number" in body
        assert get(f"{exporter.url}/?refresh=0")[0] == 400

        status, content_type, body = get(f"{exporter.url}/api/state?hours=1")
        state = json.loads(body)
        assert status == 200 and content_type == "application/json"
        assert state["state"]["queues"]["heavy"]["ready"] == 5 and state["state"]["shadow_verdicts"] == []
        assert state["state"]["failed"] == {
            "total": 0,
            "by_queue": {"heavy": 0, "archive": 0, "recount": 0},
            "newest": [],
        }
        ids = [section_id for section_id, _ in state["sections"]]
        assert ids[:2] == ["top", "held"] and {"queues", "markers", "failed-jobs", "recent-events"} <= set(ids)
        assert "root@" not in body.decode() and "mysql://" not in body.decode()

        zipped = urllib.request.Request(f"{exporter.url}/api/state?hours=1", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(zipped, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert json.loads(gzip.decompress(response.read()))["state"]["queues"]["heavy"]["ready"] == 5
        with urllib.request.urlopen(f"{exporter.url}/?hours=1", timeout=10) as response:
            policy = response.headers["Content-Security-Policy"]
            plain = response.read().decode()  # as curl sees it: complete without running the script
        assert all(f'id="{s}"' in plain for s in ("held", "queues", "markers", "failed-jobs", "shadow-verdicts"))
        assert "Shadow verdicts: none" in plain and '<noscript><meta http-equiv="refresh"' in plain
        assert "script-src 'sha256-" in policy and "form-action 'none'" in policy and "connect-src 'self'" in policy
        refused = urllib.request.Request(f"{exporter.url}/api/state", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(refused, timeout=10)
        assert posted.value.code == 501  # read-only: no route takes a POST
    assert "Traceback" not in exporter.output()


@pytest.mark.unit
def test_an_empty_history_renders_a_note_and_text_is_escaped(write_config) -> None:
    config = load_config(write_config(extra=MARKS))
    note = events.Event(id="1-0", at=time.time(), kind="annotation", text="<script>alert(1)</script>", who="<i>x</i>")
    html = render(config, [], [], [note], time.time(), 3)
    assert "no samples yet" in html
    assert 'id="depth-' not in html
    assert html.count("<script") == 1  # the page's own, and nothing from the data
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<i>x</i>" not in html

    samples = [
        Sample(t=time.time() - 20, queues={"heavy": {"ready": 1}}, signals={"connections": {"db1": 0.2}}),
        Sample(t=time.time() - 10, queues={"heavy": {"ready": 4}}, signals={"connections": {"db1": 0.3}}),
    ]
    html = render(config, samples, [], [], time.time(), 1)
    assert 'id="depth-heavy"' in html and 'id="signal-connections-db1"' in html
    assert 'class="threshold-high"' in html  # connections' high (0.95) drawn on db1's chart
    assert "no deferrals counted" in html
    assert "mysql://" not in html and "root@" not in html


@pytest.mark.unit
def test_resources_jobs_name_that_the_config_lacks_are_shown_held(write_config) -> None:
    config = load_config(write_config())
    now = time.time()
    assert 'id="unknown-resources"' not in render(config, [], [], [], now, 1)
    html = render(config, [], [], [], now, 1, [UnknownResource("shard:<9>", "recount", now - 4)])
    assert 'id="unknown-resources"' in html
    assert "unknown_resource:shard:&lt;9&gt; (not in the config; job of recount seen 4s ago" in html


RQ = str(Path(sys.executable).parent / "rq")
PAUSED_FOR = 3 * 3600 + 12 * 60 + 5  # the switch's age: shown as "3h 12m"


def fail_one_job(redis_conn: Redis) -> str:
    """A real failure with easeoff's reason: a plain rq worker refuses to run an easeoff job ungated."""
    job = recount_users.enqueue(shard=1, first_user=1, last_user=2, connection=redis_conn)
    plain = subprocess.run(
        [RQ, "worker", "-u", TEST_REDIS_URL, "-S", "json", "--burst", "recount"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert FailedJobRegistry("recount", connection=redis_conn).get_job_ids() == [job.id]
    return job.id


def texts_of(page: Browser, selector: str) -> list[str]:
    return list(page.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"))


@pytest.mark.slow
def test_the_page_updates_itself_without_a_reload(
    redis_conn: Redis, write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Load the page, then enqueue: the depth chart, the counts, the alarm's marker and the held
    queue change in the live DOM of the same document, from the page's own polls."""
    path = write_config(extra=MARKS)
    set_switch(
        redis_conn,
        Switch("pause", "queue:archive", by="alice", why="migration <b>412</b>", at=time.time() - PAUSED_FOR),
    )
    set_switch(
        redis_conn, Switch("throttle", "task:record_run", by="carol", why="hot shard", at=time.time(), ratio=0.5)
    )
    events.record(redis_conn, "annotation", "deploy v2.4", who="bob", why="release train")
    failed_id = fail_one_job(redis_conn)
    with (
        exporter_process(path, tmp_path, "--sample-every", "0.5", "--evaluate-every", "0.25") as exporter,
        browser(tmp_path) as page,
    ):
        wait_until(lambda: read_history(redis_conn, 0), timeout=15, what="a history sample")
        page.open(f"{exporter.url}/?hours=1&refresh=1")
        ready = "document.querySelector('#depth-heavy path.series.ready').getAttribute('data-last')"
        assert page.evaluate(ready) == "0"
        wait_until(lambda: int(page.evaluate("document.body.dataset.polls")) >= 1, timeout=20, what="a first poll")
        page.evaluate("window.sameDocument = 'yes'")  # a reload would lose it
        alarm = "#depth-heavy g.marker[data-kind=watermark] > line.event > title"
        assert not [t for t in texts_of(page, alarm) if "DepthHigh" in t and "firing" in t]

        for _ in range(5):
            noop.enqueue(shard=1, connection=redis_conn)
        wait_until(lambda: page.evaluate(ready) == "5", timeout=20, what="the depth chart to show 5 ready")
        assert page.evaluate("window.sameDocument") == "yes", "the page was reloaded, not updated"
        counts = "document.querySelector('[data-queue=heavy] p.now').dataset.ready"
        assert page.evaluate(counts) == "5"

        # The high alarm fires (5 > 3, for 0) after the page loaded: its marker arrives live, labelled.
        def high_alarm() -> list[str]:
            return [t for t in texts_of(page, alarm) if "EaseoffQueueDepthHigh queue=heavy" in t and "firing" in t]

        wait_until(high_alarm, timeout=20, what="the high water-mark alarm's marker")
        labels = texts_of(page, "#depth-heavy g.marker > g.label > title")
        assert any("annotation: deploy v2.4" in t and "bob" in t and "release train" in t for t in labels), labels
        assert any("switch: on: pause queue:archive" in t and "alice" in t for t in labels), labels
        kinds = set(page.evaluate("[...document.querySelectorAll('#depth-heavy g.marker')].map(g => g.dataset.kind)"))
        assert {"annotation", "switch", "watermark"} <= kinds, kinds
        key = " ".join(texts_of(page, "#marker-key span"))
        assert all(name in key for name in ("annotation", "switch", "water-mark alarm", "verdict flip", "host")), key
        legend = texts_of(page, "#marker-list li")
        assert any("deploy v2.4" in t for t in legend) and any("pause queue:archive" in t for t in legend), legend

        held = " ".join(texts_of(page, "#held-queues tr"))
        assert "archive" in held and "paused:queue:archive (alice: migration <b>412</b>)" in held, held
        tasks = texts_of(page, "#held-tasks tr")
        assert any("record_run" in t and "throttled:task:record_run ratio 0.5 (carol: hot shard)" in t for t in tasks)
        switches = texts_of(page, "#switches tr")
        assert any("pause queue:archive" in row and "3h 12m" in row for row in switches), switches
        assert texts_of(page, "#held-resources tr"), "the gate holds both shards: no worker has probed"
        (failed,) = texts_of(page, f"#failed-table tr[data-job='{failed_id}']")
        assert "recount" in failed and "recount_users" in failed and "refused to run ungated" in failed, failed
        assert texts_of(page, "#shadow-verdicts p") == ["Shadow verdicts: none"]
        assert page.evaluate("document.querySelectorAll('b, script:not(:last-of-type)').length") == 0

        shot = page.screenshot(tmp_path / "live-console.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        with capsys.disabled():
            print(f"\nscreenshot of the live console: {shot}")
        assert page.console == [], page.console  # no exception, no CSP refusal

        exporter.stop()  # the page keeps its last picture and says it is stale
        live = "document.getElementById('live')"
        wait_until(lambda: "stale" in page.evaluate(f"{live}.className"), timeout=20, what="the page to say so")
        assert "not updated since" in page.evaluate(f"{live}.textContent")
        assert page.evaluate(ready) == "5"
    assert "Traceback" not in exporter.output()


@pytest.mark.unit
def test_the_held_failed_and_shadow_sections_from_plain_data(write_config) -> None:
    config = load_config(write_config(extra=MARKS))
    now = time.time()
    switch = Switch("pause", "task:<recount>", by="<i>carol</i>", why="mysql://root:hunter2@db1 down", at=now - 7500)
    failed = FailedJobs(
        (FailedJob("j<1>", "heavy", "noop", now - 5, "boom: mysql://app:s3cret@db1:3306/x <img src=x>"),),
        (("heavy", 12), ("archive", 0)),
    )
    state = PageState(
        config,
        now,
        1,
        held_queues={"heavy": ["paused:queue:heavy (bob: <script>x</script>)"]},
        held_resources={"shard:1": ["no_reading:db1"]},
        held_tasks={"<recount>": ["paused:task:<recount> (<i>carol</i>: down)"]},
        switches=[SwitchView.of(switch, now)],
        failed=failed,
    )
    html = render_state(state)
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<i>carol</i>" not in html and "<img" not in html
    assert "s3cret" not in html and "mysql://app:***@db1:3306/x" in html
    assert "hunter2" not in html and "mysql://root:***@db1 down" in html
    assert "2h 5m" in html and "12 failed (heavy 12)" in html
    assert "Shadow verdicts: none" in html
    dom = parse_dom(html)
    tables = ["held-queues", "held-resources", "held-tasks", "switches"]
    assert [n.attrs["id"] for n in dom.find("table")][:4] == tables

    shadow = ShadowVerdict("shadow-threshold connections high 0.5 low 0.4", "shard:1", "defer", ("connections:db1",))
    with_shadow = render_state(PageState(config, now, 1, shadow_verdicts=[shadow]))
    assert "Shadow verdicts: none" not in with_shadow and "connections:db1" in with_shadow

    # The JSON trees the script rebuilds are the same sections, with their ids, text still raw text.
    trees = {s.id: s.as_json() for s in sections(state, View())}
    assert {"top", "held", "shadow-verdicts", "queues", "markers", "failed-jobs", "recent-events"} <= set(trees)
    assert "paused:queue:heavy (bob: <script>x</script>)" in json.dumps(trees["held"])


@pytest.mark.unit
def test_markers_are_bounded_and_styled_by_kind(write_config) -> None:
    config = load_config(write_config(extra=MARKS))
    now = time.time()
    kinds = ("annotation", "switch", "host", "verdict", "watermark", "custom")
    many = [
        events.Event(id=f"{i}-0", at=now - 400 + i * 10, kind=kinds[i % len(kinds)], text=f"event {i}")
        for i in range(MAX_MARKERS + 1)
    ]
    samples = [Sample(t=now - 500, queues={"heavy": {"ready": 1}}), Sample(t=now - 1, queues={"heavy": {"ready": 2}})]
    dom = parse_dom(render(config, samples, many, [], now, 1))
    (depth,) = dom.find("svg", id="depth-heavy")
    drawn = depth.find("g", cls="marker")
    assert len(drawn) == MAX_MARKERS and drawn[0].attrs["data-n"] == "1"
    assert "event 1" in drawn[0].all_text() and "event 0" not in depth.all_text()  # the oldest went unmarked
    assert {g.attrs["class"].split()[1] for g in drawn} == {f"event-{k}" for k in (*kinds[:-1], "other")}
    assert "only the newest 30 events in view are marked" in dom.find("section", id="markers")[0].all_text()


def test_shadow_verdicts_show_on_the_page_and_in_the_state(
    redis_conn: Redis, write_config, connections: ConnectionHolder
) -> None:
    """A shadow threshold far below what db1 reads, probed for real, would hold shard:1: the page
    and /api/state show it apart, with what it counted. (And a password pasted into a switch's
    reason shows in neither.)"""
    connections.hold(3)  # the probe does not count itself: on a quiet server the ratio would be 0
    config = load_config(write_config())
    trial = Switch("threshold", "connections", "erin", "trial", time.time(), time.time() + 600, high=1e-4, low=5e-5)
    set_switch(redis_conn, msgspec.structs.replace(trial, shadow=True))
    ReadingsCache(redis_conn, config).probe_now()  # stores db1's reading with its shadow band
    reason = Reason(Kind.SIGNAL, "db1", 0.01, 1e-4, "high", name="connections")
    for _ in range(3):
        shadow_tally.record(redis_conn, {"shard:1": [reason]}, time.time())
    site = Site(CollectorRegistry(), redis_conn, config)
    server = ExporterServer("127.0.0.1", 0, site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    set_switch(redis_conn, Switch("pause", "queue:archive", by="dave", why="see mysql://app:pw123@db1", at=time.time()))
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        body = get(f"{url}/api/state")[2].decode()
        state = json.loads(body)
        verdicts = {v["scope"]: v for v in state["state"]["shadow_verdicts"]}
        assert verdicts["shard:1"]["verdict"] == "defer" and verdicts["shard:1"]["policy"] == "connections"
        assert verdicts["shard:1"]["reasons"][0].startswith("connections:db1 ")
        assert verdicts["shard:1"]["tally"] == "would have deferred 3 jobs on shard:1 in the last hour (connections)"
        assert "pw123" not in body
        switches = {s["kind"]: s for s in state["state"]["switches"]}
        assert switches["pause"]["why"] == "see mysql://app:***@db1" and "shadow-threshold" in switches
        assert state["state"]["held"]["resources"] == {}  # the real verdicts admit: shadow holds nothing
        html = get(f"{url}/")[2].decode()
        assert "Shadow verdicts: none" not in html and "would have deferred 3 jobs on shard:1" in html
        assert "pw123" not in html
    finally:
        server.shutdown()
        server.server_close()
