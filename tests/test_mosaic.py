"""Mosaic input: a raster cut into files under a prefix (local or on S3) or listed in a .vrt
tiles exactly like the uncut raster; files that do not fit one grid are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.cli import main as solarpipe_main
from components.core import uri as uri_io
from components.prepare.__main__ import main as prepare_main
from tests.mosaics import cut_into_files, write_piece
from tests.rasters import random_pixels, write_geotiff


def run_prepare(raster: str, tiles: str, manifest: str, *overrides: str) -> int:
    argv = ["--raster", raster, "--tiles", tiles, "--manifest", manifest]
    for override in overrides:
        argv += ["--set", override]
    return prepare_main(argv)


def tiles_by_position(manifest_path: Path) -> dict[str, tuple]:
    """Tile name without the scene → (sha256, transform, window), and the tile bytes' digests."""
    manifest = json.loads(manifest_path.read_text())
    return {
        tile["key"].split("_", 1)[1]: (tile["sha256"], tile["transform"], tile["window"])
        for tile in manifest["tiles"]
    }


@pytest.fixture()
def pixels() -> np.ndarray:
    return random_pixels(3, 600, 700, seed=5)


def test_files_under_a_local_prefix_tile_like_the_uncut_raster(
    pixels: np.ndarray, tmp_path: Path
) -> None:
    whole = write_geotiff(tmp_path / "whole.tif", pixels)
    cut_into_files(tmp_path / "cut", pixels, col_cuts=[300], row_cuts=[250])  # not tile-aligned
    assert run_prepare(str(whole), str(tmp_path / "t1"), str(tmp_path / "whole.json")) == 0
    assert run_prepare(f"{tmp_path}/cut/", str(tmp_path / "t2"), str(tmp_path / "cut.json")) == 0
    expected = tiles_by_position(tmp_path / "whole.json")
    assert tiles_by_position(tmp_path / "cut.json") == expected and len(expected) == 9
    for name in expected:
        assert (tmp_path / "t1" / f"whole_{name}").read_bytes() == (
            tmp_path / "t2" / f"cut_{name}"
        ).read_bytes()


def test_files_under_an_s3_prefix_and_a_vrt_tile_like_the_uncut_raster(
    pixels: np.ndarray, bucket: str, tmp_path: Path
) -> None:
    whole = write_geotiff(tmp_path / "whole.tif", pixels)
    for path in cut_into_files(tmp_path / "cut", pixels, col_cuts=[256, 500], row_cuts=[100]):
        uri_io.upload_file(path, f"s3://{bucket}/swissimage/{path.name}")
    uri_io.write_bytes(f"s3://{bucket}/swissimage/readme.txt", b"not a raster: ignored")
    prefix = f"s3://{bucket}/swissimage/"
    vrt = f"s3://{bucket}/run/mosaic.vrt"
    assert solarpipe_main(["mosaic", "--raster", prefix, "--out", vrt]) == 0
    assert run_prepare(str(whole), str(tmp_path / "t1"), str(tmp_path / "whole.json")) == 0
    assert run_prepare(prefix, f"s3://{bucket}/tiles", str(tmp_path / "s3.json")) == 0
    assert run_prepare(vrt, str(tmp_path / "t3"), str(tmp_path / "vrt.json")) == 0
    expected = tiles_by_position(tmp_path / "whole.json")
    assert tiles_by_position(tmp_path / "s3.json") == expected
    assert tiles_by_position(tmp_path / "vrt.json") == expected
    assert json.loads((tmp_path / "s3.json").read_text())["scene"] == "swissimage"


def test_gaps_between_files_are_nodata_and_no_window_is_planned_there(
    pixels: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_piece(tmp_path / "cut/a.tif", pixels[:, :256, :256], 0, 0)
    write_piece(tmp_path / "cut/b.tif", pixels[:, 256:600, 512:700], 512, 256)
    vrt = str(tmp_path / "mosaic.vrt")
    assert solarpipe_main(["mosaic", "--raster", f"{tmp_path}/cut/", "--out", vrt]) == 0
    for raster in (f"{tmp_path}/cut/", vrt):
        assert run_prepare(raster, str(tmp_path / "t"), str(tmp_path / "m.json")) == 0
        assert "prepare: 3 windows" in capsys.readouterr().out  # 9 windows, 6 touch no file
        tiles = set(tiles_by_position(tmp_path / "m.json"))
        assert tiles == {"0_0.png", "512_256.png", "512_512.png"}


def test_files_with_nodata_tile_like_the_uncut_raster_with_nodata(
    pixels: np.ndarray, tmp_path: Path
) -> None:
    pixels = pixels.copy()
    pixels[:, :256, 256:512] = 0
    whole = write_geotiff(tmp_path / "whole.tif", pixels, nodata=0)
    cut_into_files(tmp_path / "cut", pixels, col_cuts=[300], row_cuts=[250], nodata=0)
    assert run_prepare(str(whole), str(tmp_path / "t1"), str(tmp_path / "whole.json")) == 0
    assert run_prepare(f"{tmp_path}/cut/", str(tmp_path / "t2"), str(tmp_path / "cut.json")) == 0
    expected = tiles_by_position(tmp_path / "whole.json")
    assert tiles_by_position(tmp_path / "cut.json") == expected and len(expected) == 8


@pytest.mark.parametrize(
    ("odd_one", "message"),
    [
        ({"crs": "EPSG:32632"}, "has CRS EPSG:32632"),
        ({"resolution": 0.25}, "has pixel size (0.25, -0.25)"),
        ({"shift_x": 0.05}, "is not on the pixel grid"),
    ],
)
def test_a_file_that_does_not_fit_the_mosaic_is_named(
    odd_one: dict, message: str, pixels: np.ndarray, tmp_path: Path, capsys
) -> None:
    write_piece(tmp_path / "cut/a.tif", pixels[:, :, :300], 0, 0)
    write_piece(tmp_path / "cut/b.tif", pixels[:, :, 300:], 300, 0, **odd_one)
    manifest = tmp_path / "m.json"
    assert run_prepare(f"{tmp_path}/cut/", str(tmp_path / "t"), str(manifest)) == 1
    err = capsys.readouterr().err
    assert message in err and f"{tmp_path}/cut/b.tif" in err and len(err.splitlines()) == 1
    assert not manifest.exists()


def test_prefix_without_geotiffs_is_one_line(bucket: str, tmp_path: Path, capsys) -> None:
    uri_io.write_bytes(f"s3://{bucket}/docs/readme.txt", b"no rasters here")
    for prefix in (f"s3://{bucket}/docs/", f"{tmp_path}/nothing/"):
        assert run_prepare(prefix, str(tmp_path / "t"), str(tmp_path / "m.json")) == 1
        err = capsys.readouterr().err
        assert prefix in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_vrt_footprints_come_from_the_sources_destination_rectangles() -> None:
    from components.raster.mosaic import vrt_footprints

    source = '<SimpleSource><SourceBand>1</SourceBand><DstRect xOff="5" yOff="6" xSize="10" ySize="20"/></SimpleSource>'
    band = f'<VRTRasterBand band="1"><ColorInterp>Red</ColorInterp>{source}</VRTRasterBand>'
    assert vrt_footprints(f"<VRTDataset>{band}</VRTDataset>") == ((5, 6, 15, 26),)
    whole = "<SimpleSource><SourceBand>1</SourceBand></SimpleSource>"  # no DstRect: all of it
    assert (
        vrt_footprints(f"<VRTDataset><VRTRasterBand>{whole}</VRTRasterBand></VRTDataset>") is None
    )
