"""Mosaics: a URI prefix of GeoTIFFs read as one raster, through a VRT built in memory.

``--raster`` takes one raster, a ``.vrt``, or a prefix ending in ``/``: every GeoTIFF under it
(local or ``s3://``) is one tile of a grid. The files must share CRS, pixel size, bands, data
type and nodata, and sit on one pixel grid; the first file that differs is named. The mosaic's
grid starts at the files' top-left corner, so a raster cut into files tiles exactly like the
uncut one. GDAL opens the VRT document directly (``/vsis3/`` sources too) and opens each file
only when a read touches it (``SourceProperties`` spare it the header), so a shard that reads
one corner of a canton touches only that corner's files.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from affine import Affine

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.s3 import parse_s3_uri
from components.raster.reader import RasterInfo, inspect_raster

GEOTIFF_SUFFIXES = (".tif", ".tiff")
# Header reads of the files run in parallel: over S3 each is a round trip or two (~20-50 ms);
# 32 at once reads a canton's ~2,000 headers in a few seconds.
HEADER_READERS = 32
# A file's origin may sit this far (in pixels) off the mosaic's grid and still count as on it.
GRID_TOLERANCE_PX = 1e-6
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16"}

Footprint = tuple[int, int, int, int]  # col_start, row_start, col_end, row_end (pixels)


@dataclass(frozen=True)
class RasterSource:
    """A ``--raster`` resolved: what GDAL opens and which pixel rectangles hold files."""

    info: RasterInfo
    footprints: tuple[Footprint, ...] | None  # None: the whole raster holds data

    @property
    def uri(self) -> str:
        return self.info.uri

    @property
    def dataset(self) -> str:
        return self.info.dataset


def is_mosaic_prefix(raster_uri: str) -> bool:
    return raster_uri.endswith("/")


def resolve_raster(raster_uri: str) -> RasterSource:
    """One raster or ``.vrt`` as is; a prefix ending in ``/`` as the mosaic of its GeoTIFFs."""
    if raster_uri.lower().endswith(".vrt"):
        info = inspect_raster(raster_uri)
        return RasterSource(info=info, footprints=vrt_footprints(uri_io.read_text(raster_uri)))
    if not is_mosaic_prefix(raster_uri):
        return RasterSource(info=inspect_raster(raster_uri), footprints=None)
    files = read_headers(list_geotiffs(raster_uri))
    document, footprints = mosaic_vrt(raster_uri, files)
    info = inspect_raster(raster_uri, gdal_source=document)
    return RasterSource(info=info, footprints=footprints)


def vrt_footprints(document: str) -> tuple[Footprint, ...] | None:
    """The destination rectangles of a VRT's first band's sources (None: none declared), so
    that shards of a ``.vrt`` mosaic are balanced by the windows its files cover."""
    try:
        band = ElementTree.fromstring(document).find("VRTRasterBand")
    except ElementTree.ParseError:
        return None
    sources = (
        [] if band is None else [child for child in band if child.find("SourceBand") is not None]
    )
    rectangles = [source.find("DstRect") for source in sources]
    if not rectangles or any(rectangle is None for rectangle in rectangles):
        return None  # a source without DstRect covers GDAL's default: plan every window
    footprints = []
    for rectangle in rectangles:
        col, row, width, height = (
            round(float(rectangle.get(name, "0"))) for name in ("xOff", "yOff", "xSize", "ySize")
        )
        footprints.append((col, row, col + width, row + height))
    return tuple(footprints)


def list_geotiffs(prefix: str) -> list[str]:
    """Every GeoTIFF under a prefix, sorted by key; none is a runtime error naming the prefix."""
    uris = [
        info.uri
        for info in uri_io.list_objects(prefix)
        if info.uri.lower().endswith(GEOTIFF_SUFFIXES)
    ]
    if not uris:
        if not uri_io.is_s3(prefix) and not Path(prefix).is_dir():
            raise NotFoundError(f"mosaic prefix does not exist: {prefix}")
        raise NotFoundError(f"no GeoTIFF (*.tif, *.tiff) under the mosaic prefix {prefix}")
    return uris


def read_headers(uris: list[str]) -> list[RasterInfo]:
    """Every file's description (headers read in parallel), in the order of ``uris``."""
    with ThreadPoolExecutor(max_workers=min(HEADER_READERS, len(uris))) as pool:
        return list(pool.map(inspect_raster, uris))


def gdal_path(uri: str) -> str:
    """The path GDAL opens for a URI: ``/vsis3/bucket/key`` or an absolute local path."""
    if uri_io.is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        return f"/vsis3/{bucket}/{key}"
    return os.path.abspath(uri)


