"""Write a copy of a raster at another pixel size (same CRS and footprint), e.g. a 0.1 m scene
as the 0.2 m imagery a user might have: area averaging when coarsening, bilinear when refining.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.enums import Resampling as RasterioResampling
from rasterio.io import MemoryFile

from components.core import uri as uri_io
from components.core.errors import UsageError
from components.raster.reader import open_raster


def write_resampled(raster_uri: str, out_uri: str, pixel_size: float) -> tuple[int, int]:
    """Resample ``raster_uri`` to square pixels of ``pixel_size`` CRS units; ``(width, height)``."""
    if pixel_size <= 0:
        raise UsageError(f"pixel size must be positive, got {pixel_size}")
    with open_raster(raster_uri) as dataset:
        transform = dataset.transform
        scale_x, scale_y = pixel_size / abs(transform.a), pixel_size / abs(transform.e)
        width = max(1, math.floor(dataset.width / scale_x))
        height = max(1, math.floor(dataset.height / scale_y))
        method = RasterioResampling.average if scale_x >= 1 else RasterioResampling.bilinear
        pixels = dataset.read(out_shape=(dataset.count, height, width), resampling=method)
        profile = dataset.profile | {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "transform": transform * Affine.scale(scale_x, scale_y),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
    with MemoryFile() as memory:
        with memory.open(**profile) as out:
            out.write(np.asarray(pixels))
        uri_io.write_bytes(out_uri, bytes(memory.read()), content_type="image/tiff")
    return width, height
