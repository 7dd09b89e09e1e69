"""BentoML service: POST PNG/JPEG images to ``/detect``, get boxes, scores and labels as JSON.

Serve an exported model::

    bentoml models import out/export/solar_panel_detector.tar.gz   # into $BENTOML_HOME
    bentoml serve components.serving.service:SolarPanelDetector --port 3000
    curl -F images=@tile.png http://127.0.0.1:3000/detect

The model tag comes from ``SOLARPIPE_BENTO_MODEL`` (default ``solar_panel_detector:latest``).
Adaptive batching is sized for the hardware: on CPU, batching gains nothing on few cores, so
batches stay small and the latency budget is long (a short one answers 503 to concurrent
clients); with CUDA, batches are larger. ``SOLARPIPE_SERVE_MAX_BATCH`` and
``SOLARPIPE_SERVE_MAX_LATENCY_MS`` override both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import bentoml
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import AfterValidator, BaseModel

from components.ml.scripted import MODEL_FILE, load_scripted_model

MODEL_TAG = os.environ.get("SOLARPIPE_BENTO_MODEL", "solar_panel_detector:latest")
HAS_CUDA = torch.cuda.is_available()
MAX_BATCH_SIZE = int(os.environ.get("SOLARPIPE_SERVE_MAX_BATCH", "16" if HAS_CUDA else "4"))
MAX_LATENCY_MS = int(
    os.environ.get("SOLARPIPE_SERVE_MAX_LATENCY_MS", "2000" if HAS_CUDA else "60000")
)


IMAGE_FORMATS = ("PNG", "JPEG")


def decode_rgb(image_path: Path) -> np.ndarray:
    """An uploaded PNG/JPEG as ``H×W×3`` uint8; ``ValueError`` when it is not one."""
    try:
        with Image.open(image_path, formats=IMAGE_FORMATS) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError("not a readable PNG or JPEG image") from exc


def _decodable(image_path: Path) -> Path:
    decode_rgb(image_path)  # refused per request (HTTP 400), before it can join a batch
    return image_path


ImageUpload = Annotated[Path, AfterValidator(_decodable)]


class Detections(BaseModel):
    """One image's detections: ``[xmin, ymin, xmax, ymax]`` boxes in the image's pixels."""

    boxes: list[list[float]]
    scores: list[float]
    labels: list[str]


@bentoml.service(
    resources={"gpu": 1} if HAS_CUDA else {"cpu": str(os.cpu_count() or 1)},
    traffic={"timeout": max(60, MAX_LATENCY_MS // 1000 + 30)},
    workers=1,
)
class SolarPanelDetector:
    """The exported TorchScript detector behind an adaptive-batching HTTP API."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.device = torch.device("cuda" if HAS_CUDA else "cpu")
        self.model = load_scripted_model(self.bento_model.path_of(MODEL_FILE), self.device)
        self.classes: list[str] = list(self.model.classes)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def detect(self, images: list[ImageUpload]) -> list[Detections]:
        """Solar panels in each uploaded image (PNG or JPEG), above the export's threshold."""
        tensors = [torch.from_numpy(decode_rgb(image_path)) for image_path in images]
        with torch.inference_mode():
            outputs = self.model(tensors)
        return [
            Detections(
                boxes=output["boxes"].cpu().tolist(),
                scores=output["scores"].cpu().tolist(),
                labels=[self.classes[int(index) - 1] for index in output["labels"].cpu()],
            )
            for output in outputs
        ]
