"""Load the detector from a train-stage checkpoint (``model.ckpt``, a Lightning checkpoint).

The checkpoint's ``hyper_parameters`` hold the whole resolved ``train`` params of the run, the
``classes``, SSDlite's ``anchor_scales`` and, since pixel sizes are recorded, ``pixel_size_m``
(ground size of one model-input pixel; ``null`` when the data did not say) and the tiles'
``data_pixel_size_m``: from them :func:`detector_spec` reads what rebuilds the detector. Its
``state_dict`` holds the detector's weights under the LightningModule attribute ``model.``;
``val_operating_point`` holds the score threshold chosen on the val split (see ``module.py``).
Checkpoints written before the train params were stored whole name ``arch``, ``image_size``,
``num_classes`` and ``classes`` at the top level; they still load.
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
from components.ml.detector import ARCHITECTURES, SSDLITE_ANCHOR_RATIOS, build_detector

STATE_PREFIX = "model."


@dataclass(frozen=True)
class DetectorSpec:
    """What rebuilds a detector: architecture, input edge, classes, SSDlite's anchor scales
    and aspect ratios (None: the defaults of :mod:`components.ml.detector`)."""

    arch: str
    image_size: int
    classes: tuple[str, ...]
    anchor_scales: tuple[float, float] | None = None
    anchor_ratios: tuple[float, ...] | None = None

    @property
    def num_classes(self) -> int:
        """Classes of the torchvision detector: the named ones plus the background."""
        return len(self.classes) + 1


@dataclass(frozen=True)
class CheckpointInfo:
    """What the checkpoint says about its detector and the run that trained it."""

    uri: str
    spec: DetectorSpec
    train: dict[str, Any]  # the run's resolved train params
    pixel_size_m: float | None = None  # ground size of a model-input pixel, when recorded
    val_score_threshold: float | None = None  # best-F1 threshold on val, when recorded
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


def detector_spec(hyper_parameters: Any, checkpoint_uri: str) -> DetectorSpec:
    """The detector a checkpoint's ``hyper_parameters`` describe, checked."""

    def refuse(reason: str) -> SolarpipeError:
        return SolarpipeError(f"not a detector checkpoint: {checkpoint_uri} ({reason})")

    if not isinstance(hyper_parameters, dict):
        raise refuse("no hyper_parameters; pass the model.ckpt written by the train stage")
    train = hyper_parameters.get("train", hyper_parameters)  # flat: before train was stored
    missing = [key for key in ("arch", "image_size") if key not in train]
    missing += [] if "classes" in hyper_parameters else ["classes"]
    if missing:
        raise refuse(f"hyper_parameters lack {', '.join(missing)}")
    arch = str(train["arch"])
    if arch not in ARCHITECTURES:
        raise refuse(f"unknown arch {arch!r}, expected one of {ARCHITECTURES}")
    classes = tuple(str(name) for name in hyper_parameters["classes"])
    recorded = hyper_parameters.get("num_classes", len(classes) + 1)
    if recorded != len(classes) + 1:
        raise refuse(
            f"num_classes={recorded} but {len(classes)} class names; num_classes counts the "
            "background"
        )
    return DetectorSpec(
        arch=arch,
        image_size=int(train["image_size"]),
        classes=classes,
        anchor_scales=_anchor_scales(refuse, hyper_parameters.get("anchor_scales")),
        anchor_ratios=_anchor_ratios(refuse, train.get("anchor_ratios")),
    )


def _checkpoint_info(checkpoint_uri: str, checkpoint: dict[str, Any]) -> CheckpointInfo:
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(checkpoint.get("state_dict"), dict):
        hyper_parameters = None
    spec = detector_spec(hyper_parameters, checkpoint_uri)
    return CheckpointInfo(
        uri=checkpoint_uri,
        spec=spec,
        train=dict(hyper_parameters.get("train", {})),
        pixel_size_m=_positive(
            checkpoint_uri, "pixel_size_m", hyper_parameters.get("pixel_size_m")
        ),
        val_score_threshold=_val_score_threshold(checkpoint_uri, checkpoint),
        epoch=checkpoint.get("epoch"),
        global_step=checkpoint.get("global_step"),
        lightning_version=checkpoint.get("pytorch-lightning_version"),
    )


def _anchor_scales(refuse: Any, recorded: Any) -> tuple[float, float] | None:
    """The recorded SSDlite anchor scales: None or two shares 0 < smallest < largest <= 1."""
    if recorded is None:
        return None
    try:
        smallest, largest = (float(share) for share in recorded)
    except (TypeError, ValueError):
        smallest = largest = float("nan")
    if not 0 < smallest < largest <= 1:
        raise refuse(
            f"anchor_scales {recorded!r}, expected [smallest, largest] shares of the input edge"
        )
    return smallest, largest


def _anchor_ratios(refuse: Any, recorded: Any) -> tuple[float, ...] | None:
    """The recorded SSDlite aspect ratios (numbers above 1); None when not recorded or the
    defaults, so that checkpoints from before they were recorded describe the same detector."""
    if recorded is None:
        return None
    try:
        ratios = tuple(float(ratio) for ratio in recorded)
    except (TypeError, ValueError):
        ratios = ()
    if not ratios or not all(1 < ratio < math.inf for ratio in ratios):
        raise refuse(f"anchor_ratios {recorded!r}, expected aspect ratios above 1")
    return None if ratios == SSDLITE_ANCHOR_RATIOS else ratios


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
    spec = info.spec
    detector = build_detector(
        spec.arch,
        spec.num_classes,
        spec.image_size,
        "none",
        spec.anchor_scales,
        spec.anchor_ratios,
    )
    try:
        result = detector.load_state_dict(detector_state, strict=False)
    except RuntimeError as exc:  # tensor shapes that do not fit the architecture
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (weights do not fit {spec.arch} with "
            f"{spec.num_classes} classes: {str(exc).splitlines()[-1].strip()})"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        problems = result.missing_keys[:3] or result.unexpected_keys[:3]
        raise SolarpipeError(
            f"not a detector checkpoint: {checkpoint_uri} (weights do not fit {spec.arch} with "
            f"{spec.num_classes} classes: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(problems)})"
        )
    return detector.eval(), info
