"""scripts/sandbox.py, loaded as a module by its path (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sandbox.py"


def load_sandbox() -> ModuleType:
    spec = importlib.util.spec_from_file_location("easeoff_sandbox", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sandbox_mod = load_sandbox()
