"""Benchmark the exported model: TorchScript vs eager latency, BentoML batched vs one-by-one.

In one run, on the same model (``--checkpoint``, or a randomly initialised ``--arch``: speed
does not depend on the weights) and the same seeded ``--size`` px uint8 tiles:
  latency, per batch of 1 and of ``--batch`` tiles, median of ``--repeats``:
    (a) ours: the scripted ``model.pt`` (resize, detector, rescale, threshold),
    (b) eager: the same wrapper in Python,
    (c) bound: the bare torchvision detector on tiles already at its input size;
  throughput over HTTP, ``--requests`` single-image requests to ``bentoml serve``:
    (d) ours: ``--clients`` concurrent clients (adaptive batching groups them),
    (e) naive: one client, one request after the other,
    (f) bound: the scripted model in-process at the service's batch size (no HTTP).
Usage: nice python bench/export.py [--arch ssdlite320_mobilenet_v3_large] [--size 256]
    [--batch 8] [--requests 64] [--clients 8] [--device auto]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch
from PIL import Image

from components.export.bento import write_bento_archive
from components.ml.checkpoint import load_detector_checkpoint
from components.ml.detector import build_detector
from components.ml.scripted import (
    MODEL_FILE,
    ServedDetector,
    load_scripted_model,
    resolve_device,
    script_detector,
)
from components.s3server import free_port

MODEL_NAME = "bench_detector"
SERVICE = "components.serving.service:SolarPanelDetector"
REPO_ROOT = Path(__file__).resolve().parents[1]


def median_seconds(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each run, after three warm-up calls each (TorchScript optimises on
    those); the runs take turns, so a change in machine load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for attempt in range(repeats + 3):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.inference_mode():
                run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if attempt >= 3:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def build_models(args: argparse.Namespace, folder: Path, device: torch.device):
    if args.checkpoint:
        detector, info = load_detector_checkpoint(args.checkpoint)
        arch, image_size, classes = info.spec.arch, info.spec.image_size, info.spec.classes
    else:
        arch, image_size, classes = args.arch, args.size, ["solar_panel"]
        detector = build_detector(arch, len(classes) + 1, image_size).eval()
    eager = ServedDetector(detector, arch, image_size, classes, args.threshold)
    script_detector(eager).save(str(folder / MODEL_FILE))
    scripted = load_scripted_model(str(folder / MODEL_FILE), device)
    return eager.to(device), scripted, detector.to(device), image_size, arch


def tiles(count: int, size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator)
        for _ in range(count)
    ]


def latency_table(args, eager, scripted, detector, image_size, device) -> None:
    print(f"latency (median of {args.repeats}, {args.size} px uint8 tiles, {device}):")
    print(
        f"  {'batch':>5}  {'ours (TorchScript)':>18}  {'eager':>10}  {'bound':>10}  "
        f"{'eager/ours':>10}  {'ours/bound':>10}  {'boxes/tile':>10}"
    )
    for batch_size in (1, args.batch):
        batch = tiles(batch_size, args.size)
        on_device = [t.to(device) for t in batch]
        at_input_size = [
            torch.nn.functional.interpolate(
                t.permute(2, 0, 1)[None].float() / 255, size=[image_size] * 2, mode="bilinear"
            )[0].to(device)
            for t in batch
        ]
        medians = median_seconds(
            {
                "ours": lambda b=on_device: scripted(b),
                "eager": lambda b=on_device: eager(b),
                "bound": lambda b=at_input_size: detector(b),
            },
            args.repeats,
            device,
        )
        ours, naive, bound = medians["ours"], medians["eager"], medians["bound"]
        with torch.inference_mode():
            detections = sum(len(out["boxes"]) for out in scripted(on_device)) / batch_size
        print(
            f"  {batch_size:>5}  {ours * 1000:>15.1f} ms  {naive * 1000:>7.1f} ms  "
            f"{bound * 1000:>7.1f} ms  {naive / ours:>10.2f}  {ours / bound:>10.2f}  "
            f"{detections:>10.0f}"
        )


def start_service(archive: Path, home: Path) -> tuple[subprocess.Popen, str]:
    environment = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    subprocess.run(
        [bentoml, "models", "import", str(archive)],
        env=environment,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [bentoml, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**environment, "SOLARPIPE_BENTO_MODEL": f"{MODEL_NAME}:latest"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("bentoml serve exited")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return server, url
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("bentoml serve did not become ready")


def png(tile: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tile.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


class Client:
    """Sends single-image requests to the service from a pool of threads (a session each)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sessions = threading.local()

    def send(self, payload: bytes) -> int:
        if not hasattr(self.sessions, "session"):
            self.sessions.session = requests.Session()
        response = self.sessions.session.post(
            f"{self.url}/detect", files=[("images", ("t.png", payload, "image/png"))], timeout=600
        )
        return response.status_code

    def seconds(self, payloads: list[bytes], clients: int) -> tuple[float, int]:
        """Wall time to send all payloads with ``clients`` concurrent clients; non-200 count."""
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            statuses = list(pool.map(self.send, payloads))
        return time.perf_counter() - started, sum(status != 200 for status in statuses)


