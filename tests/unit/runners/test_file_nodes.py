"""file.write and file.read on the artifact store."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.unit.runners.stepping import WORKSPACE, StepRunner


def test_a_list_of_objects_is_written_as_csv_with_a_header(steps: StepRunner) -> None:
    rows = [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bo, Jr.", "extra": None}]
    output = steps.run("file.write", {"path": "out/people.csv", "content": rows})
    data = steps.artifacts.read_file(WORKSPACE, "out/people.csv")
    assert data == b'id,name,extra\n1,Ann,\n2,"Bo, Jr.",\n'
    assert output == {
        "path": "out/people.csv",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": "csv",
    }
    assert steps.run("file.read", {"path": "out/people.csv"}) == [
        {"id": "1", "name": "Ann", "extra": ""},
        {"id": "2", "name": "Bo, Jr.", "extra": ""},
    ]


def test_a_list_of_lists_is_csv_whose_first_row_is_the_header(steps: StepRunner) -> None:
    steps.run("file.write", {"path": "t.csv", "content": [["a", "b"], [1, True]]})
    assert steps.run("file.read", {"path": "t.csv"}) == [{"a": "1", "b": "true"}]


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None]}, [1, "two"], "text", 3])
def test_json_files_round_trip(steps: StepRunner, value: Any) -> None:
    output = steps.run("file.write", {"path": "data.json", "content": value})
    assert output["format"] == "json"
    assert steps.run("file.read", {"path": "data.json"}) == value


def test_other_extensions_are_text_unless_a_format_is_given(steps: StepRunner) -> None:
    assert steps.run("file.write", {"path": "notes", "content": "héllo"})["format"] == "text"
    assert steps.run("file.read", {"path": "notes"}) == "héllo"
    steps.run("file.write", {"path": "x.log", "format": "json", "content": {"a": 1}})
    assert steps.run("file.read", {"path": "x.log", "format": "json"}) == {"a": 1}
    assert steps.run("file.read", {"path": "x.log"}) == '{\n  "a": 1\n}'


def test_text_content_must_be_a_string(steps: StepRunner) -> None:
    error = steps.fails("file.write", {"path": "a.txt", "content": {"a": 1}})
    assert (error.type, error.retryable) == ("ConfigError", False)


def test_csv_content_must_be_rows(steps: StepRunner) -> None:
    error = steps.fails("file.write", {"path": "a.csv", "content": [{"a": 1}, [2]]})
    assert error.type == "ConfigError"


def test_reading_a_missing_file_is_file_not_found(steps: StepRunner) -> None:
    error = steps.fails("file.read", {"path": "nope.json"})
    assert (error.type, error.retryable) == ("FileNotFound", False)


def test_a_file_that_is_not_its_format_is_a_format_error(steps: StepRunner) -> None:
    steps.run("file.write", {"path": "bad.json", "format": "text", "content": "{nope"})
    error = steps.fails("file.read", {"path": "bad.json"})
    assert error.type == "FileFormatError"


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b.txt", "a\\b.txt"])
def test_paths_leaving_the_workspace_are_refused(steps: StepRunner, path: str) -> None:
    for node_type in ("file.write", "file.read"):
        error = steps.fails(node_type, {"path": path, "content": "x"})
        assert (error.type, error.retryable) == ("FileError", False)
    assert not (steps.artifacts.root / "files").exists()
