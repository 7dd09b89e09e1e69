"""The prepare stage's work: plan a shard's windows, then read, encode and upload its tiles.

Idempotent and resumable: a tile whose content hash equals the object already there is not
uploaded again, and the manifest is written last, atomically, so a run killed halfway leaves the
previous manifest (or none) and a rerun completes the set. A shard (``--shard I/N``) does the
same on its part of the windows (``components/shards/spec.py``) and writes its own manifest
part; the unsharded run is shard ``0/1``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from components.core import uri as uri_io
from components.core.cpus import usable_cpus
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.core.params import PrepareParams
from components.core.progress import progress_bar
from components.prepare.aoi import cells_touching, read_boundary, to_pixel_space
from components.prepare.tiles import (
    SETTINGS,
    Previous,
    TileJob,
    TileWorker,
    run_in_process_worker,
    start_process_worker,
)
from components.raster.mosaic import RasterSource, resolve_raster
from components.raster.reader import RasterInfo
from components.raster.tiling import tile_key
from components.raster.windows import WindowGrid, tile_grid
from components.shards.spec import WHOLE, ShardSpec, part_uri, shard_cells

log = get_logger(__name__)
# Windows per task sent to a worker process: large enough that the pickling round trip
# (~0.1 ms) is lost in the tile work (~10 ms each), small enough to balance the workers.
CHUNK = 16
# Below this many windows a process pool's start-up (~1 s) costs more than it saves.
MIN_WINDOWS_FOR_PROCESSES = 64
LIST_PAGE = 1000  # keys per S3 LIST request
STRETCH_WARNING = 0.05  # warn when ground pixels are this much longer one way than the other


@dataclass
class PrepareSummary:
    """Counts reported at the end of a run."""

    planned: int = 0
    uploaded: int = 0
    unchanged: int = 0
    skipped_nodata: int = 0


def scene_name(raster_uri: str, params: PrepareParams) -> str:
    name = params.scene or uri_io.basename(raster_uri).rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def worker_count(params: PrepareParams) -> int:
    return params.workers or usable_cpus()


def windows_with_data(source: RasterSource, grid: WindowGrid, params: PrepareParams) -> np.ndarray:
    """Which grid cells to tile: over a mosaic file (unless empty tiles are kept) and the AOI."""
    cells = grid.covered(source.footprints if params.skip_nodata else None)
    if params.aoi:
        boundary = read_boundary(params.aoi, source.info.crs)
        cells &= cells_touching(grid, to_pixel_space(boundary, source.info.transform))
        if not cells.any():
            raise SolarpipeError(
                f"area of interest {params.aoi} does not overlap the raster {source.uri}"
            )
        log.info("area of interest keeps %d of %d tiles", cells.sum(), cells.size)
    return cells


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


def lists_existing(total_windows: int, shard_windows: int) -> bool:
    """Find existing tiles by one listing of the prefix (``total / 1000`` requests) or by a
    HEAD per tile (``shard_windows`` requests), whichever asks S3 less: with many shards, each
    listing the whole prefix would cost more requests than the tiles themselves."""
    return math.ceil(total_windows / LIST_PAGE) <= shard_windows


def previous_hashes(tiles_prefix: str, keys: list[str], listing: bool) -> list[Previous]:
    """Each tile's MD5 already under the prefix ("" absent), or None: left to a HEAD."""
    if not listing:
        return [None] * len(keys)
    existing = {uri_io.basename(info.uri): info.etag for info in uri_io.list_objects(tiles_prefix)}
    return [existing.get(key, "") for key in keys]


def check_writable(tiles_prefix: str) -> None:
    """Fail before any work when the tiles prefix cannot be listed (bucket, endpoint, keys)."""
    next(iter(uri_io.list_objects(tiles_prefix)), None)


def bounded_map(submit: Callable[[list], Future], chunks: Iterable[list], limit: int) -> Iterator:
    """Results of ``submit(chunk)`` as they finish, at most ``limit`` chunks in flight."""
    pending: set[Future] = set()
    for chunk in chunks:
        pending.add(submit(chunk))
        if len(pending) >= limit:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    for future in pending:
        yield future.result()


