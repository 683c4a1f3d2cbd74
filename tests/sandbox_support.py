"""scripts/sandbox.py (and other scripts), loaded as modules by their paths (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "sandbox.py"  # the sandbox, run as a command in tests/test_sandbox.py


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"easeoff_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sandbox() -> ModuleType:
    return load_script("sandbox")


sandbox_mod = load_sandbox()


def shard_one_config(sandbox: Any, path: Path, redis_url: str, modules: tuple[str, ...] = ()) -> Path:
    """A config whose shard:1 is the sandbox's s1a (workers at a 0.3 s interval, short backoff)."""
    names = ", ".join(f'"{m}"' for m in ("easeoff.tasks.catalog", *modules))
    path.write_text(
        f"""
[tasks]
modules = [{names}]
[redis]
url = "{redis_url}"
[probe]
interval = 0.3
timeout = 0.5
[backoff]
base = 0.3
cap = 0.6
[mysql.hosts.s1a]
url = "{sandbox.url("s1a")}"
[resources."shard:1"]
hosts = ["s1a"]
[signals.connections]
high = 0.95
low = 0.9
[queues.heavy]
""",
        encoding="utf-8",
    )
    return path
