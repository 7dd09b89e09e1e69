"""Area of interest: read a boundary file (GeoJSON/GPKG) and keep the tile windows it touches."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from shapely.geometry.base import BaseGeometry

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.raster.windows import WindowGrid


def read_boundary(boundary_uri: str, target_crs: str) -> BaseGeometry:
    """The union of all geometries of a boundary file, reprojected to ``target_crs``."""
    import pyogrio
    from pyogrio.errors import DataSourceError
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    with tempfile.TemporaryDirectory(prefix="solarpipe-aoi-") as tmp:
        local = Path(tmp) / uri_io.basename(boundary_uri)
        uri_io.download_file(boundary_uri, local)
        try:
            meta, _fids, wkb_geometries, _fields = pyogrio.raw.read(str(local))
        except DataSourceError as exc:
            raise SolarpipeError(
                f"not a vector boundary file (GeoJSON/GPKG): {boundary_uri}"
            ) from exc
    geometries = [g for g in shapely.from_wkb(wkb_geometries) if g is not None and not g.is_empty]
    if not geometries:
        raise SolarpipeError(f"boundary file has no geometries: {boundary_uri}")
    boundary = shapely.union_all(geometries)
    source_crs = meta.get("crs") or "EPSG:4326"
    if CRS.from_user_input(source_crs) != CRS.from_user_input(target_crs):
        boundary = shapely.geometry.shape(
            transform_geom(source_crs, target_crs, shapely.geometry.mapping(boundary))
        )
    return boundary


def to_pixel_space(boundary: BaseGeometry, raster_transform: Affine) -> BaseGeometry:
    """Map coordinates → raster pixel coordinates (column, row)."""
    inverse = ~raster_transform
    return shapely.affinity.affine_transform(
        boundary, [inverse.a, inverse.b, inverse.d, inverse.e, inverse.c, inverse.f]
    )


def cells_touching(grid: WindowGrid, pixel_boundary: BaseGeometry) -> np.ndarray:
    """``rows x columns`` booleans: which windows' squares intersect the boundary (pixel space).

    One row of windows at a time: a country's grid (tens of millions of windows) never exists
    as geometries all at once.
    """
    shapely.prepare(pixel_boundary)
    columns = np.asarray(grid.column_offsets)
    touching = np.zeros(grid.shape, dtype=bool)
    for row_index, row in enumerate(grid.row_offsets):
        squares = shapely.box(columns, row, columns + grid.width, row + grid.height)
        touching[row_index] = shapely.intersects(pixel_boundary, squares)
    return touching
