"""Join the manifests of prepare's shards into the manifest one process would have written."""

from __future__ import annotations

from components.core.errors import SolarpipeError
from components.core.manifest import Manifest, load_manifest, save_manifest
from components.shards.parts import check_complete, load_all, part_uris
from components.shards.spec import parse_shard

# Fields every part must share: the same raster, grid and tiles prefix.
SHARED_FIELDS = (
    "raster",
    "scene",
    "crs",
    "raster_width",
    "raster_height",
    "tile_size",
    "overlap",
    "tiles_prefix",
    "pixel_size_m",
)


def join_manifests(parts: list[Manifest], uris: list[str]) -> Manifest:
    """One manifest: the parts' tiles row by row, shard field dropped."""
    check_complete([parse_shard(part.shard or "0/1") for part in parts], uris, "manifest")
    first = parts[0]
    for part, uri in zip(parts[1:], uris[1:], strict=True):
        for field in SHARED_FIELDS:
            if getattr(part, field) != getattr(first, field):
                raise SolarpipeError(
                    f"manifest part {uri} has {field}={getattr(part, field)!r}, unlike "
                    f"{getattr(first, field)!r} in {uris[0]}: parts of different runs"
                )
    tiles = [tile for part in parts for tile in part.tiles]
    tiles.sort(key=lambda tile: (tile.window.row_off, tile.window.col_off))
    keys = [tile.key for tile in tiles]
    if len(set(keys)) != len(keys):
        raise SolarpipeError("manifest parts share tiles: their shards overlap (same run twice?)")
    return first.model_copy(update={"tiles": tiles, "shard": None})


def merge_manifests(part_values: list[str], out_uri: str) -> Manifest:
    """Read every part (all present, or nothing is written), join, write ``out_uri``."""
    uris = part_uris(part_values, ".json")
    merged = join_manifests(load_all(uris, load_manifest), uris)
    save_manifest(out_uri, merged)
    return merged
