"""URI I/O: one set of functions for local paths and ``s3://`` URIs.

Stage code only ever sees URIs; nothing outside this module branches on the scheme. Writes
are atomic: a local file is written under a temporary name and renamed; an S3 object appears
only when its upload completes (s3transfer aborts a multipart upload that fails). Every S3
request is retried by the policy of ``core/retry.py`` (see ``core/s3.py``); a body that breaks
while it is read is read again from the byte where it broke, pinned to the same ETag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from components.core import retry
from components.core.errors import NotFoundError, SolarpipeError
from components.core.folders import remove_stale_staging, staging_prefix, swap_in_folder
from components.core.s3 import describe_s3_error, parse_s3_uri, s3_client
from components.core.s3_retries import is_broken_body

READ_CHUNK = 1 << 20
COMPLETE_MARKER = "_SUCCESS"  # last object of an S3 output folder (Hadoop's and Spark's name)


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its URI, size in bytes and entity tag (content hash for S3)."""

    uri: str
    size: int
    etag: str


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(prefix: str, *parts: str) -> str:
    """Join URI parts with ``/`` (local paths too), without doubling separators."""
    out = prefix.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    """The folder/prefix holding ``uri`` (``.`` for a bare local file name)."""
    head, separator, _ = uri.rstrip("/").rpartition("/")
    return head if separator else "."


def with_suffix(uri: str, suffix: str) -> str:
    """Replace the last extension of a URI's file name: ``a/b.tif`` → ``a/b.geojson``."""
    head, _, name = uri.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}{suffix}" if head else f"{stem}{suffix}"


def _s3_call(uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError, retry.GaveUp) as exc:
        raise describe_s3_error(exc, uri) from exc
    except Exception as exc:
        if is_broken_body(exc):
            raise describe_s3_error(exc, uri) from exc
        raise


def _stream_object(uri: str, write: Callable[[bytes], object]) -> None:
    """Hand every byte of an S3 object to ``write`` once, in order; a body that breaks is read
    on from where it broke (``Range``, ``IfMatch`` the first ETag) under the retry policy."""
    bucket, key = parse_s3_uri(uri)
    client = s3_client()
    state = {"received": 0, "etag": None}

    def read_rest() -> None:
        extra = {}
        if state["received"]:
            extra = {"Range": f"bytes={state['received']}-", "IfMatch": state["etag"]}
        response = client.get_object(Bucket=bucket, Key=key, **extra)
        state["etag"] = state["etag"] or response["ETag"]
        for chunk in response["Body"].iter_chunks(READ_CHUNK):
            write(chunk)
            state["received"] += len(chunk)

    _s3_call(uri, retry.call, read_rest, is_broken_body, uri)


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        chunks: list[bytes] = []
        _stream_object(uri, chunks.append)
        return b"".join(chunks)
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such file: {uri}") from exc
    except IsADirectoryError as exc:
        raise SolarpipeError(f"is a directory, expected a file: {uri}") from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SolarpipeError(f"not valid JSON: {uri} ({exc})") from exc


def dump_json(obj: Any) -> bytes:
    """Stable JSON bytes: sorted keys, two-space indent, trailing newline (DVC-friendly)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def dump_json_large(obj: Any) -> bytes:
    """:func:`dump_json`'s layout for large documents (manifests, detection layers) with orjson:
    the standard library's encoder runs in pure Python when it indents (150 us per manifest
    tile record, measured). Floats below 1e-4 are written positionally (0.00001, not 1e-05)."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _umask_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give (mkstemp's and mkdtemp's are private)."""
    return (0o777 if directory else 0o666) & ~_umask()


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    """Write atomically: readers see the old content or the new, never a part."""
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        extra = {"ContentType": content_type} if content_type else {}
        _s3_call(uri, s3_client().put_object, Bucket=bucket, Key=key, Body=data, **extra)
        return
    with _replaced_atomically(Path(uri)) as staging:
        staging.write_bytes(data)


def write_text(uri: str, text: str, content_type: str | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), content_type=content_type)


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, dump_json(obj), content_type="application/json")


def _head(uri: str) -> dict[str, Any] | None:
    """An S3 object's HEAD response, or None when it does not exist."""
    bucket, key = parse_s3_uri(uri)
    try:
        return s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise describe_s3_error(exc, uri) from exc
    except BotoCoreError as exc:
        raise describe_s3_error(exc, uri) from exc


