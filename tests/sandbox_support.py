"""scripts/sandbox.py (and other scripts), loaded as modules by their paths (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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
