"""The export stage's work: load the checkpoint, script, check parity, package, publish.

Everything is written into a staging folder that replaces ``--out`` only when complete.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import torch
import torchvision

from components.core import uri as uri_io
from components.core.logs import get_logger
from components.core.params import ExportParams
from components.export.bento import check_model_name, write_bento_archive
from components.export.parity import check_parity, sample_images
from components.ml.checkpoint import CheckpointInfo, load_detector_checkpoint
from components.ml.scripted import (
    DEFAULT_PIXEL_SIZE_M,
    EXPORT_SUMMARY_FILE,
    MODEL_FILE,
    ServedDetector,
    load_scripted_model,
    script_detector,
)

log = get_logger(__name__)
GIT_REVISION_VARIABLE = "SOLARPIPE_GIT_REVISION"
# Score threshold of a model whose checkpoint records none chosen on val (older checkpoints).
FALLBACK_SCORE_THRESHOLD = 0.3


def git_revision() -> str | None:
    """``$SOLARPIPE_GIT_REVISION`` (images), else ``git rev-parse HEAD`` here, else None."""
    if os.environ.get(GIT_REVISION_VARIABLE):
        return os.environ[GIT_REVISION_VARIABLE]
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def training_metrics(checkpoint_uri: str) -> dict[str, Any]:
    """Plain values of the ``metrics.json`` beside the checkpoint (empty when there is none)."""
    metrics_uri = uri_io.join(uri_io.parent(checkpoint_uri), "metrics.json")
    if not uri_io.exists(metrics_uri):
        return {}
    metrics = uri_io.read_json(metrics_uri)
    if not isinstance(metrics, dict):
        return {}
    return {
        str(key): value
        for key, value in metrics.items()
        if isinstance(value, str | int | float | bool) and value is not None
    }


def score_threshold(info: CheckpointInfo, params: ExportParams) -> tuple[float, str]:
    """The model's default score threshold and where it comes from."""
    if params.score_threshold is not None:
        return params.score_threshold, "export.score_threshold"
    if info.val_score_threshold is not None:
        return info.val_score_threshold, "best F1 on the val split"
    log.warning(
        "%s records no score threshold chosen on the val split: using %g",
        info.uri,
        FALLBACK_SCORE_THRESHOLD,
    )
    return FALLBACK_SCORE_THRESHOLD, "fallback (checkpoint records none)"


def recorded_pixel_size(info: CheckpointInfo) -> float | None:
    if info.pixel_size_m is None:
        log.warning(
            "%s records no pixel size (written before pixel sizes were recorded): the model "
            "records none, and detect and evaluate will assume %g m",
            info.uri,
            DEFAULT_PIXEL_SIZE_M,
        )
    return info.pixel_size_m


def model_metadata(info: CheckpointInfo, threshold: float, threshold_source: str) -> dict[str, Any]:
    """What the BentoML model records about itself (plain YAML types only)."""
    metadata: dict[str, Any] = {
        "arch": info.spec.arch,
        "image_size": info.spec.image_size,
        "pixel_size_m": info.pixel_size_m,
        "score_threshold": threshold,
        "score_threshold_source": threshold_source,
        "classes": list(info.spec.classes),
        "model_file": MODEL_FILE,
        "torch_version": str(torch.__version__),
        "torchvision_version": str(torchvision.__version__),
        "checkpoint": info.uri,
        "metrics": training_metrics(info.uri),
    }
    if info.train:
        metadata["train_params"] = info.train
    if info.epoch is not None:
        metadata["epoch"] = int(info.epoch)
    revision = git_revision()
    if revision:
        metadata["git_revision"] = revision
    return metadata


def export(checkpoint_uri: str, out_uri: str, params: ExportParams) -> dict[str, Any]:
    """Write ``model.pt``, the BentoML archive and ``export.json`` to ``out_uri``."""
    check_model_name(params.name)
    started = time.perf_counter()
    detector, info = load_detector_checkpoint(checkpoint_uri)
    threshold, threshold_source = score_threshold(info, params)
    pixel_size_m = recorded_pixel_size(info)
    served = ServedDetector(
        detector,
        info.spec.arch,
        info.spec.image_size,
        info.spec.classes,
        threshold,
        pixel_size_m or 0.0,
    )
    scripted = script_detector(served)
    metadata = model_metadata(info, threshold, threshold_source)
    with uri_io.local_output_dir(out_uri) as staging:
        model_path = staging / MODEL_FILE
        scripted.save(str(model_path))
        scripted_at = time.perf_counter()
        parity = check_parity(
            served,
            load_scripted_model(str(model_path)),
            sample_images(info.spec.image_size, params.parity_samples),
            params.parity_atol,
        )
        checked_at = time.perf_counter()
        labels = {"project": "solarpipe", "arch": info.spec.arch}
        tag, archive_path = write_bento_archive(
            model_path, staging, params.name, params.archive, labels, metadata
        )
        packaged_at = time.perf_counter()
        summary = {
            "arch": info.spec.arch,
            "classes": info.spec.classes,
            "image_size": info.spec.image_size,
            "pixel_size_m": pixel_size_m,
            "score_threshold": threshold,
            "score_threshold_source": threshold_source,
            "model_file": MODEL_FILE,
            "model_bytes": model_path.stat().st_size,
            "bento_tag": tag,
            "bento_archive": archive_path.name,
            "bento_archive_bytes": archive_path.stat().st_size,
            "parity": parity.as_dict(),
            "git_revision": metadata.get("git_revision"),
        }
        uri_io.write_json(str(staging / EXPORT_SUMMARY_FILE), summary)
    log.info(
        "export timings: load+script %.1f s, parity %.1f s, BentoML archive (%s) %.1f s",
        scripted_at - started,
        checked_at - scripted_at,
        params.archive,
        packaged_at - checked_at,
    )
    return summary
