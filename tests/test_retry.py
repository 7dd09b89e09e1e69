"""The one retry policy against a misbehaving S3 (``tests/fault_proxy.py`` in front of the
embedded server): read from the environment when used, tried exactly as often as it says, a
broken body read on from where it broke, uploads retried and a failed multipart upload aborted,
GDAL window reads retried by reopening; and the one-line report of library faults."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from components.core import retry
from components.core import uri as uri_io
from components.core.errors import SolarpipeError, UsageError, is_runtime_fault, one_line
from components.core.s3 import parse_s3_uri, s3_client
from components.s3server import EmbeddedS3
from tests.fault_proxy import FaultProxy, FaultRates

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.BACKOFF_VARIABLE, "0.01")
    monkeypatch.setenv(retry.MAX_BACKOFF_VARIABLE, "0.1")


@pytest.fixture()
def proxy(
    s3_server: EmbeddedS3, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> Iterator[FaultProxy]:
    """A fault-free proxy the process talks through; tests set its rates."""
    with FaultProxy(s3_server.endpoint, FaultRates(), seed=14) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.endpoint)
        yield running


def only_first(count: int, method: str = "GET"):
    """A selector that lets the first ``count`` requests of ``method`` be faulted, no more."""
    lock, left = threading.Lock(), [count]

    def selector(request_method: str, path: str) -> bool:
        with lock:
            if request_method != method or left[0] == 0:
                return False
            left[0] -= 1
            return True

    return selector


def test_policy_is_read_from_the_environment_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "7")
    monkeypatch.setenv(retry.DEADLINE_VARIABLE, "12.5")
    assert retry.current_policy().attempts == 7
    assert retry.current_policy().deadline_s == 12.5
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "2")
    assert retry.current_policy().attempts == 2
    with retry.using(retry.RetryPolicy(attempts=9)):
        assert retry.current_policy().attempts == 9
    assert retry.current_policy().attempts == 2


@pytest.mark.parametrize(("value", "message"), [("many", "not a number"), ("0", "at least 1")])
def test_a_bad_policy_variable_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, value)
    with pytest.raises(UsageError, match=f"{retry.ATTEMPTS_VARIABLE}=.*{message}"):
        retry.current_policy()


def test_backoff_is_jittered_below_a_doubling_cap_and_stops_at_the_deadline() -> None:
    policy = retry.RetryPolicy(attempts=10, backoff_s=1.0, max_backoff_s=4.0, deadline_s=100)
    delays = [policy.delay(attempt) for attempt in (1, 2, 3, 4, 5) for _ in range(200)]
    caps = [1.0, 2.0, 4.0, 4.0, 4.0]
    for index, cap in enumerate(caps):
        chunk = delays[index * 200 : (index + 1) * 200]
        assert max(chunk) <= cap and min(chunk) >= 0 and len(set(chunk)) > 100
    assert policy.next_delay(10, started=0) is None  # attempts used up
    import time

    assert policy.next_delay(1, started=time.monotonic() - 100) is None  # deadline passed


def test_a_request_that_always_fails_is_tried_exactly_the_policy_attempts(
    proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri_io.write_bytes(f"s3://{bucket}/a.txt", b"A")
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "3")
    proxy.set_rates(FaultRates(slowdown=1.0))
    before = proxy.requests
    with pytest.raises(SolarpipeError) as failed:
        uri_io.read_bytes(f"s3://{bucket}/a.txt")
    assert proxy.requests - before == 3  # botocore's own retries are replaced, not added
    message = str(failed.value)
    assert f"s3://{bucket}/a.txt" in message and "SlowDown" in message
    assert "gave up after 3 attempts" in message and "\n" not in message


def test_a_body_cut_in_the_middle_is_read_on_from_where_it_broke(
    proxy: FaultProxy, bucket: str
) -> None:
    content = os.urandom(3_000_000)
    uri_io.write_bytes(f"s3://{bucket}/big.bin", content)
    proxy.set_rates(FaultRates(cut=1.0), selector=only_first(2))

    assert uri_io.read_bytes(f"s3://{bucket}/big.bin") == content
    assert proxy.counts["cut"] == 2
    # Each cut passes on half of what it was asked for; the next GET starts there.
    ranges = [header for path, header in proxy.ranges if path.endswith("/big.bin")]
    assert ranges == ["bytes=1500000-", "bytes=2250000-"]


def test_download_survives_broken_bodies_and_leaves_no_partial_file(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = os.urandom(1_500_000)
    uri_io.write_bytes(f"s3://{bucket}/ckpt.bin", content)
    proxy.set_rates(FaultRates(cut=1.0), selector=only_first(1))
    target = tmp_path / "ckpt.bin"
    uri_io.download_file(f"s3://{bucket}/ckpt.bin", target)
    assert target.read_bytes() == content

    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "2")
    proxy.set_rates(FaultRates(cut=1.0))
    with pytest.raises(SolarpipeError, match=r"broke off.*gave up after 2 attempts"):
        uri_io.download_file(f"s3://{bucket}/ckpt.bin", tmp_path / "other.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]


def test_every_uri_operation_survives_a_misbehaving_s3(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30% of requests fail: 8 tries make a request fail for good once in 15,000.
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "8")
    proxy.set_rates(FaultRates.uniform(0.3, latency_s=0.01))
    prefix = f"s3://{bucket}/ops"
    blobs = {f"{prefix}/{index:02d}.bin": os.urandom(50_000 + index) for index in range(12)}
    for blob_uri, content in blobs.items():
        uri_io.write_bytes(blob_uri, content)
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(300_000))
    uri_io.upload_file(local, f"{prefix}/upload.bin")
    uri_io.download_file(f"{prefix}/upload.bin", tmp_path / "back.bin")

    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert {info.uri for info in uri_io.list_objects(prefix)} == {*blobs, f"{prefix}/upload.bin"}
    assert all(uri_io.read_bytes(blob_uri) == content for blob_uri, content in blobs.items())
    assert uri_io.exists(f"{prefix}/00.bin") and not uri_io.exists(f"{prefix}/none.bin")
    uri_io.delete(f"{prefix}/00.bin")
    assert not uri_io.exists(f"{prefix}/00.bin")
    assert {proxy.counts[name] > 0 for name in ("slowdown", "reset", "cut", "latency")} == {True}


def test_a_failed_multipart_upload_is_aborted_not_left_dangling(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "2")
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(9 * 1024 * 1024))  # above s3transfer's 8 MiB multipart threshold
    proxy.set_rates(FaultRates(reset=1.0), selector=lambda method, path: "partNumber=" in path)

    with pytest.raises(SolarpipeError, match=f"s3://{bucket}/large.bin"):
        uri_io.upload_file(large, f"s3://{bucket}/large.bin")

    proxy.set_rates(FaultRates())
    client = s3_client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not uri_io.exists(f"s3://{bucket}/large.bin")


def test_a_raster_read_cut_mid_body_is_retried_by_reopening(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    from components.core.manifest import TileWindow
    from components.raster.reader import open_raster, read_tile
    from components.raster.retrying import RetryingDataset
    from tests.rasters import random_pixels, write_geotiff

    local = write_geotiff(tmp_path / "r.tif", random_pixels(3, 512, 512, seed=4))
    raster_uri = f"s3://{bucket}/r.tif"
    uri_io.upload_file(local, raster_uri)
    window = TileWindow(col_off=256, row_off=256, width=256, height=256)
    with RetryingDataset(str(local), open_raster) as raster:
        expected, _ = raster.read(lambda dataset: read_tile(dataset, window, 65535, None))

    with RetryingDataset(raster_uri, open_raster) as raster:
        proxy.set_rates(FaultRates(cut=1.0), selector=only_first(2))
        pixels, _ = raster.read(lambda dataset: read_tile(dataset, window, 65535, None))

    assert proxy.counts["cut"] == 2
    assert np.array_equal(pixels, expected)


def test_a_raster_that_always_breaks_off_fails_in_one_line(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.core.manifest import TileWindow
    from components.raster.reader import open_raster, read_tile
    from components.raster.retrying import RetryingDataset
    from tests.rasters import random_pixels, write_geotiff

    monkeypatch.setenv(retry.ATTEMPTS_VARIABLE, "2")
    raster_uri = f"s3://{bucket}/r.tif"
    uri_io.upload_file(write_geotiff(tmp_path / "r.tif", random_pixels(3, 512, 512)), raster_uri)
    window = TileWindow(col_off=0, row_off=0, width=256, height=256)
    with RetryingDataset(raster_uri, open_raster) as raster:
        proxy.set_rates(FaultRates(cut=1.0), selector=lambda method, path: method == "GET")
        with pytest.raises(SolarpipeError) as failed:
            raster.read(lambda dataset: read_tile(dataset, window, 65535, None))
    message = str(failed.value)
    assert raster_uri in message and "gave up after 2 attempts" in message
    assert "\n" not in message


def test_library_faults_are_runtime_faults_reported_in_one_line() -> None:
    from botocore.exceptions import ResponseStreamingError
    from rasterio.errors import RasterioIOError

    broken = ResponseStreamingError(error="Connection broken: IncompleteRead(10 bytes read)")
    assert is_runtime_fault(broken) and "\n" not in one_line(broken)
    assert is_runtime_fault(PermissionError(13, "Permission denied", "/out/model.pt"))
    try:
        try:
            raise ValueError("TIFFFillTile: Read error, got 10 bytes, expected 20")
        except ValueError as cause:
            raise RasterioIOError("Read failed. See previous exception for details.") from cause
    except RasterioIOError as raster_fault:
        assert is_runtime_fault(raster_fault)
        assert one_line(raster_fault).startswith("TIFFFillTile: Read error")
    from_worker = RuntimeError(
        "Caught ResponseStreamingError in DataLoader worker process 0.\nOriginal Traceback "
        '(most recent call last):\n  File "x.py", line 1, in f\n'
        "botocore.exceptions.ResponseStreamingError: An error occurred while reading\n"
    )
    assert is_runtime_fault(from_worker)
    assert one_line(from_worker) == "An error occurred while reading"
    assert not is_runtime_fault(TypeError("unsupported operand"))
    assert not is_runtime_fault(
        RuntimeError(
            "Caught TypeError in DataLoader worker process 0.\nOriginal Traceback "
            "(most recent call last):\nTypeError: unsupported operand\n"
        )
    )


@pytest.mark.slow  # a subprocess stage run
def test_a_raster_fault_in_a_worker_thread_is_one_line_exit_1(tmp_path: Path) -> None:
    """A local GeoTIFF whose tile data is cut short: prepare's pool threads fail reading it."""
    import subprocess
    import sys

    from tests.rasters import random_pixels, write_geotiff

    raster = write_geotiff(tmp_path / "cut.tif", random_pixels(3, 512, 512))
    data = raster.read_bytes()
    raster.write_bytes(data[: len(data) * 3 // 4])
    command = [
        sys.executable, "-m", "components.prepare", "--raster", str(raster),
        "--tiles", str(tmp_path / "tiles"), "--manifest", str(tmp_path / "m.json"),
        "--set", "prepare.tile_size=256",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("components.prepare: error: ") and "cut.tif" in last
    verbose = subprocess.run([*command, "-v"], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert not (tmp_path / "m.json").exists()


def test_prepare_tile_checksums_match_through_the_proxy(proxy: FaultProxy, bucket: str) -> None:
    """Guard for the harness itself: a proxied PUT stores the exact bytes (checked by MD5)."""
    content = os.urandom(200_000)
    uri_io.write_bytes(f"s3://{bucket}/tile.png", content)
    bucket_name, key = parse_s3_uri(f"s3://{bucket}/tile.png")
    etag = s3_client().head_object(Bucket=bucket_name, Key=key)["ETag"].strip('"')
    assert etag == hashlib.md5(content).hexdigest()
