"""Benchmark what starting the DataLoader workers anew every epoch costs training, against
keeping them (``persistent_workers``, the train stage's default since ``train.persistent_workers``).

Training waits at the start of every epoch until the first batch arrives; after that the
workers run ahead of the steps. So the cost of a restart is the extra wait for the first batch
(worker processes started, S3 clients built, the fetch pipeline filled), paid once per epoch
by the train loader and once by the val loader. In one run, with the embedded S3 server in its
own process and ``--tiles`` tiles (the quickstart's train split), interleaved rounds of:
  (a) restart: a new DataLoader every epoch (what ``reload_dataloaders_every_n_epochs=1`` did),
  (b) persistent: one DataLoader, ``persistent_workers=True``, the epoch set through shared memory.
Each epoch: wait for the first batch, then drain the rest (train augmentation included).
Printed: first-batch wait and whole pass per epoch (median over epochs, best round), and the
saving per epoch against the epoch time at ``--train-rate`` images/s (steps, not loading, bound
training on 2 CPU cores).
Usage: nice python bench/worker_restart.py [--tiles 179] [--epochs 4] [--workers 2]
       [--batch-size 8] [--train-rate 10.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loader import CLASSES, build_tiles, start_server
from torch.utils.data import DataLoader

from components.ml.dataset import FetchOptions, TileStream
from components.ml.transforms import train_transform


def make_loader(stream: TileStream, workers: int, persistent: bool) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        collate_fn=lambda batch: batch,
        prefetch_factor=2,
        persistent_workers=persistent,
    )


def one_epoch(loader: DataLoader) -> tuple[float, float]:
    """(seconds to the first batch, seconds for the whole pass)."""
    started = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - started
    for _ in batches:
        pass
    return first, time.perf_counter() - started


def run_way(records, args, persistent: bool) -> tuple[float, float]:
    """Median first-batch wait and pass time over ``args.epochs`` epochs (after the first,
    which starts workers either way)."""
    stream = TileStream(
        records,
        CLASSES,
        args.batch_size,
        shuffle=True,
        drop_last=True,
        transform=train_transform(0.0),
        fetch=FetchOptions(concurrency=8),
    )
    loader = make_loader(stream, args.workers, persistent)
    timings = []
    for epoch in range(args.epochs + 1):
        stream.set_epoch(epoch)
        if not persistent:
            loader = make_loader(stream, args.workers, persistent)
        timings.append(one_epoch(loader))
    del loader
    later = timings[1:]
    return statistics.median(t[0] for t in later), statistics.median(t[1] for t in later)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=179)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best kept")
    parser.add_argument("--train-rate", type=float, default=10.5, help="images/s of training")
    args = parser.parse_args()
    server = start_server()
    results = {"(a) restart every epoch": (1e9, 1e9), "(b) persistent workers": (1e9, 1e9)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            records, _ = build_tiles(args.tiles, Path(tmp))
            for _ in range(args.rounds):
                for name, persistent in zip(results, (False, True), strict=True):
                    first, whole = run_way(records, args, persistent)
                    best_first, best_whole = results[name]
                    results[name] = (min(best_first, first), min(best_whole, whole))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{args.tiles} tiles on the embedded S3, {args.workers} workers, batch {args.batch_size}, "
        f"{os.cpu_count()} cores; median of {args.epochs} epochs, best of {args.rounds} rounds"
    )
    print(f"{'way':<30}{'first batch s':>15}{'whole pass s':>14}")
    for name, (first, whole) in results.items():
        print(f"{name:<30}{first:>15.2f}{whole:>14.2f}")
    saving = results["(a) restart every epoch"][0] - results["(b) persistent workers"][0]
    epoch_s = args.tiles / args.train_rate
    print(
        f"restart costs {saving:.2f} s per loader per epoch; train + val loaders: "
        f"{2 * saving:.2f} s of a {epoch_s:.1f} s epoch at {args.train_rate:g} images/s "
        f"({2 * saving / epoch_s:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
