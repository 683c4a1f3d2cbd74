"""Finding, reading and decoding the config file: one TOML file describes the fleet.

Every error names the file and the dotted key, so `easeoff config check` can print one line an
operator can act on. Secrets come from the environment and are kept out of every repr and message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from easeoff.feedback.config import schema
from easeoff.feedback.config.build import Builder
from easeoff.feedback.config.errors import ConfigError, decode
from easeoff.feedback.config.model import Config

DEFAULT_CONFIG_NAME = "easeoff.example.toml"  # package data of `easeoff`: what `config init` writes
APP_CONFIG_NAME = "easeoff.toml"  # an app's own config, found in the current directory
CONFIG_ENV = "EASEOFF_CONFIG"


def default_config_path() -> Path:
    """`EASEOFF_CONFIG`, else the app's `./easeoff.toml`; with neither, a ConfigError saying where
    it looked and how to give one. Never the example shipped in the package: a worker on it would
    work on redis://127.0.0.1:6379/0 and probe root@127.0.0.1, saying nothing. Asking for the
    example is giving its path (`--config`, `EASEOFF_CONFIG`), which the error names."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    if Path(APP_CONFIG_NAME).is_file():
        return Path(APP_CONFIG_NAME)
    raise ConfigError(
        str(Path(APP_CONFIG_NAME).absolute()),
        "",
        f"no such file, and no --config or ${CONFIG_ENV} names another: give one with --config FILE or "
        f"{CONFIG_ENV}=FILE, or write ./{APP_CONFIG_NAME} with `easeoff config init` "
        f"(the packaged example, to run on as it is: {packaged_example_path()})",
    )


def packaged_example_path() -> Path:
    """The commented example config, package data of `easeoff` (also what `config init` writes)."""
    return Path(str(resources.files("easeoff") / DEFAULT_CONFIG_NAME))


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate; raise ConfigError on any problem."""
    config_path = Path(path) if path is not None else default_config_path()
    source = str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc.__class__.__name__}") from None
    return parse_config(text, source, os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML ({exc})") from None
    filled = _with_signal_sources(raw)
    file = decode(filled, schema.File if _builtin_sources_only(filled) else schema.file_type(), source)
    return Builder(source, environ).config(file)


def _with_signal_sources(raw: dict[str, Any]) -> dict[str, Any]:
    """A signal table's `source` when it gives none: "sql" with a query, else "mysql" (a built-in).
    msgspec's tagged union needs its tag; this is the one default the file leaves unwritten."""
    signals = raw.get("signals")
    if not isinstance(signals, dict):
        return raw
    filled = {
        name: {"source": "sql" if "query" in entry else "mysql", **entry}
        if isinstance(entry, dict) and "source" not in entry
        else entry
        for name, entry in signals.items()
    }
    return {**raw, "signals": filled}


def _builtin_sources_only(raw: dict[str, Any]) -> bool:
    """Whether every signal's source is a built-in one: then the source modules are not imported
    (an app's `task.delay()` reads the config too, and needs no probe's code)."""
    builtin = {table.__struct_config__.tag for table in schema.BUILTIN_SIGNAL_TABLES}
    signals = raw.get("signals")
    entries = signals.values() if isinstance(signals, dict) else ()
    return all(not isinstance(entry, dict) or entry.get("source") in builtin for entry in entries)
