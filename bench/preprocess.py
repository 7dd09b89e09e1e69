"""Benchmark preprocess on 10,000 Label Studio export objects: ours vs one-at-a-time vs the bound.

The embedded S3 server runs in its own process (``solarpipe s3 serve``) so that it does not share
the client's interpreter lock. The objects (per-annotation format, built with the same code as
annotate-from-truth, one to three boxes or none) are uploaded concurrently, then, in one run:
  (a) ours: the preprocess stage's listing + concurrent fetch-and-parse (``preprocess.workers``)
      + merge, cap, split and write of annotations.json,
  (b) naive: the same listing, then one GET and parse at a time,
  (c) bound: one LIST + raw concurrent GETs (64 threads, bytes only, no parsing): what the
      server can deliver at best,
  (d) parse alone: decoding and reading every object from memory (the CPU part of (a)).
Usage: nice python bench/preprocess.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from components.core import uri as uri_io
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.core.params import Params
from components.labelstudio.annotate import publish_objects
from components.labelstudio.export_objects import (
    PixelBox,
    build_export_object,
    encode_export_object,
    export_object_uri,
    rectangle_result,
)
from components.preprocess.fetch import list_export_objects
from components.preprocess.parse import labelled_tiles, read_object
from components.preprocess.run import preprocess
from components.s3server import start_embedded_s3_process

BUCKET = "bench"
TILE = 256


def start_server() -> subprocess.Popen:
    return start_embedded_s3_process((BUCKET,))


def build_inputs(count: int) -> tuple[str, str, dict[str, bytes]]:
    tiles_prefix = f"s3://{BUCKET}/tiles"
    tiles, objects = [], {}
    prefix = f"s3://{BUCKET}/annotations"
    for index in range(count):
        key = f"bench_{index * TILE}_0.png"
        tile_uri = uri_io.join(tiles_prefix, key)
        window = TileWindow(col_off=index * TILE, row_off=0, width=TILE, height=TILE)
        transform = (0.1, 0.0, 2_600_000.0 + index * TILE * 0.1, 0.0, -0.1, 1_200_000.0)
        tiles.append(
            TileRecord(
                key=key,
                uri=tile_uri,
                window=window,
                width=TILE,
                height=TILE,
                sha256="0" * 64,
                bytes=1,
                transform=transform,
            )
        )
        boxes = [PixelBox(10 + 40 * k, 20, 40 + 40 * k, 50 + index % 7) for k in range(index % 4)]
        results = [rectangle_result(box, TILE, TILE, "solar_panel") for box in boxes]
        task_id = index + 1
        export = build_export_object(
            "annotation",
            annotation_id=task_id,
            task_id=task_id,
            image_uri=tile_uri,
            results=results,
        )
        objects[export_object_uri(prefix, "annotation", task_id, task_id)] = encode_export_object(
            export, "annotation"
        )
    manifest = Manifest(
        raster="bench.tif",
        scene="bench",
        crs="EPSG:2056",
        raster_width=TILE * count,
        raster_height=TILE,
        tile_size=TILE,
        overlap=0,
        tiles_prefix=tiles_prefix,
        tiles=tiles,
    )
    manifest_uri = f"s3://{BUCKET}/manifest.json"
    save_manifest(manifest_uri, manifest)
    return prefix, manifest_uri, objects


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def naive(prefix: str, manifest_uri: str) -> int:
    from components.core.manifest import load_manifest

    manifest = load_manifest(manifest_uri)
    readings = [read_object(uri, uri_io.read_bytes(uri)) for uri in list_export_objects(prefix)]
    tiles, _ = labelled_tiles(readings, manifest, ["solar_panel"], 2.0, False)
    return len(tiles)


def raw_bound(prefix: str) -> tuple[int, float, float]:
    object_uris, list_s = timed(list_export_objects, prefix)
    with ThreadPoolExecutor(max_workers=64) as pool:
        _, get_s = timed(lambda: list(pool.map(uri_io.read_bytes, object_uris)))
    return len(object_uris), list_s, get_s


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "30")
    server = start_server()
    try:
        prefix, manifest_uri, objects = build_inputs(args.objects)
        (_, _), upload_s = timed(publish_objects, objects, 32, "upload")
        params = Params()
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "annotations.json")
            summary, ours_s = timed(preprocess, prefix, manifest_uri, out, params)
        kept_naive, naive_s = timed(naive, prefix, manifest_uri)
        count, list_s, get_s = raw_bound(prefix)
        payloads = list(objects.items())
        _, parse_s = timed(lambda: [read_object(uri, data) for uri, data in payloads])
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert kept_naive == summary.report.tasks_seen == count == args.objects
    ours, naive_rate = count / ours_s, count / naive_s
    bound = count / (list_s + get_s)
    print(
        f"{count} export objects (per annotation, {sum(map(len, objects.values())) / count:.0f} "
        f"bytes each), embedded S3 in its own process, {os.cpu_count()} cores, "
        f"preprocess.workers={params.preprocess.workers}; upload took {upload_s:.1f} s"
    )
    print(f"{'way':<52}{'seconds':>9}{'objects/s':>11}")
    print(f"{'(a) preprocess (ours: concurrent fetch + parse)':<52}{ours_s:>9.1f}{ours:>11.0f}")
    print(f"{'(b) naive: one GET + parse at a time':<52}{naive_s:>9.1f}{naive_rate:>11.0f}")
    print(
        f"{'(c) bound: one LIST + raw GETs on 64 threads':<52}{list_s + get_s:>9.1f}{bound:>11.0f}"
    )
    print(f"{'    of which the LIST':<52}{list_s:>9.1f}")
    print(f"{'(d) parse alone, from memory':<52}{parse_s:>9.1f}{count / parse_s:>11.0f}")
    print(
        f"a/b = {ours / naive_rate:.1f}x faster than one at a time; "
        f"a/c = {ours / bound:.2f} of the server bound"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
