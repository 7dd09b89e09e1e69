"""Cut a test raster into GeoTIFF files on one pixel grid (a mosaic, as SwissImage ships)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np

from tests.rasters import ORIGIN, write_geotiff


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
    path.parent.mkdir(parents=True, exist_ok=True)
    origin = (ORIGIN[0] + resolution * col_off + shift_x, ORIGIN[1] - resolution * row_off)
    return write_geotiff(path, pixels, crs, nodata, resolution, origin)


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
