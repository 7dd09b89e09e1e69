"""Load the detector from a train-stage checkpoint (``model.ckpt``, a Lightning checkpoint).

The checkpoint's ``hyper_parameters`` name the detector (``arch``, ``num_classes`` with the
background, ``image_size``, ``classes``) and, from checkpoints written since pixel sizes are
recorded, ``pixel_size_m`` and the run's ``train_params``; its ``state_dict`` holds the
detector's weights under the LightningModule attribute ``model.``; ``val_operating_point``
holds the score threshold chosen on the val split (see ``module.py``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.ml.detector import ARCHITECTURES, build_detector

STATE_PREFIX = "model."


@dataclass(frozen=True)
class CheckpointInfo:
    """What the checkpoint says about its detector."""

    uri: str
    arch: str
    num_classes: int
    image_size: int
    classes: list[str]
    anchor_scales: list[float] | None = None  # SSDlite's, when the checkpoint records them
    anchor_ratios: list[float] | None = None  # SSDlite's aspect ratios, when recorded
    pixel_size_m: float | None = None  # ground size of a model-input pixel, when recorded
    val_score_threshold: float | None = None  # best-F1 threshold on val, when recorded
    train_params: dict[str, Any] | None = None
    epoch: int | None = None
    global_step: int | None = None
    lightning_version: str | None = None


def _read_checkpoint(checkpoint_uri: str) -> dict[str, Any]:
    raw = uri_io.read_bytes(checkpoint_uri)
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling arbitrary bytes fails in many ways
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (cannot be read by torch.load: "
            f"{first_line})"
        ) from exc
    if not isinstance(loaded, dict):
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (holds a {type(loaded).__name__}, "
            "expected a Lightning checkpoint)"
        )
    return loaded


def _checkpoint_info(checkpoint_uri: str, checkpoint: dict[str, Any]) -> CheckpointInfo:
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (no hyper_parameters/state_dict; "
            "pass the model.ckpt written by the train stage)"
        )
    missing = [
        k for k in ("arch", "num_classes", "image_size", "classes") if k not in hyper_parameters
    ]
    if missing:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (hyper_parameters lack {', '.join(missing)})"
        )
    arch = str(hyper_parameters["arch"])
    if arch not in ARCHITECTURES:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (unknown arch {arch!r}, "
            f"expected one of {ARCHITECTURES})"
        )
    classes = [str(name) for name in hyper_parameters["classes"]]
    num_classes = int(hyper_parameters["num_classes"])
    if num_classes != len(classes) + 1:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (num_classes={num_classes} but "
            f"{len(classes)} class names; num_classes counts the background)"
        )
    return CheckpointInfo(
        uri=checkpoint_uri,
        arch=arch,
        num_classes=num_classes,
        image_size=int(hyper_parameters["image_size"]),
        classes=classes,
        anchor_scales=_anchor_scales(checkpoint_uri, hyper_parameters.get("anchor_scales")),
        anchor_ratios=_anchor_ratios(checkpoint_uri, hyper_parameters.get("anchor_ratios")),
        pixel_size_m=_positive(
            checkpoint_uri, "pixel_size_m", hyper_parameters.get("pixel_size_m")
        ),
        val_score_threshold=_val_score_threshold(checkpoint_uri, checkpoint),
        train_params=hyper_parameters.get("train_params")
        if isinstance(hyper_parameters.get("train_params"), dict)
        else None,
        epoch=checkpoint.get("epoch"),
        global_step=checkpoint.get("global_step"),
        lightning_version=checkpoint.get("pytorch-lightning_version"),
    )


def _anchor_scales(checkpoint_uri: str, recorded: Any) -> list[float] | None:
    """The recorded SSDlite anchor scales: None or two shares 0 < smallest < largest <= 1."""
    if recorded is None:
        return None
    try:
        smallest, largest = (float(share) for share in recorded)
    except (TypeError, ValueError):
        smallest = largest = float("nan")
    if not 0 < smallest < largest <= 1:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (anchor_scales {recorded!r}, "
            "expected [smallest, largest] shares of the input edge)"
        )
    return [smallest, largest]


def _anchor_ratios(checkpoint_uri: str, recorded: Any) -> list[float] | None:
    """The recorded SSDlite aspect ratios: None or a list of numbers above 1."""
    if recorded is None:
        return None
    try:
        ratios = [float(ratio) for ratio in recorded]
    except (TypeError, ValueError):
        ratios = []
    if not ratios or not all(1 < ratio < math.inf for ratio in ratios):
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (anchor_ratios {recorded!r}, "
            "expected aspect ratios above 1)"
        )
    return ratios


def _positive(checkpoint_uri: str, key: str, recorded: Any) -> float | None:
    """A recorded positive number, None when not recorded; otherwise the file is refused."""
    if recorded is None:
        return None
    try:
        value = float(recorded)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value < math.inf:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} ({key} {recorded!r}, expected a "
            "positive number of metres)"
        )
    return value


def _val_score_threshold(checkpoint_uri: str, checkpoint: dict[str, Any]) -> float | None:
    point = checkpoint.get("val_operating_point")
    if not isinstance(point, dict) or point.get("score_threshold") is None:
        return None
    try:
        threshold = float(point["score_threshold"])
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0 <= threshold <= 1:
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (val_operating_point.score_threshold "
            f"{point['score_threshold']!r}, expected a score in [0, 1])"
        )
    return threshold


def load_detector_checkpoint(checkpoint_uri: str) -> tuple[nn.Module, CheckpointInfo]:
    """The detector (eval mode, CPU) and its description, from a train-stage ``model.ckpt``."""
    checkpoint = _read_checkpoint(checkpoint_uri)
    info = _checkpoint_info(checkpoint_uri, checkpoint)
    detector_state = {
        key[len(STATE_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(STATE_PREFIX)
    }
    detector = build_detector(
        info.arch,
        info.num_classes,
        info.image_size,
        "none",
        info.anchor_scales,
        info.anchor_ratios,
    )
    try:
        result = detector.load_state_dict(detector_state, strict=False)
    except RuntimeError as exc:  # tensor shapes that do not fit the architecture
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (weights do not fit {info.arch} with "
            f"{info.num_classes} classes: {str(exc).splitlines()[-1].strip()})"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        problems = result.missing_keys[:3] or result.unexpected_keys[:3]
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (weights do not fit {info.arch} with "
            f"{info.num_classes} classes: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(problems)})"
        )
    return detector.eval(), info
