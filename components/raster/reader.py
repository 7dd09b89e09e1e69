"""Reading tiles out of a GeoTIFF/VRT (local or ``s3://``): checks, windowed reads, 8-bit RGB.

Band rule: one band is repeated to grey RGB; three or more bands give RGB from the first three
(a fourth alpha band is read as the mask). Data type rule: ``uint8`` as is; ``uint16`` scaled
linearly as ``value * 255 / prepare.uint16_max`` and clipped; other types are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.manifest import TileWindow
from components.core.s3 import raster_env
from components.raster.pixel_size import PixelSize, raster_pixel_size
from components.raster.retrying import gdal_cause, open_dataset


@dataclass(frozen=True)
class RasterInfo:
    """What prepare and detect need to know about a raster."""

    uri: str  # as the user gave it: a raster, a .vrt or a mosaic prefix
    width: int
    height: int
    crs: str
    transform: Affine
    band_count: int
    dtype: str
    nodata: float | None
    pixel_size: PixelSize
    dataset: str = ""  # what GDAL opens: the URI itself, or a mosaic's VRT document


@contextmanager
def open_raster(raster_uri: str) -> Iterator[rasterio.DatasetReader]:
    """Open a raster (URI or VRT document) inside the S3-aware GDAL environment, one-line errors."""
    with raster_env():
        try:
            dataset = open_dataset(raster_uri)
        except RasterioIOError as exc:
            if raster_uri.startswith("<VRTDataset"):
                raise SolarpipeError(f"cannot read the mosaic: {exc}") from exc
            if not uri_io.exists(raster_uri):
                raise NotFoundError(f"raster does not exist: {raster_uri}") from exc
            raise SolarpipeError(
                f"not a raster GDAL can read: {raster_uri} ({gdal_cause(exc)})"
            ) from exc
        with dataset:
            yield dataset


def inspect_raster(raster_uri: str, gdal_source: str = "") -> RasterInfo:
    """Open once, check it is usable, and describe it (no pixels read).

    ``gdal_source``: what GDAL opens when it is not ``raster_uri`` (a mosaic's VRT document).
    """
    if not gdal_source and not uri_io.exists(raster_uri):
        raise NotFoundError(f"raster does not exist: {raster_uri}")
    gdal_source = gdal_source or raster_uri
    with open_raster(gdal_source) as dataset:
        pixel_size = raster_pixel_size(
            dataset.crs, dataset.transform, dataset.width, dataset.height, raster_uri
        )
        dtype = dataset.dtypes[0]
        if dtype not in ("uint8", "uint16"):
            raise SolarpipeError(
                f"unsupported data type {dtype} in {raster_uri}: expected uint8 or uint16"
            )
        if dataset.count == 2:
            raise SolarpipeError(
                f"{raster_uri} has 2 bands: expected 1 (grey), 3 (RGB) or more (RGB first)"
            )
        crs = dataset.crs.to_string() if dataset.crs.to_epsg() else dataset.crs.to_wkt()
        return RasterInfo(
            uri=raster_uri,
            width=dataset.width,
            height=dataset.height,
            crs=crs,
            transform=dataset.transform,
            band_count=dataset.count,
            dtype=dtype,
            nodata=dataset.nodata,
            pixel_size=pixel_size,
            dataset=gdal_source,
        )


def to_rgb8(pixels: np.ndarray, dtype: str, uint16_max: int) -> np.ndarray:
    """Bands-first pixels → ``H x W x 3`` uint8 by the module's band and data-type rules."""
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    pixels = pixels[:3]
    if dtype == "uint16":
        scaled = pixels.astype(np.float32) * (255.0 / uint16_max)
        pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.transpose(pixels, (1, 2, 0)))


def as_rasterio_window(window: TileWindow) -> Window:
    return Window(window.col_off, window.row_off, window.width, window.height)


def read_tile(
    dataset: rasterio.DatasetReader,
    window: TileWindow,
    uint16_max: int,
    nodata_override: int | None,
) -> tuple[np.ndarray, bool]:
    """Read one window, padded with zeros past the raster edge.

    Returns the ``H x W x 3`` uint8 tile and whether every pixel is nodata (padding counts as
    nodata).
    """
    col_end = min(window.col_off + window.width, dataset.width)
    row_end = min(window.row_off + window.height, dataset.height)
    inside = Window(
        window.col_off, window.row_off, col_end - window.col_off, row_end - window.row_off
    )
    band_indexes = [1] if dataset.count == 1 else [1, 2, 3]
    pixels = dataset.read(band_indexes, window=inside)
    valid = dataset.dataset_mask(window=inside) > 0
    if nodata_override is not None and dataset.nodata is None:
        valid &= ~np.all(pixels == nodata_override, axis=0)
    rgb = to_rgb8(pixels, dataset.dtypes[0], uint16_max)
    pad_rows, pad_cols = window.height - rgb.shape[0], window.width - rgb.shape[1]
    if pad_rows or pad_cols:
        rgb = np.pad(rgb, ((0, pad_rows), (0, pad_cols), (0, 0)))
    all_nodata = not bool(valid.any())
    return rgb, all_nodata
