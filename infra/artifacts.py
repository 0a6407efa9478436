"""The artifact store: content-addressed blobs (large step outputs, downloaded bodies,
screenshots, uploaded images) and the named files of `file.read` / `file.write`, per
workspace, in a directory every process shares or in an S3-compatible bucket.

Layout (directory or object keys): `blobs/<workspace>/<sha256[:2]>/<sha256>` and
`files/<workspace>/<path>`. Workspace ids, digests and paths are checked before they touch the
store: nothing a step names can leave its workspace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.errors import InfraError
from infra.settings import Settings

REF_KEY = "$artifact"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DEFAULT_MEDIA_TYPE = "application/octet-stream"


class ArtifactError(InfraError, ValueError):
    """A workspace id, digest or path the store refuses, or a blob it cannot use."""


class ArtifactNotFound(ArtifactError):
    """No blob with that digest in the workspace."""


class FileNotFound(ArtifactError):
    """No named file at that path in the workspace."""


def is_ref(value: Any) -> bool:
    """True for `{"$artifact": {"sha256": ..., "size": ..., "media_type": ...}}`."""
    if not (isinstance(value, dict) and set(value) == {REF_KEY}):
        return False
    ref = value[REF_KEY]
    return (
        isinstance(ref, dict)
        and isinstance(ref.get("sha256"), str)
        and bool(_SHA256.fullmatch(ref["sha256"]))
        and isinstance(ref.get("size"), int)
        and isinstance(ref.get("media_type"), str)
    )


def _workspace(workspace: str | uuid.UUID) -> str:
    try:
        return str(uuid.UUID(str(workspace)))
    except ValueError:
        raise ArtifactError(f"workspace {str(workspace)[:80]!r} is not a uuid") from None


def _digest(sha256: str) -> str:
    if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise ArtifactError(f"{str(sha256)[:80]!r} is not a sha256 digest (64 hex digits)")
    return sha256


def _relative(path: str) -> list[str]:
    """The segments of a file path a step may name; ArtifactError for anything else."""
    if not isinstance(path, str) or not path:
        raise ArtifactError("a file path must be a non-empty string")
    if "\0" in path or "\\" in path:
        raise ArtifactError(f"file path {path!r} may not contain NUL or backslashes")
    if path.startswith("/"):
        raise ArtifactError(f"file path {path!r} must be relative")
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise ArtifactError(f"file path {path!r} may not have empty, '.' or '..' segments")
    return segments


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ArtifactStore(ABC):
    """Blobs (content-addressed) and named files of every workspace. Backends: a directory
    every process shares (`FileArtifactStore`, the default) or an S3-compatible bucket
    (`S3ArtifactStore`)."""

    @abstractmethod
    def put_bytes(
        self, workspace: str | uuid.UUID, data: bytes, media_type: str = _DEFAULT_MEDIA_TYPE
    ) -> dict[str, Any]:
        """Store `data` (once per content) and return its reference."""

    @abstractmethod
    def get_bytes(self, workspace: str | uuid.UUID, sha256: str) -> bytes:
        """The blob's content; ArtifactNotFound if the workspace has no such blob."""

    @abstractmethod
    def size(self, workspace: str | uuid.UUID, sha256: str) -> int:
        """The blob's size in bytes; ArtifactNotFound if the workspace has no such blob."""

    @abstractmethod
    def media_type(self, workspace: str | uuid.UUID, sha256: str) -> str:
        """The media type the blob was stored with."""

    @abstractmethod
    def write_file(self, workspace: str | uuid.UUID, path: str, data: bytes) -> None:
        """Create or replace the named file (parent folders appear as needed)."""

    @abstractmethod
    def read_file(self, workspace: str | uuid.UUID, path: str) -> bytes:
        """The named file's content; FileNotFound if there is none."""

    def put_json(self, workspace: str | uuid.UUID, value: Any) -> dict[str, Any]:
        """Store `value` as JSON (UTF-8) and return its reference."""
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return self.put_bytes(workspace, data, "application/json")

    def get_json(self, workspace: str | uuid.UUID, sha256: str) -> Any:
        try:
            return json.loads(self.get_bytes(workspace, sha256))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"artifact {sha256} is not JSON") from None

    def resolve(self, workspace: str | uuid.UUID, value: Any) -> Any:
        """The JSON content of `value` if it is a reference, else `value` itself."""
        if is_ref(value):
            return self.get_json(workspace, value[REF_KEY]["sha256"])
        return value


def _ref(sha256: str, size: int, media_type: str) -> dict[str, Any]:
    return {REF_KEY: {"sha256": sha256, "size": size, "media_type": media_type}}


