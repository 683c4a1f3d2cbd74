"""The page's elements as plain data: serialised once as HTML (first paint) and once as JSON (live updates).

The page is built as a tree of `El` rather than as strings, so the same tree is the HTML a
browser without JavaScript gets and the JSON the page's script turns back into DOM nodes
with `createElement`, `setAttribute` and `textContent` — never `innerHTML` — when it polls.
One builder, two serialisations: the live page cannot drift from the first paint, and text
is escaped in one place (`to_html`); in the JSON it is only ever text. Every text also loses
any password written in a URL (`redact_passwords`): exception messages and operators' notes
reach the page, and a `mysql://user:secret@host` in one of them must not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any, TypeAlias, Union

import msgspec

from easeoff.feedback.secrets import redact_text

VOID = frozenset({"br", "hr", "img", "input", "link", "meta", "wbr"})

Child: TypeAlias = Union["El", str]
Children: TypeAlias = Child | Iterable[Child | None] | None


class El(msgspec.Struct, frozen=True):
    """One element: its tag, its attributes (already strings) and its children (elements or text)."""

    tag: str
    attrs: tuple[tuple[str, str], ...] = ()
    children: tuple[Child, ...] = ()

    @property
    def id(self) -> str:
        return dict(self.attrs).get("id", "")

    def as_json(self) -> list[Any]:
        """`[tag, {attrs}, child, ...]`, a child being a string (text) or an element in the same form."""
        return [self.tag, dict(self.attrs), *(c if isinstance(c, str) else c.as_json() for c in self.children)]


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: Children) -> El:
    """An element; attributes whose value is None are left out, children may be lists or None (skipped)."""
    flat: list[Child] = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, El | str):
            flat.append(child)
        else:
            flat.extend(c for c in child if c is not None)
    flat = [redact_passwords(c) if isinstance(c, str) else c for c in flat]
    pairs = tuple((k, _text(v)) for k, v in (attrs or {}).items() if v is not None)
    return El(tag, pairs, tuple(c for c in flat if c != ""))


def redact_passwords(text: str) -> str:
    """Every password form in `text` masked: secrets.redact_text, the one redactor every output uses."""
    return redact_text(text)


def to_html(node: Child) -> str:
    """The element as HTML, every attribute value and text escaped."""
    if isinstance(node, str):
        return escape(node, quote=False)
    attrs = "".join(f' {k}="{escape(v, quote=True)}"' for k, v in node.attrs)
    if node.tag in VOID:
        return f"<{node.tag}{attrs}>"
    inner = "".join(to_html(c) for c in node.children)
    return f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def _text(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
