"""detect's faults while it runs: a raster whose pixels break part-way is one line and exit 1
(the read happens in the reader thread, and its error reaches the command's line), and nothing
is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from components.detect.__main__ import main as detect_main
from tests.rasters import ORIGIN


def raster_with_a_broken_block(path: Path) -> Path:
    """A tiled, deflate-compressed GeoTIFF whose last block is garbage: the header and the first
    windows read fine, the last one does not."""
    pixels = np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    profile = {
        "driver": "GTiff", "width": 512, "height": 512, "count": 3, "dtype": "uint8",
        "crs": "EPSG:2056", "transform": from_origin(*ORIGIN, 0.1, 0.1),
        "tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels)
    with rasterio.open(path) as dataset:
        offset = int(dataset.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1))
        size = int(dataset.get_tag_item("BLOCK_SIZE_3_3", "TIFF", bidx=1))
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * size)
    return path


def test_a_raster_that_breaks_part_way_is_one_line_and_writes_nothing(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = raster_with_a_broken_block(tmp_path / "broken.tif")
    out = tmp_path / "panels.geojson"
    argv = ["--raster", str(raster), "--model", str(exported), "--out", str(out)]
    assert detect_main([*argv, "--set", "detect.device=cpu"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("components.detect: error:")
    assert str(raster) in error
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()
