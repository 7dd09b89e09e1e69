"""Benchmark serving: images/s and p50/p95 latency over HTTP with 1, 8 and 32 clients, against
the TorchScript model in-process, on the same tiles.

In one run, on the same model (``--checkpoint``, or a randomly initialised ``--arch``: speed does
not depend on the weights) and the same ``--requests`` PNG tiles cut from a synthetic town scene:
  in-process, no HTTP (decode the PNG, run ``model.pt``):
    (a) one tile per call: the naive way,
    (b) ``--max-batch`` tiles per call: the bound for batched serving;
  over HTTP to ``solarpipe serve`` (the serving image's code path; adaptive batching), one tile
  per request, every answer must be 200:
    (c) 1, 8 and 32 concurrent clients (``--clients``).
The configurations take turns (``--rounds``), so a change in machine load hits them alike.
Ratios: each row's throughput over one HTTP client's (the gain of serving concurrently), and
over the in-process bound (what HTTP, decoding and batching cost).
Usage: nice python bench/serve.py [--checkpoint C | --arch A --size 256] [--requests 96]
    [--clients 1,8,32] [--workers 1] [--max-batch 8] [--rounds 3]
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
        arch, image_size, classes = info.spec.arch, info.spec.image_size, info.spec.classes
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


# One measured call: (HTTP status, seconds, images it carried).
Call = tuple[int, float, int]


def in_process(model: torch.jit.ScriptModule, batch: int) -> Callable[[list[bytes]], list[Call]]:
    """``batch`` tiles per call to the model in this process, PNG decoding included."""

    def run(tiles: list[bytes]) -> list[Call]:
        calls = []
        with torch.inference_mode():
            for first in range(0, len(tiles), batch):
                group = tiles[first : first + batch]
                started = time.perf_counter()
                model([decoded(tile) for tile in group])
                calls.append((200, time.perf_counter() - started, len(group)))
        return calls

    return run


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

    def concurrent(self, clients: int) -> Callable[[list[bytes]], list[Call]]:
        """One tile per request, ``clients`` requests in flight at once."""

        def run(tiles: list[bytes]) -> list[Call]:
            with ThreadPoolExecutor(max_workers=clients) as pool:
                return [(status, seconds, 1) for status, seconds in pool.map(self.post, tiles)]

        return run


def measure(
    configurations: dict[str, Callable[[list[bytes]], list[Call]]], tiles: list[bytes], rounds: int
) -> list[Row]:
    """Every configuration sends every ``rounds``-th tile in turn, ``rounds`` times over, so a
    change in machine load hits every row alike; after one warm-up call each."""
    for run in configurations.values():
        run(tiles[:32])
    elapsed = dict.fromkeys(configurations, 0.0)
    calls: dict[str, list[Call]] = {name: [] for name in configurations}
    for round_index in range(rounds):
        chunk = tiles[round_index::rounds]
        for name, run in configurations.items():
            started = time.perf_counter()
            calls[name] += run(chunk)
            elapsed[name] += time.perf_counter() - started
    return [
        Row(
            name,
            sum(images for _, _, images in calls[name]) / elapsed[name],
            percentile([seconds for _, seconds, _ in calls[name]], 0.5) * 1000,
            percentile([seconds for _, seconds, _ in calls[name]], 0.95) * 1000,
            sum(status != 200 for status, _, _ in calls[name]),
        )
        for name in configurations
    ]


def main() -> None:
    # a SIGTERM (timeout, Ctrl-C of a parent) unwinds, so the server started below is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="", help="a train-stage model.ckpt (optional)")
    parser.add_argument("--arch", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256, help="tile size and model input size")
    parser.add_argument("--requests", type=int, default=96, help="tiles each configuration sends")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients of the HTTP rows")
    parser.add_argument("--workers", type=int, default=1, help="SOLARPIPE_SERVE_WORKERS")
    parser.add_argument("--max-batch", type=int, default=8, help="SOLARPIPE_SERVE_MAX_BATCH")
    parser.add_argument("--rounds", type=int, default=3, help="turns each configuration takes")
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
            f"max batch {args.max_batch}; {args.rounds} rounds, configurations taking turns"
        )
        server, url = start_server(archive, environment)
        try:
            clients = Clients(url)
            configurations = {
                "in-process, 1 tile per call": in_process(model, 1),
                f"in-process, {args.max_batch} tiles per call": in_process(model, args.max_batch),
            }
            for count in client_counts:
                name = f"HTTP, {count} concurrent client{'s' if count > 1 else ''}"
                configurations[name] = clients.concurrent(count)
            rows = measure(configurations, tiles, args.rounds)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    print_rows(rows)


def print_rows(rows: list[Row]) -> None:
    """Each row against one HTTP client (the gain of concurrency) and the batched bound."""
    one_client, bound = rows[2], rows[1]
    print(f"  {'':<32} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'non-200':>8}  ratios")
    for row in rows:
        print(
            f"  {row.name:<32} {row.images_per_s:>9.1f} {row.p50_ms:>8.0f} {row.p95_ms:>8.0f} "
            f"{row.failed:>8}  {row.images_per_s / one_client.images_per_s:.2f}x one HTTP "
            f"client, {row.images_per_s / bound.images_per_s:.2f} of the batched bound"
        )
    print("latency is per call: a batch in-process, one request over HTTP")


if __name__ == "__main__":
    main()
