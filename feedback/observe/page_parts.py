"""The pieces every section of the page is made of, and times and numbers as the page writes them.

Each section is an `El` tree with an id and `data-section`, which the page's script swaps
when `/api/state` brings a new one; building them all through these helpers keeps that
contract, and the page's look, in one place.
"""

from __future__ import annotations

import time
from typing import Any

from easeoff.feedback.observe.markup import El, el


def section(section_id: str, title: str, *children: Any) -> El:
    """A section the live script can swap: its id, `data-section` and a heading."""
    return el("section", {"id": section_id, "data-section": ""}, el("h2", None, title), *children)


def empty(text: str) -> El:
    """What a section says when it has nothing to show."""
    return el("p", {"class": "empty"}, text)


def empty_note() -> El:
    """A chart's section before the exporter has sampled anything."""
    return el(
        "p",
        {"class": "empty"},
        "no samples yet: the exporter records one every ",
        el("code", None, "--sample-every"),
        " seconds",
    )


def head(*names: str) -> El:
    """A table's header row; columns after the first hold text (left-aligned)."""
    return el("tr", None, [el("th", None if i == 0 else {"class": "text"}, n) for i, n in enumerate(names)])


def row(*cells: str) -> El:
    """A table row of plain text cells, styled as `head` styles its columns."""
    return el("tr", None, [el("td", None if i == 0 else {"class": "text"}, c) for i, c in enumerate(cells)])


def num(value: float) -> str:
    return f"{value:.4g}"


def seconds(value: float) -> str:
    """A duration in the unit that reads best: milliseconds below a second."""
    return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"


def clock(t: float, date: bool = False) -> str:
    """A unix time in the server's local time, as people read it."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(t))


def iso(t: float) -> str:
    """A unix time for a `<time datetime>` attribute (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
