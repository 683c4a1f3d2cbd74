"""The one-way flow of docs/ARCHITECTURE.md, checked on the code's own imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

# A module may import its own room and rooms listed before it, never after.
FEEDBACK_ORDER = ("root", "levers", "signals", "budget", "verdict", "tally", "observe")


# The one way up, by design: the config's schema reads the signal sources' registry (at run time,
# in `file_type`) for the tables the source modules declare, so a new source is one module.
PLUGIN_REGISTRIES = {
    ("feedback/config/schema.py", "easeoff.feedback.signals.sources"),
    ("feedback/config/schema.py", "easeoff.feedback.signals.sources.source_tables"),
}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("easeoff.")}


def feedback_room(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[2] in FEEDBACK_ORDER else "root"


def test_feedback_and_tasks_never_import_workers_and_feedback_flows_one_way() -> None:
    wrong = []
    for room in ("tasks", "feedback"):
        for path in (REPO / room).rglob("*.py"):
            for name in imports_of(path):
                if name.startswith("easeoff.workers"):
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    for path in (REPO / "feedback").rglob("*.py"):
        own = FEEDBACK_ORDER.index(feedback_room("easeoff." + ".".join(path.relative_to(REPO).with_suffix("").parts)))
        for name in imports_of(path):
            if (path.relative_to(REPO).as_posix(), name) in PLUGIN_REGISTRIES:
                continue
            if name.startswith("easeoff.feedback.") and FEEDBACK_ORDER.index(feedback_room(name)) > own:
                wrong.append(f"{path.relative_to(REPO)} imports {name}, a room after its own")
    for path in (REPO / "tasks").rglob("*.py"):
        for name in imports_of(path):
            if (
                name.startswith("easeoff.feedback")
                and not name.startswith(
                    (
                        "easeoff.feedback.keys",
                        "easeoff.feedback.connect",
                        "easeoff.feedback.rate",
                        "easeoff.feedback.schedules",  # pure: what a schedule is, for @periodic
                        "easeoff.feedback.levers.lever",  # the lever modules' task options, for @heavy_task
                    )
                )
                and name != "easeoff.feedback"
            ):
                wrong.append(
                    f"{path.relative_to(REPO)} imports {name}: "
                    "tasks may use only feedback's keys, connect, rate, schedules and the levers' options"
                )
    assert wrong == []


def test_the_worker_loads_nothing_of_what_ops_read() -> None:
    """The worker's hot path records through feedback/tally/; the exporter, page, dashboard and
    alert rules (feedback/observe/) and the CLI are ops' side, and a worker process never loads them."""
    code = (
        "import sys, easeoff.workers.gated_worker, easeoff.workers.in_process\n"
        "print(sorted(m for m in sys.modules if m.startswith(('easeoff.feedback.observe', 'easeoff.workers.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
