"""URI I/O on local paths and on the embedded S3 server (real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.s3 import s3_client


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return f"s3://{request.getfixturevalue('bucket')}/root"


def test_write_read_exists_delete_round_trip(root: str) -> None:
    target = uri_io.join(root, "a", "b.json")
    assert not uri_io.exists(target)
    uri_io.write_json(target, {"b": 1, "a": [1, 2]})
    assert uri_io.exists(target)
    assert uri_io.read_json(target) == {"a": [1, 2], "b": 1}
    assert uri_io.read_bytes(target) == b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    uri_io.delete(target)
    assert not uri_io.exists(target)


def test_missing_object_is_a_not_found_error(root: str) -> None:
    with pytest.raises(NotFoundError):
        uri_io.read_bytes(uri_io.join(root, "missing.bin"))


def test_listing_gives_sizes_and_md5_etags(root: str) -> None:
    uri_io.write_bytes(uri_io.join(root, "x", "1.txt"), b"one")
    uri_io.write_bytes(uri_io.join(root, "x", "2.txt"), b"two!")
    listed = list(uri_io.list_objects(uri_io.join(root, "x")))
    assert [uri_io.basename(o.uri) for o in listed] == ["1.txt", "2.txt"]
    assert [o.size for o in listed] == [3, 4]
    assert listed[0].etag == "f97c5d29941bfb1b2fdab0874906ab82"  # md5(b"one")


def test_listing_paginates_past_one_page(bucket: str) -> None:
    client = s3_client()
    for index in range(1005):
        client.put_object(Bucket=bucket, Key=f"many/{index:05d}", Body=b"")
    assert len(list(uri_io.list_objects(f"s3://{bucket}/many"))) == 1005


def test_local_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    uri_io.write_bytes(str(target), b"old")

    with pytest.raises(TypeError):  # the write fails midway: str is not bytes
        uri_io.write_bytes(str(target), "new")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_local_output_dir_replaces_the_folder_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "preview"
    with uri_io.local_output_dir(str(target)) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), uri_io.local_output_dir(str(target)) as staging:
        (staging / "a.txt").write_text("second")
        raise RuntimeError("stage died")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview"]


def test_output_dir_on_s3_uploads_every_file(bucket: str) -> None:
    prefix = f"s3://{bucket}/out"
    with uri_io.local_output_dir(prefix) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.txt").write_text("A")
        (staging / "b.txt").write_text("B")
    assert uri_io.read_text(f"{prefix}/sub/a.txt") == "A"
    assert uri_io.read_text(f"{prefix}/b.txt") == "B"


def test_missing_bucket_names_the_bucket(s3_server) -> None:
    with pytest.raises(NotFoundError, match="bucket does not exist: s3://no-such-bucket-xyz"):
        uri_io.read_bytes("s3://no-such-bucket-xyz/key")


def test_unreachable_endpoint_is_one_line(monkeypatch) -> None:
    from components.s3server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SOLARPIPE_S3_MAX_ATTEMPTS", "1")
    with pytest.raises(SolarpipeError, match="cannot reach the S3 endpoint"):
        uri_io.read_bytes("s3://bucket/key")


def test_endpoint_without_scheme_is_a_usage_error(monkeypatch) -> None:
    from components.core.errors import UsageError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")
    with pytest.raises(UsageError, match="must include the scheme"):
        uri_io.read_bytes("s3://bucket/key")
