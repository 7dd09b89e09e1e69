"""Benchmark the S3 streaming dataset: images/s of ours vs local disk vs the naive way vs bounds.

The embedded S3 server runs in its own process (``solarpipe s3 serve``). ``--tiles`` PNG tiles
(256 px, textured so that they compress like aerial tiles) are uploaded to it and written to a
local folder; then, in one run, with the same DataLoader workers and batch size, one pass each:
  (a) ours: ``TileStream`` over s3:// URIs, ``--prefetch`` GETs in flight per worker,
  (b) the same ``TileStream`` over the local copies (disk instead of S3),
  (c) naive: a map-style Dataset doing one blocking GET + decode per item, no prefetch,
  (d) decode bound: the same decoding from bytes already in memory (no I/O at all),
  (e) server bound: raw concurrent GETs (64 threads, bytes only, in this process).
Every pass decodes to float tensors with targets, as training gets them (no augmentation).
The ways run in ``--repeat`` interleaved rounds and each keeps its best pass (a busy host).
Usage: nice python bench/loader.py [--tiles 512] [--workers 2] [--batch-size 16] [--prefetch 8]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage
from components.ml.dataset import FetchOptions, TileStream, decode_tile
from components.ml.transforms import apply_transform, eval_transform
from components.s3server import start_embedded_s3_process

BUCKET = "bench-loader"
TILE = 256
CLASSES = ["solar_panel"]


def start_server(bucket: str = BUCKET) -> subprocess.Popen:
    return start_embedded_s3_process((bucket,))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def textured_tile(rng: np.random.Generator) -> bytes:
    """A tile that compresses like an aerial photo: smooth fields, noise, a few rectangles."""
    y, x = np.mgrid[0:TILE, 0:TILE]
    base = 90 + 40 * np.sin(x / rng.uniform(10, 40)) * np.cos(y / rng.uniform(10, 40))
    pixels = np.stack([base + rng.normal(0, 12, base.shape) + shift for shift in (0, 15, -10)], -1)
    for _ in range(3):
        x1, y1 = rng.integers(0, TILE - 40, 2)
        pixels[y1 : y1 + 20, x1 : x1 + 30] = rng.integers(0, 255, 3)
    return png_bytes(np.clip(pixels, 0, 255).astype(np.uint8))


def build_tiles(count: int, local_dir: Path) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    rng = np.random.default_rng(0)
    payloads = {f"tile_{i:05d}.png": textured_tile(rng) for i in range(count)}
    s3_uris = {name: f"s3://{BUCKET}/tiles/{name}" for name in payloads}
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: uri_io.write_bytes(s3_uris[n], payloads[n]), payloads))
    for name, data in payloads.items():
        (local_dir / name).write_bytes(data)

    def record(image: str) -> AnnotatedImage:
        box = (10.0, 20.0, 40.0, 44.0)
        return AnnotatedImage(
            image=image, width=TILE, height=TILE, boxes=[box], labels=CLASSES, split="train"
        )

    return (
        [record(s3_uris[name]) for name in payloads],
        [record(str(local_dir / name)) for name in payloads],
    )


class NaiveTiles(Dataset):
    """What a first version usually looks like: one blocking GET and decode per item."""

    def __init__(self, records: list[AnnotatedImage], payloads: list[bytes] | None = None):
        self.records = records
        self.payloads = payloads  # bytes already in memory: the decode bound
        self.transform = eval_transform()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        record = self.records[index]
        data = self.payloads[index] if self.payloads else uri_io.read_bytes(record.image)
        image = decode_tile(data, record.image)
        boxes = torch.tensor(record.boxes, dtype=torch.float32)
        return apply_transform(self.transform, image, boxes, torch.ones(1, dtype=torch.int64))


def as_lists(batch: list) -> tuple[list, list]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def images_per_second(loader: Iterable, expected: int) -> float:
    started = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += len(batch[0])
    elapsed = time.perf_counter() - started
    assert seen == expected, f"saw {seen} images, expected {expected}"
    return seen / elapsed


def stream_loader(records, args, prefetch: int) -> DataLoader:
    stream = TileStream(records, CLASSES, args.batch_size, fetch=FetchOptions(concurrency=prefetch))
    return DataLoader(
        stream, batch_size=None, num_workers=args.workers, collate_fn=lambda batch: batch
    )


def map_loader(dataset: Dataset, args) -> DataLoader:
    return DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=as_lists
    )


def raw_get_rate(records: list[AnnotatedImage]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        total = sum(len(data) for data in pool.map(uri_io.read_bytes, (r.image for r in records)))
    assert total > 0
    return len(records) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, every way")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prefetch", type=int, default=8, help="GETs in flight per worker (a)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each way")
    args = parser.parse_args()
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s3_records, local_records = build_tiles(args.tiles, Path(tmp))
            payloads = [Path(r.image).read_bytes() for r in local_records]
            ways: list[tuple[str, Callable[[], Iterable]]] = [
                ("(a) ours: TileStream from S3, prefetch", lambda: stream_loader(s3_records, args, args.prefetch)),
                ("(b) TileStream from local disk", lambda: stream_loader(local_records, args, args.prefetch)),
                ("(c) naive: one blocking GET per item", lambda: map_loader(NaiveTiles(s3_records), args)),
                ("(d) decode bound: bytes in memory", lambda: map_loader(NaiveTiles(s3_records, payloads), args)),
            ]  # fmt: skip
            rates = dict.fromkeys((name for name, _ in ways), 0.0)
            server_rate = 0.0
            for _ in range(args.repeat):  # interleaved rounds, best of each: fair on a busy host
                for name, make in ways:
                    rates[name] = max(rates[name], images_per_second(make(), args.tiles))
                server_rate = max(server_rate, raw_get_rate(s3_records))
            mean_kb = sum(map(len, payloads)) / len(payloads) / 1024
    finally:
        server.terminate()
        server.wait(timeout=30)
    ours, local, naive, decode = rates.values()
    print(
        f"{args.tiles} PNG tiles {TILE} px ({mean_kb:.0f} KiB each), embedded S3 in its own "
        f"process, {os.cpu_count()} cores; DataLoader workers={args.workers}, "
        f"batch size {args.batch_size}, prefetch {args.prefetch} GETs per worker; "
        f"best of {args.repeat} interleaved rounds"
    )
    print(f"{'way':<46}{'images/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<46}{rate:>10.0f}")
    print(f"{'(e) server bound: raw GETs on 64 threads':<46}{server_rate:>10.0f}")
    print(
        f"a/c = {ours / naive:.2f}x the naive way; a/b = {ours / local:.2f} of local disk; "
        f"a/d = {ours / decode:.2f} of the decode bound; a/e = {ours / server_rate:.2f} of the "
        "server bound"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
