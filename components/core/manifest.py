"""The prepare manifest: every tile's key, pixel window, size, checksum, geotransform and CRS,
and the raster's pixel size on the ground (``pixel_size_m``; ``null`` in older manifests).

Written by prepare, read by preprocess, annotate-from-truth and the DVC graph. Its bytes are
stable for identical input (sorted keys, no timestamps) so DVC hashes content.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.core import uri as uri_io
from components.core.errors import SolarpipeError

MANIFEST_VERSION = 1


class TileWindow(BaseModel):
    """A pixel window of the source raster (may reach past its edge when padded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    col_off: int
    row_off: int
    width: int
    height: int


class TileRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str  # file name under the tiles prefix: <scene>_<col>_<row>.png
    uri: str  # full URI of the tile
    window: TileWindow
    width: int
    height: int
    sha256: str
    bytes: int
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = MANIFEST_VERSION
    raster: str
    scene: str
    crs: str  # WKT or "EPSG:n"
    raster_width: int
    raster_height: int
    tile_size: int
    overlap: int
    tiles_prefix: str
    tiles: list[TileRecord]
    pixel_size_m: float | None = Field(None, gt=0)  # metres per pixel (mean of x and y)
    shard: str | None = None  # "I/N" in a shard's part; absent in a whole (or merged) manifest


def load_manifest(manifest_uri: str) -> Manifest:
    try:
        return Manifest.model_validate_json(uri_io.read_bytes(manifest_uri))
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise SolarpipeError(
                f"not valid JSON: {manifest_uri} ({exc.errors()[0]['msg']})"
            ) from exc
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SolarpipeError(
            f"not a prepare manifest: {manifest_uri} ({where}: {first['msg']})"
        ) from exc


def manifest_bytes(manifest: Manifest) -> bytes:
    """Sorted keys, two-space indent, trailing newline; a whole manifest has no shard field."""
    exclude = {"shard"} if manifest.shard is None else set()
    return uri_io.dump_json_large(manifest.model_dump(mode="json", exclude=exclude))


def save_manifest(manifest_uri: str, manifest: Manifest) -> None:
    uri_io.write_bytes(manifest_uri, manifest_bytes(manifest), content_type="application/json")
