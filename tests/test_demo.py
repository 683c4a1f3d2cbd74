"""The README's main command: the demo of the whole loop runs with no problem it can see.

`scripts/demo.py` checks each phase itself (eased off within its deadline, held while strained,
resumed, nothing lost) and exits 1 naming what went wrong; nothing else runs it, so a change
that breaks only the demo would otherwise reach the first new user unseen."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_demo_runs_the_whole_loop_and_reports_no_problem() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=REPO, capture_output=True, text=True, timeout=420, check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "nothing lost: all" in proc.stdout
    assert "PROBLEMS" not in proc.stdout
