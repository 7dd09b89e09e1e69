"""Window grids over a raster, which windows hold data, and which window owns which pixels.

Windows are laid out like prepare's tiles (the last row/column may reach past the raster and is
padded). Neighbouring windows overlap; the cut between two of them runs through the middle of
their overlap, so every raster pixel is owned by exactly one window. A detection is kept only
by the window that owns its centre: boxes cut off at a window's inner edge (whose centre lies
in the neighbour's part when panels are smaller than half the overlap) are dropped there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components.core.errors import UsageError
from components.core.manifest import TileWindow
from components.raster.tiling import EdgeMode, axis_offsets, check_tile_geometry


@dataclass(frozen=True)
class WindowGrid:
    """Window offsets along each axis and the ownership cuts between neighbours.

    Windows are ``width`` x ``height`` raster pixels: square unless detect resamples the raster
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

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of windows."""
        return len(self.row_offsets), len(self.column_offsets)

    def window(self, row_index: int, column_index: int) -> TileWindow:
        return TileWindow(
            col_off=self.column_offsets[column_index],
            row_off=self.row_offsets[row_index],
            width=self.width,
            height=self.height,
        )

    def windows(self, cells: Sequence[int] | None = None) -> list[tuple[int, int, TileWindow]]:
        """``(row index, column index, window)`` row by row; ``cells``: only these flat
        row-major cell indices (a shard's)."""
        columns = len(self.column_offsets)
        if cells is None:
            cells = range(len(self.row_offsets) * columns)
        return [
            (int(cell) // columns, int(cell) % columns, self.window(*divmod(int(cell), columns)))
            for cell in cells
        ]

    def covered(self, footprints: Sequence[tuple[int, int, int, int]] | None) -> np.ndarray:
        """``rows x columns`` booleans: which windows overlap a footprint (pixel rectangle
        ``col_start, row_start, col_end, row_end``); ``None`` = the whole raster holds data."""
        mask = np.zeros(self.shape, dtype=bool)
        if footprints is None:
            mask[:] = True
            return mask
        columns = np.asarray(self.column_offsets)
        rows = np.asarray(self.row_offsets)
        for col_start, row_start, col_end, row_end in footprints:
            # Offsets are sorted: the windows with offset in (start - size, end) overlap.
            first_col, end_col = np.searchsorted(columns, [col_start - self.width + 1, col_end])
            first_row, end_row = np.searchsorted(rows, [row_start - self.height + 1, row_end])
            mask[first_row:end_row, first_col:end_col] = True
        return mask

    def owned_area(self, row_index: int, column_index: int) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` in raster pixels that window owns (half-open)."""
        x_min, x_max = _owned(column_index, self.column_cuts)
        y_min, y_max = _owned(row_index, self.row_cuts)
        return x_min, y_min, x_max, y_max


def plan_grid(
    width: int, height: int, window: int | Sequence[int], overlap: int | Sequence[int]
) -> WindowGrid:
    """The windows covering a ``width`` x ``height`` raster; ``window`` and ``overlap`` are
    one edge for both axes or ``(columns, rows)``."""
    window_columns, window_rows = _pair(window)
    overlap_columns, overlap_rows = _pair(overlap)
    for edge, shared in ((window_columns, overlap_columns), (window_rows, overlap_rows)):
        if not 0 <= shared < edge:
            raise UsageError(f"detect.overlap must be in [0, window={edge}), got {shared}")
    return WindowGrid(
        width=window_columns,
        height=window_rows,
        column_offsets=axis_offsets(width, window_columns, overlap_columns, "pad"),
        row_offsets=axis_offsets(height, window_rows, overlap_rows, "pad"),
    )


def _pair(edges: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(edges, int):
        return edges, edges
    columns, rows = edges
    return int(columns), int(rows)


def tile_grid(width: int, height: int, tile_size: int, overlap: int, edge: EdgeMode) -> WindowGrid:
    """prepare's tiles as a grid (same windows as ``plan_windows``, row by row)."""
    check_tile_geometry(width, height, tile_size, overlap)
    return WindowGrid(
        width=tile_size,
        height=tile_size,
        column_offsets=axis_offsets(width, tile_size, overlap, edge),
        row_offsets=axis_offsets(height, tile_size, overlap, edge),
    )


def _cuts(offsets: list[int], size: int) -> list[float]:
    return [(offsets[k + 1] + offsets[k] + size) / 2 for k in range(len(offsets) - 1)]


def _owned(index: int, cuts: list[float]) -> tuple[float, float]:
    low = cuts[index - 1] if index > 0 else -math.inf
    high = cuts[index] if index < len(cuts) else math.inf
    return low, high
