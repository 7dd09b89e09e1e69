"""Small GeoTIFF builders for tests (random but seeded pixels, EPSG:2056, 0.1 m)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ORIGIN = (2_600_000.0, 1_200_000.0)


def random_pixels(
    bands: int, height: int, width: int, dtype: str = "uint8", seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = 256 if dtype == "uint8" else 65536
    return rng.integers(0, high, size=(bands, height, width)).astype(dtype)


def write_geotiff(
    path: Path,
    pixels: np.ndarray,
    crs: str | None = "EPSG:2056",
    nodata: float | None = None,
    resolution: float = 0.1,
    origin: tuple[float, float] = ORIGIN,
    geotransform: bool = True,
) -> Path:
    """A tiled GeoTIFF; without ``geotransform`` it has no pixel size (GDAL's identity)."""
    bands, height, width = pixels.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": str(pixels.dtype),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if geotransform:
        profile["transform"] = from_origin(origin[0], origin[1], resolution, resolution)
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels)
    return path
