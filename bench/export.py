"""Benchmark the exported model: TorchScript vs eager latency (serving over HTTP: bench/serve.py).

In one run, on the same model (``--checkpoint``, or a randomly initialised ``--arch``: speed
does not depend on the weights) and the same seeded ``--size`` px uint8 tiles:
  latency, per batch of 1 and of ``--batch`` tiles, median of ``--repeats``:
    (a) ours: the scripted ``model.pt`` (resize, detector, rescale, threshold),
    (b) eager: the same wrapper in Python,
    (c) bound: the bare torchvision detector on tiles already at its input size.
Usage: nice python bench/export.py [--arch ssdlite320_mobilenet_v3_large] [--size 256]
    [--batch 8] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from components.ml.checkpoint import load_detector_checkpoint
from components.ml.detector import build_detector
from components.ml.scripted import (
    MODEL_FILE,
    ServedDetector,
    load_scripted_model,
    resolve_device,
    script_detector,
)


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="", help="a train-stage model.ckpt (optional)")
    parser.add_argument("--arch", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256, help="tile size and model input size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threshold", type=float, default=0.3, help="score threshold inside model.pt"
    )
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


if __name__ == "__main__":
    main()
