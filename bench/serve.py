"""Benchmark serving: images/s and p50/p95 latency over HTTP with 1, 8 and 32 clients, against
the TorchScript model in-process, on the same tiles.

In one run, on the same model (``--checkpoint``, or a randomly initialised ``--arch``: speed does
not depend on the weights) and the same PNG tiles cut from a synthetic town scene:
  in-process, no HTTP (decode the PNG, run ``model.pt``):
    (a) one tile per call: the naive bound for one client,
    (b) ``--max-batch`` tiles per call: the bound for batched serving;
  over HTTP to ``solarpipe serve`` (the serving image's code path; adaptive batching):
    (c) 1, 8 and 32 concurrent clients (``--clients``), one tile per request,
        ``--requests`` requests per row; every answer must be 200.
Ratios: each row's throughput over one client's (the gain of serving concurrently), and over
the in-process bound (what HTTP, decoding and batching cost).
Usage: nice python bench/serve.py [--checkpoint C | --arch A --size 256] [--requests 96]
    [--clients 1,8,32] [--workers 1] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from components.export.bento import write_bento_archive
from components.ml.checkpoint import load_detector_checkpoint
from components.ml.detector import build_detector
from components.ml.scripted import MODEL_FILE, ServedDetector, load_scripted_model, script_detector
from components.s3server import free_port
from components.synth.scene import generate_scene

MODEL_NAME = "bench_detector"
STARTUP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Row:
    """One measured configuration: throughput, latency percentiles, refused requests."""

    name: str
    images_per_s: float
    p50_ms: float
    p95_ms: float
    failed: int = 0


def percentile(values: Sequence[float], share: float) -> float:
    return float(np.percentile(np.asarray(values), share * 100))


def scene_tiles(count: int, size: int) -> list[bytes]:
    """``count`` PNG tiles of ``size`` px cut from synthetic town scenes (seeded)."""
    per_side = 4
    tiles: list[bytes] = []
    seed = 0
    while len(tiles) < count:
        image = generate_scene(size * per_side, seed=seed).image
        for row in range(per_side):
            for column in range(per_side):
                window = image[row * size : (row + 1) * size, column * size : (column + 1) * size]
                buffer = io.BytesIO()
                Image.fromarray(window).save(buffer, format="PNG")
                tiles.append(buffer.getvalue())
        seed += 1
    return tiles[:count]


def write_model(args: argparse.Namespace, folder: Path) -> tuple[Path, str, int]:
    """``model.pt`` and its BentoML archive in ``folder``; returns (archive, arch, image size)."""
    if args.checkpoint:
        detector, info = load_detector_checkpoint(args.checkpoint)
        arch, image_size, classes = info.arch, info.image_size, info.classes
    else:
        arch, image_size, classes = args.arch, args.size, ["solar_panel"]
        torch.manual_seed(0)
        detector = build_detector(arch, len(classes) + 1, image_size).eval()
    served = ServedDetector(detector, arch, image_size, classes, args.threshold)
    script_detector(served).save(str(folder / MODEL_FILE))
    _, archive = write_bento_archive(
        folder / MODEL_FILE, folder, MODEL_NAME, "tar.gz", {"arch": arch}, {"bench": True}
    )
    return archive, arch, image_size


def decoded(tile: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(tile)).convert("RGB")))


def in_process_rows(model: torch.jit.ScriptModule, tiles: list[bytes], batch: int) -> list[Row]:
    """(a) one tile per call and (b) ``batch`` tiles per call, PNG decoding included."""
    rows = []
    for size, name in ((1, "in-process, 1 tile per call"), (batch, f"in-process, batch {batch}")):
        with torch.inference_mode():
            model([decoded(tile) for tile in tiles[:size]])  # warm-up (TorchScript profiles)
            model([decoded(tile) for tile in tiles[:size]])
            latencies = []
            started = time.perf_counter()
            for first in range(0, len(tiles) - size + 1, size):
                call_started = time.perf_counter()
                model([decoded(tile) for tile in tiles[first : first + size]])
                latencies.append(time.perf_counter() - call_started)
            elapsed = time.perf_counter() - started
        images = len(latencies) * size
        rows.append(
            Row(
                name,
                images / elapsed,
                percentile(latencies, 0.5) * 1000,
                percentile(latencies, 0.95) * 1000,
            )
        )
    return rows


def start_server(archive: Path, environment: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``python -m components.serving`` (what the image runs) on a free loopback port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "components.serving", "--model", str(archive), "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return server, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("the server did not become ready")


class Clients:
    """Single-tile requests from a pool of threads, a keep-alive session per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()

    def post(self, tile: bytes) -> tuple[int, float]:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        started = time.perf_counter()
        response = self.local.session.post(
            f"{self.url}/detect", files=[("images", ("tile.png", tile, "image/png"))], timeout=600
        )
        return response.status_code, time.perf_counter() - started

    def rows(self, tiles: list[bytes], client_counts: list[int], rounds: int) -> list[Row]:
        """Each client count sends every ``rounds``-th tile in turn, ``rounds`` times over, so
        a change in machine load hits every row alike."""
        self.run(tiles[: max(client_counts) * 2], max(client_counts))  # warm-up
        elapsed = dict.fromkeys(client_counts, 0.0)
        results: dict[int, list[tuple[int, float]]] = {count: [] for count in client_counts}
        for round_index in range(rounds):
            chunk = tiles[round_index::rounds]
            for count in client_counts:
                started = time.perf_counter()
                results[count] += self.run(chunk, count)
                elapsed[count] += time.perf_counter() - started
        return [
            Row(
                f"HTTP, {count} concurrent client{'s' if count > 1 else ''}",
                len(results[count]) / elapsed[count],
                percentile([seconds for _, seconds in results[count]], 0.5) * 1000,
                percentile([seconds for _, seconds in results[count]], 0.95) * 1000,
                sum(status != 200 for status, _ in results[count]),
            )
            for count in client_counts
        ]

    def run(self, tiles: list[bytes], clients: int) -> list[tuple[int, float]]:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(self.post, tiles))


