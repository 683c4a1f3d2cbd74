"""Scopes parsed once and spelled back the same: every form a switch is stored with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.scopes import Scope, ScopeKind

pytestmark = pytest.mark.unit

names = st.text(alphabet=st.characters(blacklist_characters="@", blacklist_categories=("Cs",)), min_size=1)


@pytest.mark.parametrize(
    ("text", "signal", "scope"),
    [
        ("all", False, Scope(ScopeKind.ALL)),
        ("queue:light", False, Scope.queue("light")),
        ("task:noop", False, Scope.task("noop")),
        ("resource:shard:1", False, Scope.on_resource("shard:1")),
        ("lag", True, Scope.signal("lag")),
        ("lag@shard:1", True, Scope.signal("lag", "shard:1")),
    ],
)
def test_each_form_parses_and_spells_back(text: str, signal: bool, scope: Scope) -> None:
    assert Scope.parse(text, signal=signal) == scope
    assert str(scope) == text


@pytest.mark.parametrize("text", ["", "queue:", "nothing:x", "task", "shard:1"])
def test_text_that_names_no_scope_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad scope"):
        Scope.parse(text)


def test_an_unreadable_switch_holds_what_its_scope_names() -> None:
    assert Scope.signal("lag", "shard:1").held == Scope.on_resource("shard:1")
    assert Scope.signal("lag").held == Scope.everything()
    assert Scope.task("noop").held == Scope.task("noop")


@given(st.sampled_from([ScopeKind.QUEUE, ScopeKind.TASK, ScopeKind.RESOURCE]), names)
def test_any_named_scope_round_trips(kind: ScopeKind, name: str) -> None:
    scope = Scope(kind, name)
    assert Scope.parse(str(scope)) == scope


@given(names, st.one_of(st.just(""), names))
def test_any_signal_scope_round_trips(name: str, resource: str) -> None:
    scope = Scope.signal(name, resource)
    assert Scope.parse(str(scope), signal=True) == scope
