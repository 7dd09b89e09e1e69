"""Benchmark shards and model a country-size run: tiles/s with 1 and 2 shards, merge costs,
detect windows/s, and from those measured figures the wall time to tile and to detect all of
Switzerland at 0.1 m on 10, 100 and 1,000 pods.

One run, one synthetic raster on the embedded S3 server (in its own process):
  (1) prepare as 1 shard, and as 2 shards in parallel processes (each one worker process),
  (2) merge-manifests of those parts, and of synthetic parts of --merge-tiles records,
  (3) merge-detections of synthetic parts of --merge-detections boxes,
  (4) detect windows/s with an (untrained) exported-shape SSDlite on this machine's CPU, or
      --detect-rate windows/s measured elsewhere (a GPU pod).
The scale model: pod rate = 1-shard rate x --pod-cores x the 2-shard efficiency (relative to
what this machine gives two busy processes in the same run: others may share it);
S3 accepts ~3,500 PUT/s per key prefix (AWS's documented figure) before it partitions.
Shard runs are timed --repeats times (best counts: the machine may be shared), including each
process's start-up, as a pod pays it.
Usage: python bench/shards.py [--size 6144] [--pod-cores 4] [--detect-rate W/S]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from components.core import uri as uri_io
from components.core.cpus import usable_cpus
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.raster.windows import plan_grid
from components.s3server import start_embedded_s3_process
from components.shards.detections import DetectionPart, save_part
from components.shards.manifests import merge_manifests
from components.shards.parts import part_uris
from components.shards.spec import ShardSpec
from components.synth.geotiff import write_scene

SWISS_KM2 = 41_000
PIXEL_M = 0.1
TILE = 256
DETECT_WINDOW, DETECT_OVERLAP = 256, 64
S3_PUTS_PER_PREFIX = 3_500
POD_START_S = 60  # image pull, scheduling, interpreter and GDAL start (typical, not measured)
MERGE_DETECTIONS_PER_WINDOW = 0.05
SPIN = 20_000_000  # iterations of the machine check's busy loop (~2 s)
DETECT_SAMPLE = 128  # windows detect runs on this CPU to measure its rate  # assumed panel density: 1 box per 20 windows


def run_shards(raster: str, tiles: str, parts: str, count: int) -> float:
    """Wall seconds of ``count`` prepare shards run as parallel processes."""
    command = [sys.executable, "-m", "components.prepare", "--raster", raster, "--tiles", tiles]
    command += ["--manifest", parts, "--set", "prepare.workers=1"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*command, "--shard", f"{index}/{count}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for index in range(count)
    ]
    if any(process.wait() for process in processes):
        raise SystemExit("a prepare shard failed")
    return time.perf_counter() - started


def synthetic_manifest_parts(folder: str, count: int, tiles: int) -> list[str]:
    per_part = tiles // count
    uris = []
    for index in range(count):
        records = [
            TileRecord(
                key=f"s_{col * TILE}_{index * TILE}.png",
                uri=f"s3://b/tiles/s_{col * TILE}_{index * TILE}.png",
                window=TileWindow(
                    col_off=col * TILE, row_off=index * TILE, width=TILE, height=TILE
                ),
                width=TILE,
                height=TILE,
                sha256=f"{col:064x}",
                bytes=120_000,
                transform=(0.1, 0.0, 2.6e6 + col * 25.6, 0.0, -0.1, 1.2e6 - index * 25.6),
            )
            for col in range(per_part)
        ]
        manifest = Manifest(
            raster="s3://b/mosaic/",
            scene="s",
            crs="EPSG:2056",
            raster_width=per_part * TILE,
            raster_height=count * TILE,
            tile_size=TILE,
            overlap=0,
            tiles_prefix="s3://b/tiles",
            tiles=records,
            shard=str(ShardSpec(index, count)),
        )
        uris.append(f"{folder}/{ShardSpec(index, count).part_name('.json')}")
        save_manifest(uris[-1], manifest)
    return uris


def synthetic_detection_parts(folder: str, count: int, detections: int) -> None:
    grid = plan_grid(200_000, 200_000, DETECT_WINDOW, DETECT_OVERLAP)
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(grid.shape[0] * grid.shape[1], detections, replace=True))
    rows, cols = np.divmod(cells, grid.shape[1])
    x = np.asarray(grid.column_offsets)[cols] + rng.uniform(20, 230, detections)
    y = np.asarray(grid.row_offsets)[rows] + rng.uniform(20, 230, detections)
    boxes = np.column_stack([x - 10, y - 6, x + 10, y + 6])
    meta = {
        "raster": "s3://b/mosaic/",
        "crs": "EPSG:2056",
        "transform": [0.1, 0.0, 2.6e6, 0.0, -0.1, 1.2e6],
        "width": 200_000,
        "height": 200_000,
        "window": DETECT_WINDOW,
        "overlap": DETECT_OVERLAP,
        "classes": ["solar_panel"],
        "nms_iou": 0.5,
        "score_threshold": 0.3,
    }
    for index, chosen in enumerate(np.array_split(np.arange(detections), count)):
        shard = ShardSpec(index, count)
        save_part(
            f"{folder}/{shard.part_name('.npz')}",
            DetectionPart(
                meta={**meta, "shard": str(shard), "windows": 0, "skipped_nodata": 0},
                boxes=boxes[chosen],
                scores=rng.uniform(0.3, 1, len(chosen)),
                labels=np.ones(len(chosen), dtype=np.int64),
                cells=cells[chosen],
            ),
        )


def spin(iterations: int) -> int:
    total = 0
    for value in range(iterations):
        total += value
    return total


def machine_efficiency() -> float:
    """What this machine gives two CPU-bound processes at once, against one (1.0: two free
    cores; 0.5: others' work leaves the equivalent of one): the yardstick of the shard figure."""
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(spin, [1, 1]))
        one = timed(lambda: pool.submit(spin, SPIN).result())
        two = timed(lambda: list(pool.map(spin, [SPIN, SPIN])))
    return one / two


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def detect_rate(raster: str, size: int, folder: str) -> float:
    """Windows/s of the detect stage on this CPU with an untrained 256-px SSDlite, over one
    shard of about ``DETECT_SAMPLE`` windows."""
    import torch

    from components.core.params import DetectParams, PrepareParams
    from components.detect.run import detect
    from components.ml.detector import build_detector
    from components.ml.scripted import ServedDetector, script_detector

    arch = "ssdlite320_mobilenet_v3_large"
    torch.manual_seed(0)
    # Untrained weights score every anchor near 0.5; a high threshold keeps the detections (and
    # their NMS) as few as a trained model's, so the windows/s measure the network.
    served = ServedDetector(
        build_detector(arch, 2, DETECT_WINDOW), arch, DETECT_WINDOW, ["solar_panel"], 0.95
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    script_detector(served).save(f"{folder}/model.pt")
    params = DetectParams(device="cpu", batch_size=8, score_threshold=0.95)
    windows = len(plan_grid(size, size, DETECT_WINDOW, DETECT_OVERLAP).windows())
    shard = ShardSpec(0, max(1, windows // DETECT_SAMPLE))
    started = time.perf_counter()
    summary = detect(raster, folder, f"{folder}/parts/", params, PrepareParams(), shard)
    return summary.windows / (time.perf_counter() - started)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:8.1f} h" if seconds >= 3600 else f"{seconds / 60:8.1f} m"


def print_scale_table(
    pod_tiles_s: float, pod_detect: float, merge_tile_s: float, merge_det_s: float
) -> None:
    pixels = SWISS_KM2 * 1e6 / PIXEL_M**2
    tiles = pixels / TILE**2
    windows = pixels / (DETECT_WINDOW - DETECT_OVERLAP) ** 2
    detections = windows * MERGE_DETECTIONS_PER_WINDOW
    print(
        f"\nSwitzerland at {PIXEL_M} m: {SWISS_KM2:,} km², {pixels:.1e} px, {tiles / 1e6:.0f} M tiles "
        f"of {TILE} px, {windows / 1e6:.0f} M detect windows ({DETECT_WINDOW} px, overlap {DETECT_OVERLAP})"
    )
    print(
        f"one pod: {pod_tiles_s:.0f} tiles/s, {pod_detect:.1f} detect "
        f"windows/s; + {POD_START_S} s pod start; each merge in one process"
    )
    merge_tiles = tiles * merge_tile_s
    merge_detect = detections * merge_det_s
    print(
        f"S3's {S3_PUTS_PER_PREFIX:,} PUT/s per prefix is reached at "
        f"{S3_PUTS_PER_PREFIX / pod_tiles_s:,.0f} pods writing one tiles prefix"
    )
    print(
        f"{'pods':>6} {'tile':>10} {'PUT/s':>9} {'merge-manifests':>16} {'detect':>10} {'merge-detections':>17}  first bottleneck"
    )
    for pods in (10, 100, 1_000):
        tile_s = POD_START_S + tiles / (pods * pod_tiles_s)
        detect_s = POD_START_S + windows / (pods * pod_detect)
        puts = pods * pod_tiles_s
        if puts > S3_PUTS_PER_PREFIX:
            bottleneck = f"S3 PUT rate per prefix ({puts / S3_PUTS_PER_PREFIX:.0f}x the limit)"
        elif merge_tiles > 0.5 * tile_s:
            bottleneck = "the manifest merge"
        else:
            bottleneck = "compute (pods)"
        print(
            f"{pods:>6} {hours(tile_s)} {puts:>9,.0f} {hours(merge_tiles):>16} {hours(detect_s)} "
            f"{hours(merge_detect):>17}  {bottleneck}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", type=int, default=6144, help="synthetic raster edge in px")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many shard runs")
    parser.add_argument("--pod-cores", type=int, default=4, help="CPUs of one prepare pod")
    parser.add_argument("--merge-tiles", type=int, default=100_000)
    parser.add_argument("--merge-detections", type=int, default=200_000)
    parser.add_argument(
        "--detect-rate",
        type=float,
        default=0.0,
        help="windows/s of one detect pod; 0 = measure on this CPU",
    )
    args = parser.parse_args()
    server = start_embedded_s3_process(("bench",))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scene = write_scene(f"{tmp}/scene.tif", size=args.size, seed=1)
            raster = "s3://bench/scene.tif"
            uri_io.upload_file(scene.raster_uri, raster)
            machine = machine_efficiency()
            one_s = two_s = float("inf")
            for repeat in range(args.repeats):  # fresh prefixes: every tile is uploaded
                one_s = min(one_s, run_shards(raster, f"s3://bench/one{repeat}", f"{tmp}/one/", 1))
                two_s = min(two_s, run_shards(raster, f"s3://bench/two{repeat}", f"{tmp}/two/", 2))
            tiles = len(uri_io.read_json(f"{tmp}/one/shard-0000-of-0001.json")["tiles"])
            merge_two_s = timed(merge_manifests, [f"{tmp}/two/"], f"{tmp}/merged.json")
            synthetic_manifest_parts(f"{tmp}/big", 20, args.merge_tiles)
            merge_big_s = timed(merge_manifests, [f"{tmp}/big/"], f"{tmp}/big.json")
            synthetic_detection_parts(f"{tmp}/det", 20, args.merge_detections)
            from components.shards.detections import merge_detections

            merge_det_s = timed(
                merge_detections, part_uris([f"{tmp}/det/"], ".npz"), f"{tmp}/det.geojson"
            )
            det_rate = args.detect_rate or detect_rate(raster, args.size, f"{tmp}/model")
    finally:
        server.terminate()
        server.wait()
    one_rate, two_rate = tiles / one_s, tiles / two_s
    efficiency = two_rate / (2 * one_rate)
    print(
        f"raster {args.size}x{args.size} px on embedded S3, {tiles} tiles of {TILE} px, {usable_cpus()} cores (shared)"
    )
    print(f"{'measured':<52}{'value':>12}")
    print(f"{'1 shard, 1 worker process: tiles/s':<52}{one_rate:>12.1f}")
    print(f"{'2 shards in parallel, 1 worker each: tiles/s':<52}{two_rate:>12.1f}")
    print(f"{'2-shard efficiency (2 shards / 2 x 1 shard)':<52}{efficiency:>12.2f}")
    print(f"{'this machine, 2 busy loops / 2 x 1 (its share)':<52}{machine:>12.2f}")
    print(f"{'2-shard efficiency relative to the machine':<52}{efficiency / machine:>12.2f}")
    print(f"{'merge-manifests, 2 parts: s':<52}{merge_two_s:>12.3f}")
    print(
        f"{f'merge-manifests, 20 parts, {args.merge_tiles:,} tiles: us/tile':<52}{merge_big_s / args.merge_tiles * 1e6:>12.1f}"
    )
    print(
        f"{f'merge-detections, 20 parts, {args.merge_detections:,} boxes: us/box':<52}{merge_det_s / args.merge_detections * 1e6:>12.1f}"
    )
    print(
        f"{'detect windows/s, one pod' + ('' if args.detect_rate else ' (this CPU, 1 process)'):<52}{det_rate:>12.1f}"
    )
    # A pod's cores are its own: scale the 1-shard rate by the shards' efficiency measured
    # against what this (shared) machine gave two busy processes in the same run.
    pod_tiles_s = one_rate * args.pod_cores * min(1.0, efficiency / machine)
    # A measured CPU rate used every core of this machine; a pod has --pod-cores of them.
    pod_detect = args.detect_rate or det_rate * args.pod_cores / usable_cpus()
    print_scale_table(
        pod_tiles_s,
        pod_detect,
        merge_big_s / args.merge_tiles,
        merge_det_s / args.merge_detections,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