def http_rows(
    archive: Path, tiles: list[bytes], client_counts: list[int], environment: dict[str, str]
) -> list[Row]:
    server, url = start_server(archive, environment)
    try:
        return Clients(url).rows(tiles, client_counts, rounds=3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def print_rows(rows: list[Row], reference: Callable[[Row], str]) -> None:
    print(f"  {'':<32} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'non-200':>8}  ratios")
    for row in rows:
        print(
            f"  {row.name:<32} {row.images_per_s:>9.1f} {row.p50_ms:>8.0f} {row.p95_ms:>8.0f} "
            f"{row.failed:>8}  {reference(row)}"
        )


def main() -> None:
    # a SIGTERM (timeout, Ctrl-C of a parent) unwinds, so the server started below is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="", help="a train-stage model.ckpt (optional)")
    parser.add_argument("--arch", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256, help="tile size and model input size")
    parser.add_argument("--requests", type=int, default=96, help="requests per HTTP row")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients per HTTP row")
    parser.add_argument("--workers", type=int, default=1, help="SOLARPIPE_SERVE_WORKERS")
    parser.add_argument("--max-batch", type=int, default=8, help="SOLARPIPE_SERVE_MAX_BATCH")
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args()
    client_counts = [int(count) for count in args.clients.split(",")]
    environment = {
        **os.environ,
        "SOLARPIPE_SERVE_WORKERS": str(args.workers),
        "SOLARPIPE_SERVE_MAX_BATCH": str(args.max_batch),
    }
    environment.pop("BENTOML_HOME", None)
    tiles = scene_tiles(args.requests, args.size)
    print(
        f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} CPUs, "
        f"{len(tiles)} PNG tiles of {args.size} px "
        f"({sum(map(len, tiles)) / len(tiles) / 1000:.0f} kB on average)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        archive, arch, image_size = write_model(args, Path(tmp))
        model = load_scripted_model(str(Path(tmp) / MODEL_FILE))
        print(
            f"model: {arch} at {image_size} px; server: {args.workers} worker(s), "
            f"max batch {args.max_batch}"
        )
        bound = in_process_rows(model, tiles, args.max_batch)
        rows = http_rows(archive, tiles, client_counts, environment)
    one_client = rows[0].images_per_s
    print_rows(bound, lambda row: "")
    print_rows(
        rows,
        lambda row: (
            f"{row.images_per_s / one_client:.2f}x one client, "
            f"{row.images_per_s / bound[1].images_per_s:.2f} of the batched bound"
        ),
    )


if __name__ == "__main__":
    main()
