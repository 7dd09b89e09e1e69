"""Benchmark the S3 streaming dataset: images/s of ours vs local disk vs the naive way vs bounds.

The embedded S3 server runs in its own process (``solarpipe s3 serve``). ``--tiles`` PNG tiles
(256 px, textured so that they compress like aerial tiles) are uploaded to it and written to a
local folder; then, in one run, with the same DataLoader workers and batch size, one pass each:
  (a) ours: ``TileStream`` over s3:// URIs, ``--prefetch`` GETs in flight per worker,
  (b) the same ``TileStream`` over the local copies (disk instead of S3),
  (c) naive: a map-style Dataset doing one blocking GET + decode per item, no prefetch,
  (d) decode bound: the same decoding from bytes already in memory (no I/O at all),
  (e) server bound: raw concurrent GETs (64 threads, bytes only, in this process).
Loopback S3 answers in about a millisecond, real S3 in tens: (a), (c) and (e) run again
through a proxy process that holds every request ``--latency-ms`` before passing it on.
Every pass decodes to float tensors with targets, as training gets them (no augmentation).
The ways run in ``--repeat`` interleaved rounds and each keeps its best pass (a busy host).
Usage: nice python bench/loader.py [--tiles 512] [--workers 2] [--batch-size 16] [--prefetch 8]
       [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage
from components.ml.dataset import FetchOptions, TileStream, decode_tile
from components.ml.transforms import apply_transform, eval_transform
from components.s3server import LOOPBACK, free_port, start_embedded_s3_process

BUCKET = "bench-loader"
TILE = 256
CLASSES = ["solar_panel"]


def start_server(bucket: str = BUCKET) -> subprocess.Popen:
    return start_embedded_s3_process((bucket,))


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float):
    try:
        while data := await reader.read(1 << 16):
            if delay_s:
                await asyncio.sleep(delay_s)  # each request waits: a round trip to a far server
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def serve_latency_proxy(port: int, upstream_port: int, delay_s: float) -> None:
    """TCP proxy on ``port`` to the S3 server that delays every client→server chunk."""

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, upstream_port)
        await asyncio.gather(_forward(reader, up_writer, delay_s), _forward(up_reader, writer, 0.0))

    async def serve() -> None:
        server = await asyncio.start_server(connect, LOOPBACK, port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def start_latency_proxy(latency_ms: float) -> tuple[multiprocessing.Process, str]:
    upstream_port = urlparse(os.environ["AWS_ENDPOINT_URL"]).port
    port = free_port()
    proxy = multiprocessing.get_context("spawn").Process(
        target=serve_latency_proxy, args=(port, upstream_port, latency_ms / 1000), daemon=True
    )
    proxy.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1))
            break
        except OSError:
            time.sleep(0.1)
    return proxy, f"http://{LOOPBACK}:{port}"


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
    parser.add_argument("--latency-ms", type=float, default=20, help="added per request; 0 = off")
    args = parser.parse_args()
    server = start_server()
    direct = os.environ["AWS_ENDPOINT_URL"]
    proxy, delayed = start_latency_proxy(args.latency_ms) if args.latency_ms else (None, "")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s3_records, local_records = build_tiles(args.tiles, Path(tmp))
            payloads = [Path(r.image).read_bytes() for r in local_records]

            def ours() -> DataLoader:
                return stream_loader(s3_records, args, args.prefetch)

            def naive() -> DataLoader:
                return map_loader(NaiveTiles(s3_records), args)

            ways: list[tuple[str, str, Callable[[], Iterable]]] = [
                ("(a) ours: TileStream from S3, prefetch", direct, ours),
                ("(b) TileStream from local disk", direct, lambda: stream_loader(local_records, args, args.prefetch)),
                ("(c) naive: one blocking GET per item", direct, naive),
                ("(d) decode bound: bytes in memory", direct, lambda: map_loader(NaiveTiles(s3_records, payloads), args)),
            ]  # fmt: skip
            if delayed:
                ways += [
                    (f"(a) ours, +{args.latency_ms:g} ms per request", delayed, ours),
                    (f"(c) naive, +{args.latency_ms:g} ms per request", delayed, naive),
                ]
            rates = dict.fromkeys((name for name, _, _ in ways), 0.0)
            servers = dict.fromkeys((direct, delayed) if delayed else (direct,), 0.0)
            for _ in range(args.repeat):  # interleaved rounds, best of each: fair on a busy host
                for name, endpoint, make in ways:
                    os.environ["AWS_ENDPOINT_URL"] = endpoint
                    rates[name] = max(rates[name], images_per_second(make(), args.tiles))
                for endpoint in servers:
                    os.environ["AWS_ENDPOINT_URL"] = endpoint
                    servers[endpoint] = max(servers[endpoint], raw_get_rate(s3_records))
            mean_kb = sum(map(len, payloads)) / len(payloads) / 1024
    finally:
        if proxy is not None:
            proxy.terminate()
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{args.tiles} PNG tiles {TILE} px ({mean_kb:.0f} KiB each), embedded S3 in its own "
        f"process, {os.cpu_count()} cores; DataLoader workers={args.workers}, "
        f"batch size {args.batch_size}, prefetch {args.prefetch} GETs per worker; "
        f"best of {args.repeat} interleaved rounds"
    )
    print(f"{'way':<46}{'images/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<46}{rate:>10.0f}")
    print(f"{'(e) server bound: raw GETs on 64 threads':<46}{servers[direct]:>10.0f}")
    if delayed:
        print(
            f"{f'(e) server bound, +{args.latency_ms:g} ms per request':<46}{servers[delayed]:>10.0f}"
        )
    a, b, c, d = list(rates.values())[:4]
    print(
        f"a/c = {a / c:.2f}x the naive way; a/b = {a / b:.2f} of local disk; "
        f"a/d = {a / d:.2f} of the decode bound; a/e = {a / servers[direct]:.2f} of the server bound"
    )
    if delayed:
        a_far, c_far = list(rates.values())[4:]
        print(
            f"with +{args.latency_ms:g} ms per request: a/c = {a_far / c_far:.2f}x the naive way; "
            f"a/e = {a_far / servers[delayed]:.2f} of the server bound"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
