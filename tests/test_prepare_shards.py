"""prepare --shard I/N against the embedded S3 server: shards are disjoint, their merged
manifest is byte-identical to one process's, each shard reruns without uploading, bad specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.cli import main as solarpipe_main
from components.core import uri as uri_io
from components.prepare.__main__ import main as prepare_main
from tests.rasters import random_pixels, write_geotiff


def run_prepare(raster: str, tiles: str, manifest: str, *extra: str) -> int:
    return prepare_main(["--raster", raster, "--tiles", tiles, "--manifest", manifest, *extra])


def objects(prefix: str) -> dict[str, str]:
    return {uri_io.basename(o.uri): o.etag for o in uri_io.list_objects(prefix)}


@pytest.mark.timeout(300)
def test_two_shards_merge_into_the_bytes_of_one_process(bucket: str, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 600, 700, seed=2))
    small = ("--set", "prepare.tile_size=64", "--set", "prepare.workers=2")
    # 110 windows: the whole run uses worker processes, each 55-window shard runs in-process.
    assert (
        run_prepare(str(raster), f"s3://{bucket}/whole", str(tmp_path / "whole.json"), *small) == 0
    )
    parts = f"s3://{bucket}/run/manifests/"
    for index in (1, 0):
        status = run_prepare(
            str(raster), f"s3://{bucket}/whole", parts, "--shard", f"{index}/2", *small
        )
        assert status == 0
    part_uris = [o.uri for o in uri_io.list_objects(parts)]
    assert [uri_io.basename(u) for u in part_uris] == [
        "shard-0000-of-0002.json",
        "shard-0001-of-0002.json",
    ]
    keys = [{t["key"] for t in uri_io.read_json(u)["tiles"]} for u in part_uris]
    assert not keys[0] & keys[1] and len(keys[0]) == len(keys[1]) == 55
    merged = tmp_path / "merged.json"
    assert (
        solarpipe_main(
            ["shards", "merge-manifests", "--parts", json.dumps(part_uris), "--out", str(merged)]
        )
        == 0
    )
    assert merged.read_bytes() == (tmp_path / "whole.json").read_bytes()


@pytest.mark.timeout(300)
def test_a_shard_of_many_heads_its_tiles_instead_of_listing_and_resumes(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1024 windows in 1024 shards: listing the prefix would cost as much as the shard's own
    requests, so each tile's presence is asked with a HEAD; a rerun uploads nothing."""
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 2048, 2048, seed=4))
    tiles = f"s3://{bucket}/tiles"
    uri_io.write_bytes(f"{tiles}/unrelated.png", b"another run's tile")  # not listed, not touched
    args = (
        str(raster),
        tiles,
        f"{tmp_path}/parts/",
        "--shard",
        "7/1024",
        "--set",
        "prepare.tile_size=64",
    )
    assert run_prepare(*args) == 0
    assert "1 tiles uploaded, 0 unchanged" in capsys.readouterr().out
    assert run_prepare(*args) == 0
    assert "0 tiles uploaded, 1 unchanged" in capsys.readouterr().out
    (key,) = set(objects(tiles)) - {"unrelated.png"}
    uri_io.write_bytes(f"{tiles}/{key}", b"corrupted")
    assert run_prepare(*args) == 0
    assert "1 tiles uploaded, 0 unchanged" in capsys.readouterr().out
    part = uri_io.read_json(f"{tmp_path}/parts/shard-0007-of-1024.json")
    assert part["shard"] == "7/1024" and [t["key"] for t in part["tiles"]] == [key]


@pytest.mark.parametrize(
    ("spec", "message"), [("3/2", "must be in 0..1"), ("0/0", "at least 1"), ("x", "expected I/N")]
)
def test_bad_shard_is_one_line_exit_2_and_writes_nothing(
    spec: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 300, 300))
    manifest = tmp_path / "m.json"
    assert run_prepare(str(raster), str(tmp_path / "t"), str(manifest), "--shard", spec) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not manifest.exists() and not (tmp_path / "t").exists()


def test_merge_with_a_shard_missing_on_s3_writes_nothing(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 600, 700, seed=2))
    parts = f"s3://{bucket}/run/manifests/"
    for index in (0, 2):
        assert run_prepare(str(raster), f"s3://{bucket}/t", parts, "--shard", f"{index}/3") == 0
    capsys.readouterr()
    out = f"s3://{bucket}/run/manifest.json"
    assert solarpipe_main(["shards", "merge-manifests", "--parts", parts, "--out", out]) == 1
    err = capsys.readouterr().err
    assert "manifest of shard 1/3 is missing" in err and len(err.strip().splitlines()) == 1
    assert not uri_io.exists(out)
