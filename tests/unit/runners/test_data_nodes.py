"""data.transform and data.filter."""

from __future__ import annotations

from typing import Any

import pytest

from infra.templates import truthy
from tests.unit.runners.stepping import StepRunner


def test_transform_outputs_its_rendered_fields(steps: StepRunner) -> None:
    fields = {"name": "Ann", "total": 3, "tags": ["a"]}
    assert steps.run("data.transform", {"fields": fields}) == fields


def test_transform_without_fields_outputs_an_empty_object(steps: StepRunner) -> None:
    assert steps.run("data.transform", {}) == {}


def test_filter_keeps_the_items_whose_condition_holds(steps: StepRunner) -> None:
    items = [{"n": 1}, {"n": 5}, {"n": 10}]
    output = steps.run("data.filter", {"items": items, "condition": "{{ item.n > 3 }}"})
    assert output == {"items": [{"n": 5}, {"n": 10}], "count": 2}


def test_filter_conditions_see_the_index_and_vars(steps: StepRunner) -> None:
    config = {
        "items": ["a", "b", "c", "d"],
        "condition": "{{ index >= vars.skip }}",
        "vars": {"skip": 2},
    }
    assert steps.run("data.filter", config) == {"items": ["c", "d"], "count": 2}


def test_filter_treats_text_meaning_no_as_false(steps: StepRunner) -> None:
    config = {"items": [1, 2, 3], "condition": "{% if item == 2 %}yes{% else %}false{% endif %}"}
    assert steps.run("data.filter", config) == {"items": [2], "count": 1}


def test_filter_needs_a_list(steps: StepRunner) -> None:
    error = steps.fails("data.filter", {"items": "abc", "condition": "{{ true }}"})
    assert (error.type, error.message, error.retryable) == (
        "ConfigError",
        "items must be a list",
        False,
    )


def test_a_failing_condition_is_a_template_error_naming_the_item(steps: StepRunner) -> None:
    config = {"items": [{"n": 1}, {}], "condition": "{{ item.n > 0 }}"}
    error = steps.fails("data.filter", config)
    assert error.type == "TemplateError"
    assert error.message.startswith("condition (item 1):")
    assert not error.retryable


@pytest.mark.parametrize(
    ("value", "holds"),
    [
        (True, True),
        (False, False),
        (0, False),
        (2, True),
        (None, False),
        ([], False),
        ([0], True),
        ("", False),
        ("  False ", False),
        ("no", False),
        ("null", False),
        ("0", False),
        ("yes", True),
        ("anything", True),
    ],
)
def test_truthiness_of_rendered_conditions(value: Any, holds: bool) -> None:
    assert truthy(value) is holds
