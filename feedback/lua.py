"""Lua scripts as files, each loaded as a `LuaScript` whose arguments are passed by name.

A script's named arguments are declared once in Python (`argv`, in order) and bound to locals
of the same names at the top of its .lua file (`local now, ... = unpack(ARGV, 1, n)`); any
variable tail (queue names, counter fields) follows them. Key prefixes come in as arguments,
from feedback/keys.py, so no key name is spelled inside a script. Scripts that share helpers
list the helper files as `preludes`. Each script is one atomic step on the Redis primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgspec
from redis import Redis
from redis.commands.core import Script


class LuaScript(msgspec.Struct, frozen=True):
    name: str
    argv: tuple[str, ...]
    text: str

    @classmethod
    def load(cls, package: str, name: str, argv: Sequence[str], preludes: Sequence[str] = ()) -> LuaScript:
        """`preludes` are helper files in the same folder, or `package:name` in another's."""
        parts = [_read(package, part) for part in (*preludes, name)]
        return cls(name, tuple(argv), "\n".join(parts))

    def args(self, tail: Sequence[Any] = (), **named: Any) -> list[Any]:
        """ARGV: the named arguments in the script's order, then the variable tail."""
        if set(named) != set(self.argv):
            missing, extra = sorted(set(self.argv) - set(named)), sorted(set(named) - set(self.argv))
            raise TypeError(f"{self.name}.lua: missing {missing}, unexpected {extra}")
        return [*(named[name] for name in self.argv), *tail]

    def register(self, redis: Redis) -> Script:
        return redis.register_script(self.text)


def _read(package: str, part: str) -> str:
    if ":" in part:
        package, part = part.split(":", 1)
    return (resources.files(package) / "lua" / f"{part}.lua").read_text(encoding="utf-8")
