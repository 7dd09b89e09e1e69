"""Tiling geometry: the pixel windows that cover a raster, with overlap and edge handling."""

from __future__ import annotations

from typing import Literal

from components.core.errors import UsageError
from components.core.manifest import TileWindow

EdgeMode = Literal["pad", "drop"]


def axis_offsets(length: int, tile_size: int, overlap: int, edge: EdgeMode) -> list[int]:
    """Start offsets along one axis; the last tile reaches the edge (``pad``) or stays inside (``drop``)."""
    stride = tile_size - overlap
    offsets = []
    offset = 0
    while offset < length:
        reaches_edge = offset + tile_size >= length
        if edge == "pad" or offset + tile_size <= length:
            offsets.append(offset)
        if reaches_edge:
            break
        offset += stride
    return offsets


def plan_windows(
    width: int, height: int, tile_size: int, overlap: int, edge: EdgeMode = "pad"
) -> list[TileWindow]:
    """Every tile window of a ``width`` x ``height`` raster, row by row.

    Windows are ``tile_size`` square; with ``edge="pad"`` the last row/column may reach past the
    raster (the reader pads it), with ``edge="drop"`` incomplete tiles are left out.
    """
    check_tile_geometry(width, height, tile_size, overlap)
    return [
        TileWindow(col_off=col, row_off=row, width=tile_size, height=tile_size)
        for row in axis_offsets(height, tile_size, overlap, edge)
        for col in axis_offsets(width, tile_size, overlap, edge)
    ]


def check_tile_geometry(width: int, height: int, tile_size: int, overlap: int) -> None:
    """Usage errors naming the param for a tile size or overlap that cannot tile the raster."""
    if tile_size <= 0:
        raise UsageError(f"prepare.tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise UsageError(f"prepare.overlap must be in [0, tile_size={tile_size}), got {overlap}")
    if tile_size > width or tile_size > height:
        raise UsageError(
            f"prepare.tile_size={tile_size} is larger than the raster ({width}x{height} px)"
        )


def tile_key(scene: str, window: TileWindow) -> str:
    """``<scene>_<col>_<row>.png`` by pixel offset."""
    return f"{scene}_{window.col_off}_{window.row_off}.png"
