"""Envelopes larger than a Kafka message go out with their largest data left in the store."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_side.contracts.envelope import encode, fitted
from command_side.contracts.schemas import schema_for


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": "e",
        "type": "execution.ExecutionStarted",
        "schema_version": 1,
        "aggregate_id": "a",
        "aggregate_version": 1,
        "position": 7,
        "occurred_at": "2026-12-06T00:00:00+00:00",
        "workspace_id": "w",
        "actor_id": "u",
        "data": data,
    }


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=400), max_size=8), st.integers(600, 3000)
)
def test_an_envelope_fits_its_limit_leaving_the_largest_fields_in_the_store(
    data: dict[str, Any], limit: int
) -> None:
    whole = envelope(data)
    fit, raw = fitted(whole, limit)
    assert raw == encode(fit)
    if len(encode(whole)) <= limit:
        assert fit is whole  # the usual case: as it was
        return
    assert len(raw) <= limit or fit["data"] == {}
    left = fit["in_store"]
    assert sorted(left) == left and set(left) | set(fit["data"]) == set(data)
    assert all(fit["data"][k] == data[k] for k in fit["data"])
    # What stayed is never larger than what went to the store.
    if fit["data"] and left:
        kept = max(len(json.dumps(v)) for v in fit["data"].values())
        assert kept <= min(len(json.dumps(data[k])) for k in left)


def test_small_fields_such_as_the_workflow_id_stay_when_the_inputs_are_huge() -> None:
    data = {"workflow_id": "wf-1", "max_concurrency": 2, "inputs": {"text": "é" * 300_000}}
    fit, raw = fitted(envelope(data))
    assert fit["in_store"] == ["inputs"] and len(raw) <= 900_000
    assert fit["data"] == {"workflow_id": "wf-1", "max_concurrency": 2}


def test_an_envelope_with_data_left_in_the_store_still_meets_its_schema() -> None:
    kind = "execution.VariableSet"
    whole = {**envelope({"name": "big", "value": "x" * 5_000}), "type": kind}
    whole["aggregate_id"] = "6f1f2b8e-3c55-4d8c-9a7e-0a4f3c1d2e10"
    whole["event_id"] = whole["aggregate_id"]
    jsonschema.validate(whole, schema_for(kind))
    fit, _ = fitted(whole, 1_000)
    assert fit["in_store"] == ["value"]
    jsonschema.validate(fit, schema_for(kind))
    with pytest.raises(jsonschema.ValidationError):  # what stays must be there
        jsonschema.validate({**fit, "data": {}}, schema_for(kind))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**whole, "data": {"name": "big"}}, schema_for(kind))  # no in_store
