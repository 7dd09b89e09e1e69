"""Cut a test raster into GeoTIFF files on one pixel grid (a mosaic, as SwissImage ships)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from tests.rasters import ORIGIN


def write_piece(
    path: Path,
    pixels: np.ndarray,
    col_off: int,
    row_off: int,
    crs: str = "EPSG:2056",
    resolution: float = 0.1,
    nodata: float | None = None,
    shift_x: float = 0.0,
) -> Path:
    """``pixels`` (bands x rows x cols) placed at pixel ``col_off, row_off`` of the test grid."""
    bands, height, width = pixels.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": str(pixels.dtype),
        "crs": crs,
        "transform": from_origin(
            ORIGIN[0] + resolution * col_off + shift_x,
            ORIGIN[1] - resolution * row_off,
            resolution,
            resolution,
        ),
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels)
    return path


def cut_into_files(
    folder: Path,
    pixels: np.ndarray,
    col_cuts: list[int],
    row_cuts: list[int],
    nodata: float | None = None,
) -> list[Path]:
    """The raster cut at ``col_cuts`` x ``row_cuts`` into files named by their position."""
    _, height, width = pixels.shape
    cols = [0, *col_cuts, width]
    rows = [0, *row_cuts, height]
    paths = []
    for r0, r1 in pairwise(rows):
        for c0, c1 in pairwise(cols):
            piece = pixels[:, r0:r1, c0:c1]
            paths.append(write_piece(folder / f"piece_{r0}_{c0}.tif", piece, c0, r0, nodata=nodata))
    return paths
