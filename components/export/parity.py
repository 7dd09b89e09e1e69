"""Parity check: the scripted model must give the eager model's detections on sample images.

Samples are seeded random images in both accepted layouts (uint8 ``H×W×3`` and float
``3×H×W``) and of several sizes, so the resize-in and rescale-out paths are covered. Every
detection the detector keeps is compared (score threshold 0), in order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from components.core.errors import SolarpipeError

SAMPLE_SEED = 0
# Height and width of each sample as multiples of the model's input size.
SAMPLE_SHAPES = ((1.0, 1.0), (1.5, 0.75), (0.5, 2.0), (2.0, 2.0))


@dataclass(frozen=True)
class ParityReport:
    """How close the scripted model came to the eager one."""

    images: int
    detections: int
    max_box_diff: float
    max_score_diff: float
    atol: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def sample_images(image_size: int, count: int, seed: int = SAMPLE_SEED) -> list[Tensor]:
    """``count`` seeded images: even ones uint8 ``H×W×3``, odd ones float ``3×H×W``."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for index in range(count):
        height_factor, width_factor = SAMPLE_SHAPES[index % len(SAMPLE_SHAPES)]
        height = max(8, round(image_size * height_factor))
        width = max(8, round(image_size * width_factor))
        # Smooth blobs rather than pixel noise, so detectors see object-like structure.
        coarse = torch.rand(3, max(2, height // 16), max(2, width // 16), generator=generator)
        image = torch.nn.functional.interpolate(
            coarse[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        if index % 2 == 0:
            images.append((image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous())
        else:
            images.append(image.contiguous())
    return images


def check_parity(
    eager_model: nn.Module, scripted_model: nn.Module, images: list[Tensor], atol: float
) -> ParityReport:
    """Compare every detection of both models; raise naming the first disagreement."""
    with torch.inference_mode():
        eager_outputs = eager_model(images, 0.0)
        scripted_outputs = scripted_model(images, 0.0)
    max_box_diff = max_score_diff = 0.0
    detections = 0
    for index, (eager, scripted) in enumerate(zip(eager_outputs, scripted_outputs, strict=True)):
        count, scripted_count = len(eager["scores"]), len(scripted["scores"])
        if count != scripted_count:
            raise SolarpipeError(
                f"parity check failed on sample {index}: the eager model gives {count} "
                f"detections, the TorchScript model {scripted_count}"
            )
        if not torch.equal(eager["labels"], scripted["labels"]):
            raise SolarpipeError(
                f"parity check failed on sample {index}: class labels differ between the eager "
                "and the TorchScript model"
            )
        detections += count
        if count:
            max_box_diff = max(max_box_diff, _max_abs_diff(eager["boxes"], scripted["boxes"]))
            max_score_diff = max(max_score_diff, _max_abs_diff(eager["scores"], scripted["scores"]))
    report = ParityReport(len(images), detections, max_box_diff, max_score_diff, atol)
    if max_box_diff > atol or max_score_diff > atol:
        raise SolarpipeError(
            f"parity check failed: eager and TorchScript outputs differ by up to "
            f"{max_box_diff:.3g} px (boxes) and {max_score_diff:.3g} (scores), more than "
            f"export.parity_atol={atol:g}"
        )
    return report


def _max_abs_diff(first: Tensor, second: Tensor) -> float:
    return float((first.float() - second.float()).abs().max())
