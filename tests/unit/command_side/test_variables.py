"""Workspace variables: names and values checked, changes recorded only when they change."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_side.errors import NotFound, ValidationFailed
from command_side.execution.variables import MAX_VARIABLES, NAME, Variables

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
NAMES = st.from_regex(NAME, fullmatch=True)


@given(st.lists(st.tuples(NAMES, JSON | st.just(None)), max_size=30))
def test_the_values_are_the_last_set_of_each_name_minus_the_deleted(
    changes: list[tuple[str, Any]],
) -> None:
    variables = Variables(workspace_id="ws", actor_id="u")
    expected: dict[str, Any] = {}
    for name, value in changes:
        if value is None and name in expected:
            variables.delete(name, "u")
            del expected[name]
        elif value is not None:
            variables.set(name, value, "u")
            expected[name] = value
    assert variables.values == expected
    replayed: Any = None
    for event in variables.collect_events():  # the fold from the events alone
        replayed = event.mutate(replayed)
    assert replayed.values == expected


def test_setting_the_same_value_records_nothing() -> None:
    variables = Variables(workspace_id="ws", actor_id="u")
    assert variables.set("a", [1, 2], "u")
    version = variables.version
    assert not variables.set("a", [1, 2], "u")
    assert variables.version == version
    assert variables.set("flag", 1, "u")
    assert variables.set("flag", True, "u")  # not the same value, though True == 1 in Python
    assert variables.values["flag"] is True


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("1st", 1, "name"),
        ("a-b", 1, "name"),
        ("x" * 65, 1, "name"),
        ("ok", float("nan"), "value"),
        ("ok", {1, 2}, "value"),
        ("ok", "x" * 20_000, "value"),
    ],
)
def test_bad_names_and_values_are_refused_and_change_nothing(
    name: str, value: Any, field: str
) -> None:
    variables = Variables(workspace_id="ws", actor_id="u")
    with pytest.raises(ValidationFailed) as refused:
        variables.set(name, value, "u")
    assert refused.value.details["field"] == field
    assert variables.values == {} and variables.version == 1


def test_a_workspace_has_a_bounded_number_of_variables() -> None:
    variables = Variables(workspace_id="ws", actor_id="u")
    for i in range(MAX_VARIABLES):
        variables.set(f"v{i}", i, "u")
    with pytest.raises(ValidationFailed):
        variables.set("one_more", 1, "u")
    variables.set("v0", "changed", "u")  # changing one is still fine
    big = Variables(workspace_id="ws", actor_id="u")
    for i in range(16):
        big.set(f"v{i}", "x" * 16_000, "u")
    with pytest.raises(ValidationFailed):
        big.set("v16", "x" * 16_000, "u")  # past 256 KB in all
    with pytest.raises(NotFound):
        variables.delete("never", "u")
