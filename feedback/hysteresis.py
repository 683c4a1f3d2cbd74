"""Strained above `high`, healthy again only below `low`: a flip needs a real change, not noise."""

from __future__ import annotations


def assess(value: float, high: float, low: float, was_strained: bool) -> bool:
    """Return the new strained state for `value`, given the previous one."""
    if was_strained:
        return value >= low
    return value > high
