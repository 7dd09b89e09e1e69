"""Draw ground-truth boxes onto a tile with Pillow (the preview image carries no torch)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, UnidentifiedImageError

from components.core.errors import SolarpipeError

BOX_COLOUR = (255, 0, 255)  # magenta: rare in aerial images


def draw_boxes(
    tile_png: bytes,
    boxes: Sequence[Sequence[float]],
    line_width: int,
    source: str,
    colour: tuple[int, int, int] = BOX_COLOUR,
) -> bytes:
    """The tile as PNG bytes with each ``[xmin, ymin, xmax, ymax]`` box outlined."""
    try:
        image = Image.open(io.BytesIO(tile_png)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise SolarpipeError(f"not a readable image: {source} ({exc})") from exc
    canvas = ImageDraw.Draw(image)
    for xmin, ymin, xmax, ymax in boxes:
        canvas.rectangle(
            [(xmin, ymin), (max(xmin, xmax - 1), max(ymin, ymax - 1))],
            outline=colour,
            width=line_width,
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
