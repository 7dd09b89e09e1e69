"""The prepare stage's work: plan windows, then read, encode and upload tiles in parallel.

Idempotent and resumable: existing tiles whose content hash equals the new tile's are not
uploaded again, and the manifest is written last, atomically, so a run killed halfway leaves the
previous manifest (or none) and a rerun completes the set.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from PIL import Image

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.core.params import PrepareParams
from components.core.progress import progress_bar
from components.prepare.aoi import read_boundary, to_pixel_space, windows_touching
from components.raster.reader import (
    RasterInfo,
    as_rasterio_window,
    inspect_raster,
    open_raster,
    read_tile,
)
from components.raster.tiling import plan_windows, tile_key

log = get_logger(__name__)
PNG_COMPRESS_LEVEL = 6
STRETCH_WARNING = 0.05  # warn when ground pixels are this much longer one way than the other


@dataclass
class PrepareSummary:
    """Counts reported at the end of a run."""

    planned: int = 0
    uploaded: int = 0
    unchanged: int = 0
    skipped_nodata: int = 0


def encode_png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def scene_name(raster_uri: str, params: PrepareParams) -> str:
    name = params.scene or uri_io.basename(raster_uri).rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def worker_count(params: PrepareParams) -> int:
    return params.workers or min(32, 2 * (os.cpu_count() or 1) + 2)


def select_windows(raster: RasterInfo, params: PrepareParams) -> list[TileWindow]:
    windows = plan_windows(
        raster.width, raster.height, params.tile_size, params.overlap, params.edge
    )
    if not params.aoi:
        return windows
    boundary = to_pixel_space(read_boundary(params.aoi, raster.crs), raster.transform)
    kept = windows_touching(windows, boundary)
    if not kept:
        raise SolarpipeError(
            f"area of interest {params.aoi} does not overlap the raster {raster.uri}"
        )
    log.info("area of interest keeps %d of %d tiles", len(kept), len(windows))
    return kept


def warn_if_stretched(raster: RasterInfo) -> None:
    """Tiles of pixels that are not square on the ground show panels stretched."""
    size = raster.pixel_size
    if abs(size.x_m / size.y_m - 1) > STRETCH_WARNING:
        log.warning(
            "%s has pixels of %s on the ground: the tiles show panels stretched by %.2f "
            "(reproject it to square pixels to train on it)",
            raster.uri,
            size.describe(),
            size.x_m / size.y_m,
        )


def existing_tile_hashes(tiles_prefix: str) -> dict[str, str]:
    """Tile key → MD5 of the tiles already under the prefix (one paginated listing)."""
    return {uri_io.basename(info.uri): info.etag for info in uri_io.list_objects(tiles_prefix)}


class TileWriter:
    """Reads, encodes and uploads one tile; thread-safe (each call opens its own dataset)."""

    def __init__(
        self,
        raster: RasterInfo,
        params: PrepareParams,
        tiles_prefix: str,
        scene: str,
        existing: dict[str, str],
    ) -> None:
        self.raster = raster
        self.params = params
        self.tiles_prefix = tiles_prefix
        self.scene = scene
        self.existing = existing

    def __call__(self, window: TileWindow) -> tuple[TileRecord | None, bool]:
        """The tile's manifest record (None when all nodata) and whether it was uploaded."""
        with open_raster(self.raster.uri) as dataset:
            rgb, all_nodata = read_tile(dataset, window, self.params.uint16_max, self.params.nodata)
            transform = dataset.window_transform(as_rasterio_window(window))
        if all_nodata and self.params.skip_nodata:
            return None, False
        png = encode_png(rgb)
        key = tile_key(self.scene, window)
        tile_uri = uri_io.join(self.tiles_prefix, key)
        uploaded = self.existing.get(key) != hashlib.md5(png).hexdigest()
        if uploaded:
            uri_io.write_bytes(tile_uri, png, content_type="image/png")
        record = TileRecord(
            key=key,
            uri=tile_uri,
            window=window,
            width=window.width,
            height=window.height,
            sha256=hashlib.sha256(png).hexdigest(),
            bytes=len(png),
            transform=tuple(transform)[:6],
        )
        return record, uploaded


def bounded_map(function, items: Iterable, workers: int) -> Iterator:
    """``map`` over a thread pool with at most ``2 * workers`` tasks in flight (bounded memory)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
        pending: set[Future] = set()
        for item in items:
            pending.add(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in pending:
            yield future.result()


def check_writable(tiles_prefix: str) -> None:
    """Fail before any work when the tiles prefix cannot be listed (bucket, endpoint, keys)."""
    next(iter(uri_io.list_objects(tiles_prefix)), None)


def prepare(
    raster_uri: str, tiles_prefix: str, manifest_uri: str, params: PrepareParams
) -> PrepareSummary:
    raster = inspect_raster(raster_uri)
    windows = select_windows(raster, params)
    check_writable(tiles_prefix)
    existing = existing_tile_hashes(tiles_prefix)
    scene = scene_name(raster_uri, params)
    writer = TileWriter(raster, params, tiles_prefix, scene, existing)
    summary = PrepareSummary(planned=len(windows))
    records: list[TileRecord] = []
    workers = worker_count(params)
    warn_if_stretched(raster)
    log.info(
        "tiling %s (%dx%d px of %s, %s) into %d windows of %d px with %d workers",
        raster_uri,
        raster.width,
        raster.height,
        raster.pixel_size.describe(),
        raster.crs,
        len(windows),
        params.tile_size,
        workers,
    )
    with progress_bar(total=len(windows), desc="prepare", unit="tile") as bar:
        for record, uploaded in bounded_map(writer, windows, workers):
            bar.update(1)
            if record is None:
                summary.skipped_nodata += 1
                continue
            records.append(record)
            summary.uploaded += uploaded
            summary.unchanged += not uploaded
    records.sort(key=lambda r: (r.window.row_off, r.window.col_off))
    manifest = Manifest(
        raster=raster_uri,
        scene=scene,
        crs=raster.crs,
        raster_width=raster.width,
        raster_height=raster.height,
        tile_size=params.tile_size,
        overlap=params.overlap,
        tiles_prefix=tiles_prefix.rstrip("/"),
        tiles=records,
        pixel_size_m=float(f"{raster.pixel_size.mean_m:.6g}"),
    )
    save_manifest(manifest_uri, manifest)
    return summary