def check_compatible(first: RasterInfo, other: RasterInfo) -> None:
    """The same CRS, pixel size, bands, data type and nodata as the mosaic's first file."""
    checks = (
        ("CRS", first.crs, other.crs),
        ("pixel size", pixel_size(first.transform), pixel_size(other.transform)),
        ("band count", first.band_count, other.band_count),
        ("data type", first.dtype, other.dtype),
        ("nodata", first.nodata, other.nodata),
    )
    for what, expected, found in checks:
        if not same_value(expected, found):
            raise SolarpipeError(
                f"mosaic file {other.uri} has {what} {found}, unlike {expected} of {first.uri}: "
                "every file of a mosaic must share CRS, pixel size, bands, data type and nodata"
            )
    if other.transform.b or other.transform.d:
        raise SolarpipeError(f"mosaic file {other.uri} is rotated: only north-up files mosaic")


def pixel_size(transform: Affine) -> tuple[float, float]:
    return (transform.a, transform.e)


def same_value(expected: object, found: object) -> bool:
    if isinstance(expected, tuple) and isinstance(found, tuple):
        return all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(expected, found, strict=True))
    if isinstance(expected, float) and isinstance(found, float):
        return expected == found or (math.isnan(expected) and math.isnan(found))
    return expected == found


def grid_offset(
    file: RasterInfo, origin: tuple[float, float], first: RasterInfo
) -> tuple[int, int]:
    """The file's top-left pixel in the mosaic grid; a file off the grid is an error."""
    col = (file.transform.c - origin[0]) / first.transform.a
    row = (file.transform.f - origin[1]) / first.transform.e
    if abs(col - round(col)) > GRID_TOLERANCE_PX or abs(row - round(row)) > GRID_TOLERANCE_PX:
        raise SolarpipeError(
            f"mosaic file {file.uri} is not on the pixel grid of {first.uri} "
            f"(offset {col:.3f}, {row:.3f} px): resample it onto the same grid first"
        )
    return round(col), round(row)


def mosaic_vrt(prefix: str, files: list[RasterInfo]) -> tuple[str, tuple[Footprint, ...]]:
    """The VRT document of the files' mosaic and each file's pixel rectangle in it."""
    first = files[0]
    for other in files[1:]:
        check_compatible(first, other)
    origin = (min(f.transform.c for f in files), max(f.transform.f for f in files))
    if first.transform.e > 0:  # south-up grids: the origin is the lowest northing
        origin = (origin[0], min(f.transform.f for f in files))
    footprints = []
    for file in files:
        col, row = grid_offset(file, origin, first)
        footprints.append((col, row, col + file.width, row + file.height))
    width = max(f[2] for f in footprints)
    height = max(f[3] for f in footprints)
    transform = Affine(first.transform.a, 0.0, origin[0], 0.0, first.transform.e, origin[1])
    document = vrt_document(first, width, height, transform, files, footprints)
    return document, tuple(footprints)


def vrt_document(
    first: RasterInfo,
    width: int,
    height: int,
    transform: Affine,
    files: list[RasterInfo],
    footprints: list[Footprint],
) -> str:
    """GDAL VRT XML: one source per file and band, plus the dataset mask where no nodata.

    Without nodata the files' own masks (all valid, or their alpha band) form the mosaic's
    mask, so the gaps between files read as nodata, exactly like nodata in one raster.
    """
    gdal_type = GDAL_TYPES[first.dtype]
    geotransform = ", ".join(repr(float(v)) for v in transform.to_gdal())
    parts = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"<SRS>{escape(first.crs)}</SRS><GeoTransform>{geotransform}</GeoTransform>",
    ]
    for band in range(1, first.band_count + 1):
        nodata = "" if first.nodata is None else f"<NoDataValue>{first.nodata!r}</NoDataValue>"
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{band}">{nodata}')
        parts.extend(vrt_sources(str(band), gdal_type, files, footprints, first.nodata))
        parts.append("</VRTRasterBand>")
    if first.nodata is None:
        parts.append('<MaskBand><VRTRasterBand dataType="Byte">')
        parts.extend(vrt_sources("mask,1", "Byte", files, footprints, None))
        parts.append("</VRTRasterBand></MaskBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def vrt_sources(
    source_band: str,
    gdal_type: str,
    files: list[RasterInfo],
    footprints: list[Footprint],
    nodata: float | None,
) -> list[str]:
    kind = "SimpleSource" if nodata is None else "ComplexSource"
    skip = "" if nodata is None else f"<NODATA>{nodata!r}</NODATA>"
    return [
        f"<{kind}>"
        f'<SourceFilename relativeToVRT="0">{escape(gdal_path(file.uri))}</SourceFilename>'
        f"<SourceBand>{source_band}</SourceBand>"
        f'<SourceProperties RasterXSize="{file.width}" RasterYSize="{file.height}" '
        f'DataType="{gdal_type}"/>'
        f'<SrcRect xOff="0" yOff="0" xSize="{file.width}" ySize="{file.height}"/>'
        f'<DstRect xOff="{col}" yOff="{row}" xSize="{file.width}" ySize="{file.height}"/>'
        f"{skip}</{kind}>"
        for file, (col, row, _, _) in zip(files, footprints, strict=True)
    ]
