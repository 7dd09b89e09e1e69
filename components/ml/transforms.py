"""Tile augmentation for detector training: flips, 90° rotations, coarser pixels and colour
jitter, boxes included.

Built on ``torchvision.transforms.v2``: the image is a ``tv_tensors.Image`` and the boxes a
``tv_tensors.BoundingBoxes``, so every geometric step moves the boxes with the pixels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

Target = dict[str, Any]


class RandomRotate90(v2.Transform):
    """Rotate by a random multiple of 90° (exact pixel permutation, no interpolation)."""

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"quarter_turns": int(torch.randint(4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        turns = params["quarter_turns"]
        if turns == 0:
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _rotate_boxes_90(inpt, turns)
        return tv_tensors.wrap(torch.rot90(inpt, turns, dims=(-2, -1)), like=inpt)


def _rotate_boxes_90(boxes: tv_tensors.BoundingBoxes, turns: int) -> tv_tensors.BoundingBoxes:
    """Boxes under ``torch.rot90(image, turns, dims=(-2, -1))`` (counter-clockwise turns)."""
    xyxy = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
    coords = xyxy.as_subclass(torch.Tensor)
    height, width = boxes.canvas_size
    for _ in range(turns):
        # One counter-clockwise quarter turn: (x, y) -> (y, width - x); canvas becomes (W, H).
        x1, y1, x2, y2 = coords.unbind(-1)
        coords = torch.stack((y1, width - x2, y2, width - x1), dim=-1)
        height, width = width, height
    rotated = tv_tensors.BoundingBoxes(
        coords, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
    )
    return F.convert_bounding_box_format(rotated, new_format=boxes.format)


class RandomCoarsen(v2.Transform):
    """With probability ``p``, shrink the image by a random factor in ``[1, max_factor]``
    (log-uniform, antialiased) and enlarge it back: what imagery of pixels that many times
    larger looks like once detect has resampled it to the model's pixel size. The canvas and
    so the boxes stay as they are."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, max_factor: float, p: float = 0.5) -> None:
        super().__init__()
        self.max_factor = max_factor
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return {"factor": 1.0}
        return {"factor": math.exp(float(torch.rand(())) * math.log(self.max_factor))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        factor = params["factor"]
        height, width = inpt.shape[-2:]
        small = [max(1, round(height / factor)), max(1, round(width / factor))]
        if small == [height, width]:
            return inpt
        shrunk = F.resize(inpt, small, antialias=True)
        return F.resize(shrunk, [height, width], antialias=True)


# Share of training tiles that RandomCoarsen degrades (the rest keep the native pixels).
COARSEN_PROBABILITY = 0.5


def train_transform(color_jitter: float = 0.2, coarsen_max: float = 1.0) -> v2.Transform:
    """Random flips, quarter turns, coarser pixels (``coarsen_max`` > 1) and colour jitter,
    then float pixels in [0, 1]."""
    steps: list[v2.Transform] = [
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        RandomRotate90(),
    ]
    if coarsen_max > 1:
        steps.append(RandomCoarsen(coarsen_max, COARSEN_PROBABILITY))
    if color_jitter > 0:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter,
                contrast=color_jitter,
                saturation=color_jitter,
                hue=min(0.5, color_jitter / 10),
            )
        )
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def eval_transform() -> v2.Transform:
    """No augmentation: float pixels in [0, 1]."""
    return v2.ToDtype(torch.float32, scale=True)


def apply_transform(
    transform: v2.Transform, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, Target]:
    """Run ``transform`` on a uint8 CHW image and its XYXY pixel boxes; plain tensors back."""
    height, width = image.shape[-2:]
    sample = (
        tv_tensors.Image(image),
        {
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
            ),
            "labels": labels,
        },
    )
    out_image, out_target = transform(*sample)
    return out_image.as_subclass(torch.Tensor), {
        "boxes": out_target["boxes"].as_subclass(torch.Tensor),
        "labels": out_target["labels"],
    }
