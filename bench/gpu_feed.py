"""Benchmark whether the S3 stream keeps a training accelerator fed: images/s of training steps
fed by ``TileStream`` from S3 vs the same steps on batches already in memory.

The embedded S3 server runs in its own process (``solarpipe s3 serve``) with ``--tiles`` PNG
tiles. In one run, after ``--warmup`` steps each:
  (a) ours: ``--steps`` training steps fed by the S3 ``TileStream`` (training augmentation,
      ``--workers`` DataLoader workers, ``--prefetch`` GETs in flight per worker, pinned memory),
  (b) bound: the same steps on batches decoded and augmented once, held in device memory
      (the model's own speed: no loading at all).
a/b near 1 means the loader is not the bottleneck. Meant for a GPU (bf16 autocast, the GPU
default architecture); on a CPU it runs too, with ssdlite and small settings.
Usage: nice python bench/gpu_feed.py [--arch A] [--steps 30] [--batch-size 8] [--workers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from components.ml.dataset import FetchOptions, TileBatch, TileStream
from components.ml.detector import build_detector
from components.ml.transforms import train_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import CLASSES, build_tiles, start_server  # the sibling bench script


def to_device(batch: TileBatch, device: torch.device) -> TileBatch:
    images = [image.to(device, non_blocking=True) for image in batch.images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch.targets]
    return TileBatch(images, targets, batch.skipped)


def train_rate(model, batches, steps: int, warmup: int, device: torch.device) -> float:
    """Images/s over ``steps`` optimizer steps after ``warmup`` ones."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    model.train()
    images = 0
    started = 0.0
    for step, batch in enumerate(islice(batches, warmup + steps)):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            images = 0
        batch = to_device(batch, device)
        with autocast:
            loss = sum(model(batch.images, batch.targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += len(batch.images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def main() -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--arch",
        default="fasterrcnn_resnet50_fpn_v2" if cuda else "ssdlite320_mobilenet_v3_large",
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=512 if cuda else 64)
    parser.add_argument("--batch-size", type=int, default=16 if cuda else 8)
    parser.add_argument("--steps", type=int, default=60 if cuda else 6)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 2)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 2))
    parser.add_argument("--prefetch", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s3_records, _ = build_tiles(args.tiles, Path(tmp))
        stream = TileStream(
            s3_records,
            CLASSES,
            args.batch_size,
            shuffle=True,
            drop_last=True,
            transform=train_transform(),
            fetch=FetchOptions(concurrency=args.prefetch),
        )

        def s3_batches():
            for epoch in range(1_000_000):
                stream.set_epoch(epoch)
                yield from DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=args.workers,
                    collate_fn=lambda batch: batch,
                    pin_memory=cuda,
                    prefetch_factor=4 if args.workers else None,
                )

        torch.manual_seed(0)
        model = build_detector(args.arch, len(CLASSES) + 1, args.image_size)
        model = model.to(device, memory_format=torch.channels_last)  # as the trainer has it
        streamed = train_rate(model, s3_batches(), args.steps, args.warmup, device)
        resident = [to_device(b, device) for b in islice(s3_batches(), len(stream))]
        in_memory = train_rate(model, cycle(resident), args.steps, args.warmup, device)
    finally:
        server.terminate()
        server.wait(timeout=30)
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.arch} at {args.image_size} px on {where}; batch {args.batch_size}, "
        f"{args.steps} steps after {args.warmup} warm-up, {args.tiles} tiles in embedded S3, "
        f"{args.workers} workers x {args.prefetch} GETs in flight"
    )
    print(f"{'way':<48}{'images/s':>10}")
    print(f"{'(a) ours: fed by TileStream from S3':<48}{streamed:>10.1f}")
    print(f"{'(b) bound: batches already in device memory':<48}{in_memory:>10.1f}")
    print(f"a/b = {streamed / in_memory:.2f} (1.0: the loader keeps the accelerator fed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
