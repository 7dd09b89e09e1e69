"""BentoML service: POST PNG/JPEG images to ``/detect``, get boxes, scores and labels as JSON.

Serve an exported model (fetches, checks and imports its archive, then runs this service)::

    solarpipe serve --model out/export --port 3000
    curl -F images=@tile.png http://127.0.0.1:3000/detect

The model tag comes from ``SOLARPIPE_BENTO_MODEL`` (default ``solar_panel_detector:latest``).
Adaptive batching groups concurrent requests into one forward pass (``SOLARPIPE_SERVE_MAX_BATCH``
images, waiting at most ``SOLARPIPE_SERVE_MAX_LATENCY_MS``); ``SOLARPIPE_SERVE_WORKERS``
processes share the CPUs (``OMP_NUM_THREADS``, else all of them). What a request may carry:
:mod:`components.serving.limits`.
"""

from __future__ import annotations

import os
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import bentoml
import torch
from bentoml.exceptions import BentoMLException
from pydantic import AfterValidator, BaseModel

from components.ml.scripted import MODEL_FILE, load_scripted_model
from components.serving.limits import MAX_UPLOAD_BYTES, ImageTooLarge, UploadLimit, decode_rgb

MODEL_TAG = os.environ.get("SOLARPIPE_BENTO_MODEL", "solar_panel_detector:latest")
HAS_CUDA = torch.cuda.is_available()
MAX_BATCH_SIZE = int(os.environ.get("SOLARPIPE_SERVE_MAX_BATCH", "16" if HAS_CUDA else "8"))
MAX_LATENCY_MS = int(
    os.environ.get("SOLARPIPE_SERVE_MAX_LATENCY_MS", "2000" if HAS_CUDA else "60000")
)
WORKERS = int(os.environ.get("SOLARPIPE_SERVE_WORKERS", "1"))


def cpu_threads_per_worker() -> int:
    """CPU threads for one worker's torch: ``OMP_NUM_THREADS`` (Kubernetes sets it from the
    CPU limit) or the CPUs this process may use, shared among the workers."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    cpus = int(configured) if configured.isdigit() else len(os.sched_getaffinity(0))
    return max(1, cpus // WORKERS)


def _decodable(image_path: Path) -> Path:
    """Refuse an upload per request (400, 413) before it can join a batch and fail it."""
    try:
        decode_rgb(image_path)
    except ImageTooLarge as exc:
        raise BentoMLException(str(exc), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE) from exc
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
    workers=WORKERS,
)
class SolarPanelDetector:
    """The exported TorchScript detector behind an adaptive-batching HTTP API."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.device = torch.device("cuda" if HAS_CUDA else "cpu")
        if not HAS_CUDA:
            torch.set_num_threads(cpu_threads_per_worker())
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


SolarPanelDetector.add_asgi_middleware(UploadLimit, max_bytes=MAX_UPLOAD_BYTES)
