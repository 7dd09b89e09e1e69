"""Tiling geometry: windows, overlap, edge handling, tile names."""

from __future__ import annotations

import itertools

import pytest

from components.core.errors import UsageError
from components.core.manifest import TileWindow
from components.raster.tiling import axis_offsets, plan_windows, tile_key


def test_exact_fit_gives_a_grid_without_padding() -> None:
    windows = plan_windows(512, 768, 256, 0)
    assert [(w.col_off, w.row_off) for w in windows] == [
        (0, 0),
        (256, 0),
        (0, 256),
        (256, 256),
        (0, 512),
        (256, 512),
    ]


def test_pad_keeps_the_partial_edge_tile_and_drop_leaves_it_out() -> None:
    assert axis_offsets(600, 256, 0, "pad") == [0, 256, 512]
    assert axis_offsets(600, 256, 0, "drop") == [0, 256]


def test_overlap_shares_pixels_and_stops_at_the_edge() -> None:
    offsets = axis_offsets(1000, 256, 56, "pad")
    assert offsets == [0, 200, 400, 600, 800]
    assert offsets[-1] + 256 >= 1000
    assert all(b - a == 200 for a, b in itertools.pairwise(offsets))


def test_no_tile_is_wholly_inside_the_previous_one() -> None:
    # 456 = 256 + 200: the second tile reaches the edge exactly, no third one.
    assert axis_offsets(456, 256, 56, "pad") == [0, 200]


def test_windows_cover_every_pixel_when_padding() -> None:
    width, height = 700, 530
    covered = set()
    for w in plan_windows(width, height, 256, 32):
        covered.update(
            (c, r)
            for c in range(w.col_off, min(w.col_off + w.width, width))
            for r in range(w.row_off, min(w.row_off + w.height, height))
        )
    assert len(covered) == width * height


@pytest.mark.parametrize(
    ("tile_size", "overlap", "needle"),
    [(1024, 0, "larger than the raster"), (256, 256, "prepare.overlap"), (0, 0, "tile_size")],
)
def test_bad_geometry_is_a_usage_error_naming_the_param(
    tile_size: int, overlap: int, needle: str
) -> None:
    with pytest.raises(UsageError, match=needle):
        plan_windows(800, 600, tile_size, overlap)


def test_tile_key_is_scene_col_row_by_pixel_offset() -> None:
    assert tile_key("zurich", TileWindow(col_off=512, row_off=256, width=256, height=256)) == (
        "zurich_512_256.png"
    )
