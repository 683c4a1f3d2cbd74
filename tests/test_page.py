"""The exporter's page, rendered by a real headless Chromium from a real exporter on real Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.levers import events
from easeoff.feedback.observe.history import Sample, read_history
from easeoff.feedback.observe.page import render
from easeoff.feedback.observe.unknown_resources import UnknownResource
from easeoff.tasks.catalog import noop
from tests.conftest import wait_until
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


@pytest.fixture
def busy_queue(redis_conn: Redis) -> Redis:
    """Five ready jobs on `heavy` (above its high mark of 3) and two events, one with markup in it."""
    for _ in range(5):
        noop.enqueue(shard=1, connection=redis_conn)
    events.record(redis_conn, "annotation", "deploy v2.3 <b>canary</b>", who="alice", why="release train")
    events.record(redis_conn, "host", "db1 out of production", who="bob", why="disk swap")
    return redis_conn


def test_the_page_in_headless_chromium(busy_queue: Redis, write_config, tmp_path: Path) -> None:
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
    assert "Traceback" not in exporter.output()


def test_an_empty_history_renders_a_note_and_text_is_escaped(write_config) -> None:
    config = load_config(write_config(extra=MARKS))
    note = events.Event(id="1-0", at=time.time(), kind="annotation", text="<script>alert(1)</script>", who="<i>x</i>")
    html = render(config, [], [], [note], time.time(), 3)
    assert "no samples yet" in html
    assert 'id="depth-' not in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
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


def test_resources_jobs_name_that_the_config_lacks_are_shown_held(write_config) -> None:
    config = load_config(write_config())
    now = time.time()
    assert 'id="unknown-resources"' not in render(config, [], [], [], now, 1)
    html = render(config, [], [], [], now, 1, [UnknownResource("shard:<9>", "recount", now - 4)])
    assert 'id="unknown-resources"' in html
    assert "unknown_resource:shard:&lt;9&gt; (not in the config; job of recount seen 4s ago" in html