def s3_environment() -> dict[str, str]:
    """The S3 and solarpipe settings of this process, for its worker processes."""
    return {name: value for name, value in os.environ.items() if name.startswith(SETTINGS)}


@contextmanager
def tile_runner(job: TileJob, windows: int, workers: int) -> Iterator[Callable[[list], Future]]:
    """``submit(chunk)`` on worker processes, or in this process for small jobs."""
    if workers > 1 and windows >= MIN_WINDOWS_FOR_PROCESSES:
        # forkserver: workers fork from a clean single-threaded server (this process may run
        # threads: an embedded S3 server, boto3 pools), after importing the tile code once.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["components.prepare.tiles"])
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=start_process_worker, initargs=(job,)
        ) as pool:
            yield lambda chunk: pool.submit(run_in_process_worker, chunk)
        return
    worker = TileWorker(job)
    try:
        yield lambda chunk: completed(worker.run, chunk)
    finally:
        worker.close()


def completed(function: Callable, argument: object) -> Future:
    future: Future = Future()
    future.set_result(function(argument))
    return future


def prepare(
    raster_uri: str,
    tiles_prefix: str,
    manifest_target: str,
    params: PrepareParams,
    shard: ShardSpec = WHOLE,
) -> PrepareSummary:
    """Tile ``shard``'s windows; write its manifest (a part when ``N > 1``) to ``manifest_target``
    (or, when that ends in ``/``, to ``shard-IIII-of-NNNN.json`` under it)."""
    source = resolve_raster(raster_uri)
    raster = source.info
    grid = tile_grid(raster.width, raster.height, params.tile_size, params.overlap, params.edge)
    with_data = windows_with_data(source, grid, params)
    windows = [window for _, _, window in grid.windows(shard_cells(with_data, shard))]
    check_writable(tiles_prefix)
    scene = scene_name(raster_uri, params)
    keys = [tile_key(scene, window) for window in windows]
    listing = lists_existing(int(with_data.sum()), len(windows))
    previous = previous_hashes(tiles_prefix, keys, listing)
    job = TileJob(
        gdal_source=raster.dataset,
        tiles_prefix=tiles_prefix,
        scene=scene,
        uint16_max=params.uint16_max,
        nodata=params.nodata,
        skip_nodata=params.skip_nodata,
        environment=s3_environment(),
    )
    workers = worker_count(params)
    warn_if_stretched(raster)
    log.info(
        "tiling %s (%dx%d px of %s, %s), shard %s: %d of %d windows of %d px, %d workers",
        raster_uri,
        raster.width,
        raster.height,
        raster.pixel_size.describe(),
        raster.crs,
        shard,
        len(windows),
        grid.shape[0] * grid.shape[1],
        params.tile_size,
        workers,
    )
    records, summary = tile_windows(job, list(zip(windows, previous, strict=True)), workers)
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
        shard=None if shard.is_whole else str(shard),
    )
    save_manifest(part_uri(manifest_target, shard, ".json"), manifest)
    return summary


def tile_windows(
    job: TileJob, items: list[tuple[TileWindow, Previous]], workers: int
) -> tuple[list[TileRecord], PrepareSummary]:
    summary = PrepareSummary(planned=len(items))
    records: list[TileRecord] = []
    chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
    with (
        progress_bar(total=len(items), desc="prepare", unit="tile") as bar,
        tile_runner(job, len(items), workers) as submit,
    ):
        for results in bounded_map(submit, chunks, 2 * workers):
            bar.update(len(results))
            for record, uploaded in results:
                if record is None:
                    summary.skipped_nodata += 1
                    continue
                records.append(record)
                summary.uploaded += uploaded
                summary.unchanged += not uploaded
    records.sort(key=lambda r: (r.window.row_off, r.window.col_off))
    return records, summary
