"""`file.write` and `file.read`: CSV, JSON or text files of the workspace's artifact store."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import PurePosixPath
from typing import Any

from infra.artifacts import ArtifactError, FileNotFound
from runners.nodes.context import StepContext
from runners.nodes.errors import StepError

_FORMATS = ("csv", "json", "text")


def file_write(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    path = _path(config)
    fmt = _format(config, path)
    data = _encoded(fmt, config.get("content")).encode()
    try:
        ctx.artifacts.write_file(ctx.workspace, path, data)
    except ArtifactError as exc:
        raise StepError("FileError", str(exc)) from None
    sha256 = hashlib.sha256(data).hexdigest()
    return {"path": path, "size": len(data), "sha256": sha256, "format": fmt}


def file_read(config: dict[str, Any], ctx: StepContext) -> Any:
    path = _path(config)
    fmt = _format(config, path)
    try:
        data = ctx.artifacts.read_file(ctx.workspace, path)
    except FileNotFound as exc:
        raise StepError("FileNotFound", str(exc)) from None
    except ArtifactError as exc:
        raise StepError("FileError", str(exc)) from None
    try:
        text = data.decode("utf-8-sig")
        if fmt == "json":
            return json.loads(text)
        if fmt == "csv":
            return list(csv.DictReader(io.StringIO(text, newline="")))
        return text
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise StepError("FileFormatError", f"{path!r} is not {fmt}: {exc}") from None


def _path(config: dict[str, Any]) -> str:
    path = config.get("path")
    if not isinstance(path, str) or not path:
        raise StepError("ConfigError", "path must be a non-empty relative path")
    return path


def _format(config: dict[str, Any], path: str) -> str:
    fmt = config.get("format") or PurePosixPath(path).suffix.lstrip(".").lower()
    if fmt in ("txt", "md"):
        return "text"
    return fmt if fmt in _FORMATS else "text"


def _encoded(fmt: str, content: Any) -> str:
    if fmt == "json":
        return json.dumps(content, ensure_ascii=False, indent=2)
    if isinstance(content, str):
        return content  # text, or CSV already written out
    if fmt == "text":
        raise StepError("ConfigError", "content of a text file must be a string")
    return _csv(content)


def _csv(rows: Any) -> str:
    """CSV text of a list of objects (header: every key, in order of first appearance) or a
    list of lists (the first is the header)."""
    if not isinstance(rows, list):
        raise StepError("ConfigError", "content of a CSV file must be a list of objects or lists")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if all(isinstance(row, dict) for row in rows):
        header = list(dict.fromkeys(key for row in rows for key in row))
        writer.writerow(header)
        writer.writerows([[_cell(row.get(key)) for key in header] for row in rows])
    elif all(isinstance(row, list) for row in rows):
        writer.writerows([[_cell(cell) for cell in row] for row in rows])
    else:
        raise StepError("ConfigError", "content of a CSV file must be a list of objects or lists")
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
