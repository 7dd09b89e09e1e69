"""Panels on a window seam come out of detect exactly once.

The model is an oracle scripted like the exported one (same attributes, same call): it boxes the
bright pixels of each window it is given, so every window that sees part of a panel proposes a
box for that part. Whatever detect does with the windows (ownership by box centre, NMS across
the seams), a panel must end as one feature, wherever it sits on the grid.
"""

# No ``from __future__ import annotations`` here: TorchScript needs the annotations evaluated.
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from components.core import uri as uri_io
from components.detect.__main__ import main as detect_main
from components.raster.windows import plan_grid
from tests.rasters import write_geotiff

WINDOW, OVERLAP = 128, 64
GROUND, PANEL = 10, 250


class BrightBoxOracle(nn.Module):
    """One box around the bright pixels of each window (score 0.9), none when there are none."""

    image_size: int
    score_threshold: float
    classes: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.image_size = WINDOW
        self.score_threshold = 0.3
        self.classes = ["solar_panel"]

    def forward(
        self, images: list[Tensor], score_threshold: float = 0.3
    ) -> list[dict[str, Tensor]]:
        results: list[dict[str, Tensor]] = []
        for image in images:
            channel = image[:, :, 0].float() if image.dtype == torch.uint8 else image[0] * 255.0
            bright = channel > 128
            rows = torch.nonzero(bright.any(dim=1)).flatten()
            columns = torch.nonzero(bright.any(dim=0)).flatten()
            if rows.numel() == 0:
                boxes = torch.zeros((0, 4))
            else:
                boxes = torch.stack(
                    [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
                ).float()[None]
            count = boxes.shape[0]
            results.append(
                {
                    "boxes": boxes,
                    "scores": torch.full((count,), 0.9),
                    "labels": torch.ones(count, dtype=torch.int64),
                }
            )
        return results


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oracle") / "model.pt"
    torch.jit.script(BrightBoxOracle()).save(str(path))
    return path


def detect_one_panel(
    tmp_path: Path, oracle: Path, left: int, top: int, size: int, *settings: str
) -> list:
    width = height = 4 * WINDOW
    pixels = np.full((3, height, width), GROUND, dtype=np.uint8)
    pixels[:, top : top + size, left : left + size] = PANEL
    raster = write_geotiff(tmp_path / "scene.tif", pixels)
    out = tmp_path / "panels.geojson"
    argv = ["--raster", str(raster), "--model", str(oracle), "--out", str(out)]
    for setting in (f"detect.overlap={OVERLAP}", "detect.device=cpu", *settings):
        argv += ["--set", setting]
    assert detect_main(argv) == 0
    return uri_io.read_json(str(out))["features"]


def seam() -> int:
    """The first column (and row) cut between windows: where ownership changes hands."""
    grid = plan_grid(4 * WINDOW, 4 * WINDOW, WINDOW, OVERLAP)
    return int(grid.column_cuts[0])


@pytest.mark.parametrize(
    ("size", "where"),
    [
        (24, "narrower than the overlap: two windows see all of it"),
        (90, "wider than the overlap: the windows see parts of it"),
    ],
)
def test_a_panel_across_a_seam_is_one_feature(
    tmp_path: Path, oracle: Path, size: int, where: str
) -> None:
    cut = seam()
    features = detect_one_panel(tmp_path, oracle, cut - size // 2, cut - size // 2, size)
    assert len(features) == 1, where


def test_without_the_seam_merge_the_parts_of_a_wide_panel_stay_apart(
    tmp_path: Path, oracle: Path
) -> None:
    """What the merge is for: each window keeps the part whose centre it owns."""
    cut = seam()
    features = detect_one_panel(tmp_path, oracle, cut - 45, cut - 45, 90, "detect.nms_iou=1")
    assert len(features) == 4  # the panel sits on a column cut and a row cut


def test_a_panel_away_from_the_seams_is_one_feature_too(tmp_path: Path, oracle: Path) -> None:
    features = detect_one_panel(tmp_path, oracle, 8, 8, 20)
    assert len(features) == 1