class FileArtifactStore(ArtifactStore):
    """Blobs and named files under one root directory.

    Layout: `blobs/<workspace>/<sha256[:2]>/<sha256>` (plus `<sha256>.type`, the media type) and
    `files/<workspace>/<path>`. Every write goes to a temporary file first and is renamed into
    place, so a reader sees a whole file or none."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _blob(self, workspace: str | uuid.UUID, sha256: str) -> Path:
        digest = _digest(sha256)
        return self.root / "blobs" / _workspace(workspace) / digest[:2] / digest

    def put_bytes(
        self, workspace: str | uuid.UUID, data: bytes, media_type: str = _DEFAULT_MEDIA_TYPE
    ) -> dict[str, Any]:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._blob(workspace, sha256)
        if not path.exists():
            # The media type first: a reader who finds the blob finds its type too.
            _write_atomically(path.with_name(sha256 + ".type"), media_type.encode())
            _write_atomically(path, data)
        return _ref(sha256, len(data), media_type)

    def get_bytes(self, workspace: str | uuid.UUID, sha256: str) -> bytes:
        try:
            return self._blob(workspace, sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace") from None

    def size(self, workspace: str | uuid.UUID, sha256: str) -> int:
        try:
            return self._blob(workspace, sha256).stat().st_size
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace") from None

    def media_type(self, workspace: str | uuid.UUID, sha256: str) -> str:
        path = self._blob(workspace, sha256)
        if not path.exists():
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace")
        try:
            return path.with_name(sha256 + ".type").read_text() or _DEFAULT_MEDIA_TYPE
        except FileNotFoundError:
            return _DEFAULT_MEDIA_TYPE

    def _file(self, workspace: str | uuid.UUID, path: str) -> Path:
        return self.root.joinpath("files", _workspace(workspace), *_relative(path))

    def write_file(self, workspace: str | uuid.UUID, path: str, data: bytes) -> None:
        target = self._file(workspace, path)
        try:
            _write_atomically(target, data)
        except OSError as exc:
            raise ArtifactError(f"cannot write {path!r}: {exc.strerror}") from None

    def read_file(self, workspace: str | uuid.UUID, path: str) -> bytes:
        target = self._file(workspace, path)
        try:
            return target.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFound(f"no file {path!r} in this workspace") from None
        except IsADirectoryError:
            raise FileNotFound(f"{path!r} is a folder, not a file") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read {path!r}: {exc.strerror}") from None


class S3ArtifactStore(ArtifactStore):
    """Blobs and named files in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, …), under an
    optional prefix, with the layout of `FileArtifactStore` as object keys; a blob's media type
    is its object's Content-Type. Credentials come the way boto3 finds them
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, an instance role, …)."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ArtifactError(f"{url!r} is not s3://bucket[/prefix]")
        import boto3
        from botocore.config import Config

        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, *segments: str) -> str:
        return "/".join([self.prefix, *segments] if self.prefix else segments)

    def _blob(self, workspace: str | uuid.UUID, sha256: str) -> str:
        digest = _digest(sha256)
        return self._key("blobs", _workspace(workspace), digest[:2], digest)

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArtifactError(f"the artifact bucket answered {exc}") from None

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArtifactError(f"the artifact bucket answered {exc}") from None

    def _put(self, key: str, data: bytes, media_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactError(f"cannot store {key!r}: {exc}") from None

    def put_bytes(
        self, workspace: str | uuid.UUID, data: bytes, media_type: str = _DEFAULT_MEDIA_TYPE
    ) -> dict[str, Any]:
        sha256 = hashlib.sha256(data).hexdigest()
        key = self._blob(workspace, sha256)
        head = self._head(key)
        if head is None:
            self._put(key, data, media_type)
        else:
            media_type = str(head.get("ContentType") or media_type)
        return _ref(sha256, len(data), media_type)

    def get_bytes(self, workspace: str | uuid.UUID, sha256: str) -> bytes:
        data = self._get(self._blob(workspace, sha256))
        if data is None:
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace")
        return data

    def size(self, workspace: str | uuid.UUID, sha256: str) -> int:
        head = self._head(self._blob(workspace, sha256))
        if head is None:
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace")
        return int(head["ContentLength"])

    def media_type(self, workspace: str | uuid.UUID, sha256: str) -> str:
        head = self._head(self._blob(workspace, sha256))
        if head is None:
            raise ArtifactNotFound(f"no artifact {sha256} in this workspace")
        return str(head.get("ContentType") or _DEFAULT_MEDIA_TYPE)

    def write_file(self, workspace: str | uuid.UUID, path: str, data: bytes) -> None:
        key = self._key("files", _workspace(workspace), *_relative(path))
        self._put(key, data, _DEFAULT_MEDIA_TYPE)

    def read_file(self, workspace: str | uuid.UUID, path: str) -> bytes:
        data = self._get(self._key("files", _workspace(workspace), *_relative(path)))
        if data is None:
            raise FileNotFound(f"no file {path!r} in this workspace")
        return data


def from_settings(settings: Settings) -> ArtifactStore:
    """The bucket of `AUTOOPS_ARTIFACT_S3_URL` when set; else the directory
    `AUTOOPS_ARTIFACT_DIR`, by default `AUTOOPS_DATA_DIR/artifacts`."""
    if settings.artifact_s3_url:
        return S3ArtifactStore(settings.artifact_s3_url, settings.artifact_s3_endpoint)
    return FileArtifactStore(settings.artifact_dir or Path(settings.data_dir) / "artifacts")
