"""Config errors: one line, `file: key: what is wrong`, with the key as the file spells it.

msgspec says where a value is wrong as a path (`$.signals[...].high`), with `[...]` for the key
of a table of tables; `locate` finds that key by decoding the table's entries one at a time, in
file order, as msgspec did, and words the problem for an operator (`expected a number, got 'x'`).
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import Meta

from easeoff.feedback.config.units import dec_hook, shown


class ConfigError(ValueError):
    """A config problem, phrased as `file: key: what is wrong`."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


T = TypeVar("T")
_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_TYPES = {"float": "a number", "int": "a whole number", "str": "a string", "bool": "true or false"}


class Problem(ValueError):
    """A rule broken inside one table, raised where the table's key is not known: `field` is the
    key within it ("" for the table itself), and the caller puts the table's key in front."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(problem)


_ENV_NAME = re.compile(r"[^A-Z0-9]+")


def env_name(name: str) -> str:
    """`db-1` → `DB_1`: a config name as it appears in an environment variable's."""
    return _ENV_NAME.sub("_", name.upper()).strip("_")


def key_of(parts: list[str]) -> str:
    """`['resources', 'shard:1', 'hosts', '[0]']` → `resources."shard:1".hosts[0]`: TOML's own spelling."""
    text = ".".join(part if _BARE.match(part) or part.startswith("[") else f'"{part}"' for part in parts)
    return text.replace(".[", "[")


def decode(raw: dict[str, Any], kind: type[T], source: str) -> T:
    """`raw` (the TOML's tables) as `kind`; ConfigError names the file and the key at fault."""
    try:
        return msgspec.convert(raw, kind, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        parts, problem = locate(str(exc), raw, kind)
        raise ConfigError(source, key_of(parts), problem) from None


def locate(message: str, raw: object, kind: Any) -> tuple[list[str], str]:
    """The key path and the operator's wording of one msgspec error about `raw` decoded as `kind`."""
    found = _AT.match(message)
    assert found is not None  # the pattern matches any text
    problem, parts = found["problem"], list[str]()
    metas: tuple[Meta, ...] = ()
    for field, index in _SEGMENT.findall(found["path"] or ""):
        kind, metas = _unwrap(kind, raw)
        if index == "...":
            return _in_table(parts, raw, get_args(kind)[1])
        if index:
            raw, kind = _item(raw, int(index)), get_args(kind)[0]
        else:
            raw, kind = _field(raw, field), _field_type(kind, field)
        parts.append(f"[{index}]" if index else field)
    kind, metas = _unwrap(kind, raw)
    return _words(problem, parts, raw, kind, metas)


def _in_table(parts: list[str], table: Any, kind: Any) -> tuple[list[str], str]:
    """The first entry of `table` that does not decode as `kind` (msgspec goes in file order)."""
    for name, entry in table.items():
        try:
            msgspec.convert(entry, kind, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            inner, problem = locate(str(exc), entry, kind)
            return [*parts, name, *inner], problem
    return parts, "is not valid"  # not reached: one entry failed


def _words(problem: str, parts: list[str], value: object, kind: Any, metas: tuple[Meta, ...]) -> tuple[list[str], str]:
    if found := re.match(r"Object contains unknown field `(.+)`", problem):
        return [*parts, found[1]], f"unknown key (expected one of: {', '.join(sorted(_fields(kind)))})"
    if found := re.match(r"Object missing required field `(.+)`", problem):
        wanted = _expected(_unwrap(_field_type(kind, found[1]), None)[0], ())
        return [*parts, found[1]], f"missing (expected {wanted})" if wanted else "missing"
    if problem.startswith("Invalid value") and _is_union(kind):  # a tag that names no member
        return parts, f"expected one of: {', '.join(_tags(kind))}; got {shown(value)}"
    if problem.startswith(("Expected", "Invalid enum value")):
        wrong_type = ", got `" in problem  # not a bound broken: the bounds would only distract
        wanted = _expected(kind, () if wrong_type else metas) or "a value"
        return parts, f"expected {wanted}{'' if wanted.endswith(';') else ','} got {shown(value)}"
    return parts, problem  # our own words, from dec_hook (a duration, a rate, a latency)


def _expected(kind: Any, metas: tuple[Meta, ...]) -> str:
    """What a value of `kind` is, in words: `a number > 0 and < 1`, `one of: a, b`."""
    if get_origin(kind) is Literal:
        return "one of: " + ", ".join(map(str, get_args(kind))) + ";"
    if _is_union(kind):
        if all(hasattr(k, "__struct_fields__") for k in get_args(kind)):
            return "a table"
        return " or ".join(filter(None, (_expected(k, ()) for k in get_args(kind))))
    if get_origin(kind) in (dict, tuple, list):
        return "a table" if get_origin(kind) is dict else "a list"
    if hasattr(kind, "__struct_fields__"):
        return "a table"
    words = _TYPES.get(getattr(kind, "__name__", ""), str(kind))
    bounds, finite = [], False
    for meta in metas:
        if meta.min_length == 1:
            return f"a non-empty {words.removeprefix('a ')}"
        for op, bound in ((">=", meta.ge), (">", meta.gt), ("<", meta.lt), ("<=", meta.le)):
            if op == "<=" and bound is not None and bound >= 1e308:
                finite = True
            elif bound is not None:
                bounds.append(f"{op} {bound:g}")
    if finite:
        words = words.replace("a ", "a finite ", 1)
    return " ".join([words, " and ".join(bounds)]).strip()


def _tags(kind: Any) -> list[str]:
    """A tagged union's tags: the values its tag field (a signal's `source`) may take."""
    return [str(k.__struct_config__.tag) for k in get_args(kind) if hasattr(k, "__struct_config__")]


def _unwrap(kind: Any, raw: object) -> tuple[Any, tuple[Meta, ...]]:
    """`kind` without Annotated and None; a tagged union resolved by `raw`'s tag when it names one."""
    metas: tuple[Meta, ...] = ()
    while True:
        if get_origin(kind) is Annotated:
            metas += tuple(m for m in kind.__metadata__ if isinstance(m, Meta))
            kind = get_args(kind)[0]
        elif _is_union(kind):
            members = [k for k in get_args(kind) if k is not type(None)]
            if len(members) != 1:
                return _tagged(members, raw, kind), metas
            kind = members[0]
        else:
            return kind, metas


def _tagged(members: list[Any], raw: object, union: Any) -> Any:
    for member in members:
        config = getattr(member, "__struct_config__", None)
        if config is not None and isinstance(raw, dict) and raw.get(config.tag_field) == config.tag:
            return member
    return union


def _is_union(kind: Any) -> bool:
    return get_origin(kind) is Union or isinstance(kind, types.UnionType)


def _fields(kind: Any) -> list[str]:
    """The keys a table may have: its fields, and a tagged union member's tag (a signal's `source`)."""
    if not hasattr(kind, "__struct_fields__"):
        return []
    tag = kind.__struct_config__.tag_field
    return [f.encode_name for f in msgspec.structs.fields(kind)] + ([tag] if tag else [])


def _field_type(kind: Any, name: str) -> Any:
    if hasattr(kind, "__struct_fields__"):
        for field in msgspec.structs.fields(kind):
            if field.encode_name == name:
                return field.type
    if _is_union(kind):  # a tagged union's tag itself (`source`), before a member is known
        return kind
    return Any


def _field(raw: object, name: str) -> object:
    return raw.get(name) if isinstance(raw, dict) else None


def _item(raw: object, index: int) -> object:
    return raw[index] if isinstance(raw, list | tuple) and index < len(raw) else None