def serving_table(args, folder: Path, scripted, device: torch.device, arch: str) -> None:
    from components.serving.service import MAX_BATCH_SIZE, MAX_LATENCY_MS

    archive_started = time.perf_counter()
    tag, archive = write_bento_archive(
        folder / MODEL_FILE, folder, MODEL_NAME, "tar.gz", {"arch": arch}, {"bench": True}
    )
    archive_s = time.perf_counter() - archive_started
    server, url = start_service(archive, folder / "home")
    client = Client(url)
    payload_tiles = tiles(args.requests, args.size)
    payloads = [png(t) for t in payload_tiles]
    group = [t.to(device) for t in payload_tiles[:MAX_BATCH_SIZE]]
    totals = {"ours": 0.0, "naive": 0.0, "bound": 0.0}
    refused = {"ours": 0, "naive": 0}
    rounds = 4  # the three take turns, so a change in machine load hits all of them alike
    try:
        client.seconds(payloads[: args.clients], args.clients)  # warm-up
        for round_index in range(rounds):
            chunk = payloads[round_index::rounds]
            for name, clients in (("ours", args.clients), ("naive", 1)):
                seconds, errors = client.seconds(chunk, clients)
                totals[name] += seconds
                refused[name] += errors
            per_batch = median_seconds({"bound": lambda: scripted(group)}, 3, device)["bound"]
            totals["bound"] += len(chunk) / MAX_BATCH_SIZE * per_batch
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    rate = {name: args.requests / seconds for name, seconds in totals.items()}
    print(
        f"BentoML {tag} ({archive.stat().st_size / 1e6:.1f} MB tar.gz written in "
        f"{archive_s:.1f} s; max_batch_size {MAX_BATCH_SIZE}, max_latency_ms {MAX_LATENCY_MS}), "
        f"{args.requests} requests of one {args.size} px PNG:"
    )
    print(
        f"  ours: {args.clients} concurrent clients (adaptive batching): "
        f"{rate['ours']:7.1f} images/s  ({refused['ours']} refused)"
    )
    print(
        f"  naive: one request after the other:              {rate['naive']:7.1f} images/s"
        f"  ({refused['naive']} refused)"
    )
    print(
        f"  bound: TorchScript in-process, batch {MAX_BATCH_SIZE:>2}:           "
        f"{rate['bound']:7.1f} images/s"
    )
    print(
        f"  ratios: ours/naive {rate['ours'] / rate['naive']:.2f}, "
        f"ours/bound {rate['ours'] / rate['bound']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="", help="a train-stage model.ckpt (optional)")
    parser.add_argument("--arch", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256, help="tile size and model input size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threshold", type=float, default=0.3, help="score threshold inside model.pt"
    )
    parser.add_argument("--skip-serving", action="store_true", help="latency table only")
    args = parser.parse_args()
    device = resolve_device(args.device, "--device")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        eager, scripted, detector, image_size, arch = build_models(args, folder, device)
        print(
            f"model: {arch} at {image_size} px, model.pt "
            f"{(folder / MODEL_FILE).stat().st_size / 1e6:.1f} MB"
        )
        latency_table(args, eager, scripted, detector, image_size, device)
        if not args.skip_serving:
            serving_table(args, folder, scripted, device, arch)


if __name__ == "__main__":
    main()
