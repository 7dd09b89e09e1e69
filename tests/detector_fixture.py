"""A small detector for the export/serve/evaluate/detect tests: checkpoint and exported model.

The checkpoint follows the train stage's contract (Lightning layout, ``model.``-prefixed
detector weights, ``hyper_parameters`` with the resolved train params and the classes). Its SSDlite detector at 128 px
takes a few optimiser steps on bright-panel tiles so that its scores are no longer uniform;
it is not trained to be accurate. Both are built once per test session and cached under
pytest's session folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import lightning
import numpy as np
import torch
from PIL import Image

from components.core.params import TrainParams
from components.ml.detector import anchor_scales_of, build_detector
from tests.tile_fixtures import tile_with_panels

ARCH = "ssdlite320_mobilenet_v3_large"
IMAGE_SIZE = 128
CLASSES = ["solar_panel"]
TRAIN_STEPS = 4


def panel_tile(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[list[float]]]:
    """A uint8 ``size×size×3`` tile with 1-2 bright panels, and their boxes."""
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        width, height = (int(v) for v in rng.integers(size // 5, size // 3, 2))
        x1, y1 = int(rng.integers(0, size - width)), int(rng.integers(0, size - height))
        boxes.append((x1, y1, x1 + width, y1 + height))
    pixels = np.array(Image.open(io.BytesIO(tile_with_panels(size, boxes))).convert("RGB"))
    return pixels, [[float(v) for v in box] for box in boxes]


def write_checkpoint(
    path: Path, steps: int = TRAIN_STEPS, seed: int = 0, pixel_size_m: float | None = None
) -> Path:
    """A train-stage-style ``model.ckpt`` after ``steps`` AdamW steps on synthetic tiles;
    without ``pixel_size_m``, like a checkpoint written before pixel sizes were recorded."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    detector = build_detector(ARCH, len(CLASSES) + 1, IMAGE_SIZE)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=3e-3)
    detector.train()
    for _ in range(steps):
        images, targets = [], []
        for _ in range(4):
            pixels, boxes = panel_tile(rng, IMAGE_SIZE)
            images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
            targets.append(
                {"boxes": torch.tensor(boxes), "labels": torch.ones(len(boxes), dtype=torch.int64)}
            )
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = {
        "epoch": 0,
        "global_step": steps,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {f"model.{k}": v for k, v in detector.state_dict().items()},
        "hyper_parameters": {
            "train": TrainParams(arch=ARCH, image_size=IMAGE_SIZE).model_dump(mode="json"),
            "classes": CLASSES,
            "anchor_scales": anchor_scales_of(ARCH),
        },
    }
    if pixel_size_m is not None:
        checkpoint["hyper_parameters"]["pixel_size_m"] = pixel_size_m
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def _variant(pixel_size_m: float | None) -> str:
    return "" if pixel_size_m is None else f"-{pixel_size_m:g}m"


def cached_checkpoint(session_dir: Path, pixel_size_m: float | None = None) -> Path:
    """The session's checkpoint (built on first use), recording ``pixel_size_m`` if given."""
    path = session_dir / "detector-fixture" / f"train{_variant(pixel_size_m)}" / "model.ckpt"
    if not path.exists():
        write_checkpoint(path, pixel_size_m=pixel_size_m)
    return path


def cached_export(session_dir: Path, pixel_size_m: float | None = None) -> Path:
    """The session's export folder (``model.pt``, the BentoML archive), built on first use."""
    from components.export.__main__ import main as export_main

    out = session_dir / "detector-fixture" / f"export{_variant(pixel_size_m)}"
    if not (out / "model.pt").exists():
        checkpoint = cached_checkpoint(session_dir, pixel_size_m)
        status = export_main(["--checkpoint", str(checkpoint), "--out", str(out)])
        assert status == 0, "export of the fixture detector failed"
    return out


def export_on_s3(session_dir: Path, bucket: str, prefix: str) -> str:
    """The session's export folder uploaded to ``s3://<bucket>/<prefix>`` on the embedded S3
    server (which must be running); its URI."""
    from components.core import uri as uri_io
    from components.s3server import ensure_bucket

    ensure_bucket(bucket)
    model_uri = f"s3://{bucket}/{prefix}"
    uri_io.publish_folder(cached_export(session_dir), model_uri)
    return model_uri