def exists(uri: str) -> bool:
    if is_s3(uri):
        return _head(uri) is not None
    return Path(uri).exists()


def etag(uri: str) -> str | None:
    """The object's entity tag (MD5 of a single-part upload; of the content locally), or None
    when it does not exist: one HEAD request, where listing a large prefix would take many."""
    if is_s3(uri):
        head = _head(uri)
        return None if head is None else str(head.get("ETag", "")).strip('"')
    path = Path(uri)
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def list_objects(prefix: str) -> Iterator[ObjectInfo]:
    """Every object under a prefix (S3: paginated; local: files below a folder), sorted by key.

    ``etag`` is the MD5 of the content for local files and for S3 objects uploaded in one part.
    """
    if is_s3(prefix):
        bucket, key_prefix = parse_s3_uri(prefix)
        if key_prefix and not key_prefix.endswith("/"):
            key_prefix += "/"
        paginator = s3_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        uri=f"s3://{bucket}/{item['Key']}",
                        size=int(item["Size"]),
                        etag=str(item.get("ETag", "")).strip('"'),
                    )
        except (ClientError, BotoCoreError) as exc:
            raise describe_s3_error(exc, prefix) from exc
        return
    root = Path(prefix)
    if not root.is_dir():
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        content = path.read_bytes()
        yield ObjectInfo(uri=str(path), size=len(content), etag=hashlib.md5(content).hexdigest())


def delete(uri: str) -> None:
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        _s3_call(uri, s3_client().delete_object, Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def upload_file(local_path: str | Path, uri: str) -> None:
    """Copy a local file to a URI (multipart on S3 for large files; atomic either way)."""
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        _s3_call(uri, s3_client().upload_file, str(local_path), bucket, key)
        return
    _copy_local(local_path, uri)


@contextmanager
def _replaced_atomically(target: Path) -> Iterator[Path]:
    """A temporary file next to ``target`` to write; renamed over it when the block succeeds,
    removed when it fails (readers see the old file or the new one, never a part)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    staging = Path(tmp_name)
    try:
        yield staging
        os.chmod(staging, _umask_mode())
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _copy_local(source: str | Path, uri: str) -> None:
    with _replaced_atomically(Path(uri)) as staging:
        shutil.copyfile(source, staging)


def download_file(uri: str, local_path: str | Path) -> None:
    """Copy a URI to a local file."""
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        if not Path(uri).exists():
            raise NotFoundError(f"no such file: {uri}")
        _copy_local(uri, str(local_path))
        return
    target = Path(local_path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            _stream_object(uri, handle.write)
        os.chmod(tmp_name, _umask_mode())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def local_output_dir(uri: str) -> Iterator[Path]:
    """A local folder to write a stage's output folder into, published to ``uri`` on success.

    Local target: the folder is built next to the target and swapped in at once
    (``core/folders.py``), so the old output stays whole until the new one is complete. S3
    target: see :func:`publish_folder`.
    """
    if is_s3(uri):
        with tempfile.TemporaryDirectory(prefix="solarpipe-out-") as tmp:
            yield Path(tmp)
            publish_folder(tmp, uri)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=staging_prefix(target), suffix=".tmp")
    )
    os.chmod(staging, _umask_mode(directory=True))
    try:
        yield staging
        swap_in_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish_folder(local_dir: str | Path, prefix: str) -> None:
    """Replace the S3 folder ``prefix`` with the files of ``local_dir``.

    S3 cannot swap many objects at once, so the folder says whether it is whole: its
    ``_SUCCESS`` object goes first and comes back last, listing every file; objects of the old
    output that the new one lacks are deleted before it. A publish killed half-way leaves no
    ``_SUCCESS``, and the stage's rerun completes the folder.
    """
    _, key_prefix = parse_s3_uri(prefix)
    if not key_prefix.strip("/"):
        raise SolarpipeError(f"an output folder must be below the bucket's root: {prefix}")
    marker = join(prefix, COMPLETE_MARKER)
    old = {info.uri for info in list_objects(prefix)}
    if marker in old:
        delete(marker)
    root = Path(local_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    new = {join(prefix, path.relative_to(root).as_posix()): path for path in files}
    for file_uri, path in new.items():
        upload_file(path, file_uri)
    for stale in sorted(old - set(new) - {marker}):
        delete(stale)
    listing = {u.removeprefix(prefix.rstrip("/") + "/"): p.stat().st_size for u, p in new.items()}
    write_json(marker, {"files": listing})
