"""Window layout for whole-raster inference, and which window owns which part of the raster.

Windows are laid out like prepare's tiles (the last row/column may reach past the raster and is
padded). Neighbouring windows overlap; the cut between two of them runs through the middle of
their overlap, so every raster pixel is owned by exactly one window. A detection is kept only
by the window that owns its centre: boxes cut off at a window's inner edge (whose centre lies
in the neighbour's part when panels are smaller than half the overlap) are dropped there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.core.errors import UsageError
from components.core.manifest import TileWindow
from components.raster.tiling import axis_offsets


@dataclass(frozen=True)
class WindowGrid:
    """Window offsets along each axis and the ownership cuts between neighbours.

    Windows are ``width`` x ``height`` raster pixels: square unless the raster is resampled
    to a model by different factors along its columns and rows.
    """

    width: int
    height: int
    column_offsets: list[int]
    row_offsets: list[int]

    @property
    def column_cuts(self) -> list[float]:
        return _cuts(self.column_offsets, self.width)

    @property
    def row_cuts(self) -> list[float]:
        return _cuts(self.row_offsets, self.height)

    def windows(self) -> list[tuple[int, int, TileWindow]]:
        """``(row index, column index, window)`` row by row."""
        return [
            (
                row_index,
                column_index,
                TileWindow(col_off=col, row_off=row, width=self.width, height=self.height),
            )
            for row_index, row in enumerate(self.row_offsets)
            for column_index, col in enumerate(self.column_offsets)
        ]

    def owned_area(self, row_index: int, column_index: int) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` in raster pixels that window owns (half-open)."""
        x_min, x_max = _owned(column_index, self.column_cuts)
        y_min, y_max = _owned(row_index, self.row_cuts)
        return x_min, y_min, x_max, y_max


def plan_grid(
    width: int,
    height: int,
    window: int | tuple[int, int],
    overlap: int | tuple[int, int],
) -> WindowGrid:
    """The windows covering a ``width`` x ``height`` raster; ``window`` and ``overlap`` are
    one edge for both axes or ``(columns, rows)``."""
    window_columns, window_rows = (window, window) if isinstance(window, int) else window
    overlap_columns, overlap_rows = (overlap, overlap) if isinstance(overlap, int) else overlap
    for edge, shared in ((window_columns, overlap_columns), (window_rows, overlap_rows)):
        if not 0 <= shared < edge:
            raise UsageError(f"detect.overlap must be in [0, window={edge}), got {shared}")
    return WindowGrid(
        width=window_columns,
        height=window_rows,
        column_offsets=axis_offsets(width, window_columns, overlap_columns, "pad"),
        row_offsets=axis_offsets(height, window_rows, overlap_rows, "pad"),
    )


def _cuts(offsets: list[int], size: int) -> list[float]:
    return [(offsets[k + 1] + offsets[k] + size) / 2 for k in range(len(offsets) - 1)]


def _owned(index: int, cuts: list[float]) -> tuple[float, float]:
    low = cuts[index - 1] if index > 0 else -math.inf
    high = cuts[index] if index < len(cuts) else math.inf
    return low, high
