"""Build a torchvision detector by name: the one place that maps ``train.arch`` to a model."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from components.core.errors import SolarpipeError, UsageError
from components.core.params import Architecture

ARCHITECTURES: tuple[str, ...] = typing.get_args(Architecture)


def build_detector(
    arch: str,
    num_classes: int,
    image_size: int,
    pretrained: str = "none",
    anchor_scales: Sequence[float] | None = None,
    anchor_ratios: Sequence[float] | None = None,
) -> Any:
    """A torchvision detector with ``num_classes`` classes (background included).

    ``anchor_scales``: SSDlite's smallest and largest anchor as shares of the input edge, as a
    checkpoint recorded them; default :data:`SSDLITE_ANCHOR_SCALES`. ``anchor_ratios``: its
    anchors' aspect ratios besides 1:1 (each gives a landscape and a portrait anchor per
    location); default torchvision's :data:`SSDLITE_ANCHOR_RATIOS`.

    ``pretrained``: ``none`` (random init, works offline), ``imagenet`` (backbone weights) or
    ``coco`` (whole-detector weights, head re-initialised for ``num_classes``): the last two
    download weights and need network access.
    """
    from torchvision.models import detection

    if arch not in ARCHITECTURES:
        raise UsageError(f"train.arch: unknown architecture {arch!r} (one of {ARCHITECTURES})")
    if arch == STRIDE8_ARCH:
        from components.ml.ssdlite_stride8 import ssdlite_stride8 as builder
    else:
        builder = getattr(detection, arch)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "weights": None, "weights_backbone": None}
    if not arch.startswith("ssdlite"):  # ssdlite's builder fixes 320 px: see _fit_input_size
        kwargs.update(min_size=image_size, max_size=image_size)
    if pretrained == "imagenet":
        kwargs["weights_backbone"] = "DEFAULT"
    if arch == STRIDE8_ARCH and pretrained == "coco":
        raise UsageError(f"train.pretrained=coco: there are no COCO weights for {arch}")
    try:
        if pretrained == "coco":
            model = builder(
                weights="DEFAULT",
                **{k: v for k, v in kwargs.items() if k not in ("num_classes", "weights")},
            )
            _replace_head(model, arch, num_classes)
        else:
            model = builder(**kwargs)
        return _fit_input_size(model, arch, image_size, anchor_scales, anchor_ratios)
    except (OSError, RuntimeError) as exc:
        if pretrained != "none":
            raise SolarpipeError(
                f"could not load {pretrained} weights for {arch} ({exc}); "
                "use --set train.pretrained=none offline"
            ) from exc
        raise


# SSDlite anchor scales as shares of the input edge. torchvision's (0.2 to 0.95) suit COCO; solar
# panels at 0.1 m are 12 to 90 px (median 25 px square-root area, up to 3:1), so on a 256-px tile
# the default smallest anchor (51 px) overlaps most panels too little to learn them (test mAP@0.5
# 0.30 vs 0.62 in the same 5 CPU minutes with 0.05 to 0.5). The finest SSDlite map has a 16-px
# stride, so even well-sized anchors sit off-centre on small panels: at IoU 0.5 (torchvision's
# matcher) 69 % of the panels of a synthetic scene match no anchor, at 0.4 with scales from 0.07
# 19 % (2.5 positive anchors per panel on average vs 0.6). That change, in the same 6 CPU
# minutes on a 4096-px scene: val mAP@0.5 0.81 → 0.86, test 0.69 → 0.84. Same number of
# anchors per location, so the head is unchanged; the scales are kept in the checkpoint.
SSDLITE_ANCHOR_SCALES = (0.07, 0.5)
SSDLITE_MATCH_IOU = 0.4
# torchvision's SSDlite aspect ratios: 1:1 (two sizes), 2:1, 1:2, 3:1, 1:3 at every location.
SSDLITE_ANCHOR_RATIOS = (2.0, 3.0)
# The stride-8 variant spreads seven maps' anchors from 10 px on a 256-px input (a 1-m panel at
# 0.1 m) up: its stride-16 map then starts at 30 px.
STRIDE8_ARCH = "ssdlite_mobilenet_v3_large_stride8"
STRIDE8_ANCHOR_SCALES = (0.04, 0.5)


def _fit_input_size(
    model: Any,
    arch: str,
    image_size: int,
    anchor_scales: Sequence[float] | None,
    anchor_ratios: Sequence[float] | None,
) -> Any:
    """SSDlite: resize inputs to ``image_size`` px instead of the builder's fixed 320, use
    anchors sized for panels (``anchor_scales``, default :data:`SSDLITE_ANCHOR_SCALES`) of
    ``anchor_ratios`` and match them to panels from IoU :data:`SSDLITE_MATCH_IOU`."""
    if arch.startswith("ssdlite"):
        from torchvision.models.detection import _utils as det_utils
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        smallest, largest = anchor_scales or anchor_scales_of(arch)
        ratios = [float(ratio) for ratio in anchor_ratios or SSDLITE_ANCHOR_RATIOS]
        maps = len(model.anchor_generator.aspect_ratios)  # 6, or 7 with the stride-8 map
        before = model.anchor_generator.num_anchors_per_location()
        model.anchor_generator = DefaultBoxGenerator(
            [ratios for _ in range(maps)], min_ratio=smallest, max_ratio=largest
        )
        if model.anchor_generator.num_anchors_per_location() != before:
            _rebuild_ssdlite_head(model)
        model.proposal_matcher = det_utils.SSDMatcher(SSDLITE_MATCH_IOU)
        model.transform = GeneralizedRCNNTransform(
            image_size,
            image_size,
            model.transform.image_mean,
            model.transform.image_std,
            size_divisible=1,
            fixed_size=(image_size, image_size),
        )
    return model


def _rebuild_ssdlite_head(model: Any) -> None:
    """A new SSDlite head (torchvision's kind and initialisation) for the anchors per location
    of ``model.anchor_generator``."""
    from functools import partial

    import torch.nn as nn
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssdlite import SSDLiteHead

    model.head = SSDLiteHead(
        det_utils.retrieve_out_channels(model.backbone, (320, 320)),
        model.anchor_generator.num_anchors_per_location(),
        model.head.classification_head.num_columns,
        partial(nn.BatchNorm2d, eps=0.001, momentum=0.03),
    )


def anchor_scales_of(arch: str) -> list[float] | None:
    """The anchor scales a new ``arch`` detector gets (kept in checkpoints); None if fixed."""
    if arch == STRIDE8_ARCH:
        return list(STRIDE8_ANCHOR_SCALES)
    return list(SSDLITE_ANCHOR_SCALES) if arch.startswith("ssdlite") else None


def _replace_head(model: Any, arch: str, num_classes: int) -> None:
    """Swap a COCO-trained head for one with ``num_classes`` outputs."""
    if arch.startswith("fasterrcnn"):
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
        return
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

    in_channels = det_utils.retrieve_out_channels(model.backbone, (320, 320))
    num_anchors = model.anchor_generator.num_anchors_per_location()
    import torch.nn as nn

    model.head.classification_head = SSDLiteClassificationHead(
        in_channels, num_anchors, num_classes, nn.BatchNorm2d
    )
