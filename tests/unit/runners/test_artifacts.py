"""infra.artifacts: content-addressed blobs and named files, confined to their workspace."""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.artifacts import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    FileArtifactStore,
    FileNotFound,
    S3ArtifactStore,
    from_settings,
    is_ref,
)
from infra.settings import Settings

WS = str(uuid.uuid4())
OTHER_WS = str(uuid.uuid4())


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible endpoint (moto's server: the S3 REST protocol over HTTP; no real
    object store can run on our machines)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["directory", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ArtifactStore:
    if request.param == "directory":
        return FileArtifactStore(tmp_path)
    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return S3ArtifactStore(f"s3://{bucket}/autoops", endpoint)


def stored(store: ArtifactStore, under: str) -> list[str]:
    """Every blob or file the store holds under `under` (`blobs`, `files`)."""
    if isinstance(store, FileArtifactStore):
        return [str(p) for p in (store.root / under).rglob("*") if p.is_file()]
    assert isinstance(store, S3ArtifactStore)
    listed = store._client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}/{under}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_bytes_are_stored_under_their_digest_and_come_back(store: ArtifactStore) -> None:
    ref = store.put_bytes(WS, b"hello", "text/plain")
    sha = hashlib.sha256(b"hello").hexdigest()
    assert ref == {"$artifact": {"sha256": sha, "size": 5, "media_type": "text/plain"}}
    assert any(path.endswith(f"blobs/{WS}/{sha[:2]}/{sha}") for path in stored(store, "blobs"))
    assert store.get_bytes(WS, sha) == b"hello"
    assert store.media_type(WS, sha) == "text/plain"


def test_json_round_trips_and_resolve_replaces_only_references(store: ArtifactStore) -> None:
    value = {"rows": [{"id": 1, "name": "Zoë"}], "ok": True}
    ref = store.put_json(WS, value)
    assert is_ref(ref)
    assert ref["$artifact"]["media_type"] == "application/json"
    assert store.get_json(WS, ref["$artifact"]["sha256"]) == value
    assert store.resolve(WS, ref) == value
    assert store.resolve(WS, {"plain": 1}) == {"plain": 1}
    assert store.resolve(WS, [ref]) == [ref]


def test_the_same_content_is_stored_once(store: ArtifactStore) -> None:
    first, second = store.put_json(WS, [1, 2]), store.put_json(WS, [1, 2])
    assert first == second
    # The blob (and, in a directory, its media type beside it).
    assert len(stored(store, "blobs")) == (2 if isinstance(store, FileArtifactStore) else 1)


def test_a_blob_is_invisible_from_another_workspace(store: ArtifactStore) -> None:
    sha = store.put_bytes(WS, b"mine")["$artifact"]["sha256"]
    with pytest.raises(ArtifactNotFound):
        store.get_bytes(OTHER_WS, sha)


@pytest.mark.parametrize(
    "value",
    [
        {"$artifact": {"sha256": "ab", "size": 1, "media_type": "x"}},
        {"$artifact": {"sha256": "a" * 64, "size": "1", "media_type": "x"}},
        {"$artifact": {"sha256": "a" * 64, "size": 1, "media_type": "x"}, "more": 1},
        {"artifact": {}},
        "a" * 64,
        None,
    ],
)
def test_is_ref_accepts_only_the_reference_shape(value: Any) -> None:
    assert not is_ref(value)


@pytest.mark.parametrize("workspace", ["", "..", "../etc", "not-a-uuid", "a/b"])
def test_workspaces_must_be_uuids(store: ArtifactStore, workspace: str) -> None:
    with pytest.raises(ArtifactError, match="not a uuid"):
        store.put_bytes(workspace, b"x")
    with pytest.raises(ArtifactError):
        store.read_file(workspace, "a.txt")


@pytest.mark.parametrize("sha", ["", "../" + "a" * 61, "A" * 64, "g" * 64, "a" * 63])
def test_digests_must_be_64_lowercase_hex_digits(store: ArtifactStore, sha: str) -> None:
    with pytest.raises(ArtifactError, match="sha256"):
        store.get_bytes(WS, sha)


def test_a_missing_blob_is_artifact_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.get_bytes(WS, "0" * 64)


def test_a_blob_that_is_not_json_is_an_artifact_error(store: ArtifactStore) -> None:
    sha = store.put_bytes(WS, b"\xff\xfe")["$artifact"]["sha256"]
    with pytest.raises(ArtifactError, match="not JSON"):
        store.get_json(WS, sha)


def test_named_files_are_written_read_and_replaced(store: ArtifactStore) -> None:
    store.write_file(WS, "reports/2024/out.csv", b"a,b\n")
    assert store.read_file(WS, "reports/2024/out.csv") == b"a,b\n"
    store.write_file(WS, "reports/2024/out.csv", b"c\n")
    assert store.read_file(WS, "reports/2024/out.csv") == b"c\n"
    assert [Path(p).name for p in stored(store, "files")] == ["out.csv"]  # no temporary left


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../secret",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        "",
        "a\\..\\b",
        "a\0b",
        "..",
    ],
)
def test_paths_that_could_leave_the_workspace_are_refused(store: ArtifactStore, path: str) -> None:
    with pytest.raises(ArtifactError):
        store.write_file(WS, path, b"x")
    with pytest.raises(ArtifactError):
        store.read_file(WS, path)
    assert stored(store, "files") == []


def test_a_missing_file_or_a_folder_is_file_not_found(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFound):
        store.read_file(WS, "nothing.txt")
    store.write_file(WS, "dir/file.txt", b"x")
    with pytest.raises(FileNotFound):
        store.read_file(WS, "dir")
    with pytest.raises(FileNotFound):
        store.read_file(WS, "dir/file.txt/below")


def test_files_of_one_workspace_are_invisible_to_another(store: ArtifactStore) -> None:
    store.write_file(WS, "shared.txt", b"mine")
    with pytest.raises(FileNotFound):
        store.read_file(OTHER_WS, "shared.txt")


def test_the_store_lives_in_the_configured_directory_or_under_the_data_dir(tmp_path: Path) -> None:
    configured = from_settings(Settings(artifact_dir=tmp_path / "a"))
    assert isinstance(configured, FileArtifactStore) and configured.root == tmp_path / "a"
    default = from_settings(Settings(data_dir=tmp_path / "d"))
    assert isinstance(default, FileArtifactStore) and default.root == tmp_path / "d" / "artifacts"
    bucket = from_settings(Settings(artifact_s3_url="s3://team-artifacts/prod"))
    assert isinstance(bucket, S3ArtifactStore)
    assert (bucket.bucket, bucket.prefix) == ("team-artifacts", "prod")
    with pytest.raises(ArtifactError, match="s3://bucket"):
        from_settings(Settings(artifact_s3_url="https://example.com/x"))


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096), media_type=st.sampled_from(["text/plain", "image/png"]))
def test_any_bytes_round_trip(data: bytes, media_type: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = FileArtifactStore(Path(root))
        ref = store.put_bytes(WS, data, media_type)
        assert store.get_bytes(WS, ref["$artifact"]["sha256"]) == data
        assert ref["$artifact"]["size"] == len(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None)
@given(value=json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = FileArtifactStore(Path(root))
        assert store.resolve(WS, store.put_json(WS, value)) == value
