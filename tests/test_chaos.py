"""The short chaos run: workers SIGKILLed, Redis and MariaDB restarted, strain flipping; nothing lost,
and no resumable job's chunk applied twice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_short_chaos_run_loses_nothing_and_applies_no_chunk_twice() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--jobs", "200", "--quick", "--timeout", "150"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    assert out.strip().splitlines()[-2:] == ["chaos_duplicate_chunks 0", "chaos_lost 0"], out[-2000:]
    assert "1 Redis restart, 1 MariaDB restart" in out
    assert "lost 0, in two places 0" in out
    assert "finished without a ledger row: 0; failed without a reason: 0" in out
    assert "0 chunks applied twice, 0 finished with a chunk missing" in out
