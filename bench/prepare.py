"""Benchmark prepare: ours vs the naive one-window-at-a-time way vs the PNG-encoding bound.

Same synthetic raster, same embedded S3 server, one run:
  (a) ``prepare`` (read, encode and upload overlapped in a thread pool),
  (b) naive: one window at a time: read, write a temporary PNG file, upload it, next,
  (c) encode bound: PNG encoding alone of all tiles (pixels already in memory), spread over
      every core with processes.
Usage: python bench/prepare.py [--size 4096] [--tile-size 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from components.core import uri as uri_io
from components.core.params import PrepareParams
from components.prepare.run import encode_png, prepare
from components.raster.reader import open_raster, read_tile
from components.raster.tiling import plan_windows, tile_key
from components.s3server import ensure_bucket, start_embedded_s3
from components.synth.geotiff import write_scene


def naive(raster_uri: str, prefix: str, params: PrepareParams) -> int:
    with open_raster(raster_uri) as dataset:
        windows = plan_windows(dataset.width, dataset.height, params.tile_size, 0, "pad")
    with tempfile.TemporaryDirectory() as tmp:
        for window in windows:
            with open_raster(raster_uri) as dataset:
                rgb, _ = read_tile(dataset, window, params.uint16_max, None)
            path = Path(tmp) / "tile.png"
            Image.fromarray(rgb).save(path, format="PNG")
            uri_io.upload_file(path, uri_io.join(prefix, tile_key("naive", window)))
    return len(windows)


def encode_bound(raster_uri: str, params: PrepareParams) -> tuple[int, float]:
    with open_raster(raster_uri) as dataset:
        windows = plan_windows(dataset.width, dataset.height, params.tile_size, 0, "pad")
        tiles = [read_tile(dataset, w, params.uint16_max, None)[0] for w in windows]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(encode_png, tiles[: os.cpu_count()]))  # warm the workers
        started = time.perf_counter()
        list(pool.map(encode_png, tiles, chunksize=8))
        return len(tiles), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args()
    server = start_embedded_s3()
    os.environ.update(server.environment())
    ensure_bucket("bench")
    params = PrepareParams(tile_size=args.tile_size)
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(str(Path(tmp) / "scene.tif"), size=args.size, seed=1)
        raster_uri = "s3://bench/scene.tif"
        uri_io.upload_file(scene.raster_uri, raster_uri)

        started = time.perf_counter()
        summary = prepare(raster_uri, "s3://bench/ours", str(Path(tmp) / "m.json"), params)
        ours_s = time.perf_counter() - started
        ours = summary.planned / ours_s

        started = time.perf_counter()
        count = naive(raster_uri, "s3://bench/naive", params)
        naive_rate = count / (time.perf_counter() - started)

        bound_count, bound_s = encode_bound(raster_uri, params)
        bound = bound_count / bound_s
    server.stop()
    print(
        f"raster {args.size}x{args.size} px, {summary.planned} tiles of {args.tile_size} px, "
        f"{os.cpu_count()} cores, embedded S3 on loopback"
    )
    print(f"{'way':<34}{'tiles/s':>10}")
    print(f"{'(a) prepare (ours)':<34}{ours:>10.1f}")
    print(f"{'(b) naive, one window at a time':<34}{naive_rate:>10.1f}")
    print(f"{'(c) PNG encode bound, all cores':<34}{bound:>10.1f}")
    print(f"a/b = {ours / naive_rate:.2f}x   a/c = {ours / bound:.2f} of the encode bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
