"""Small annotated tile sets for the dataset and train tests: dark tiles with bright panels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, AnnotationsFile, save_annotations

PANEL_RGB = (250, 250, 250)
GROUND_RGB = (10, 10, 10)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tile_with_panels(size: int, boxes: list[tuple[int, int, int, int]]) -> bytes:
    """A ``size`` px PNG tile: dark ground, one bright rectangle per ``(x1, y1, x2, y2)`` box."""
    pixels = np.full((size, size, 3), GROUND_RGB, dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2] = PANEL_RGB
    return png_bytes(pixels)


def write_tile_set(
    prefix: str,
    count: int,
    size: int = 64,
    splits: tuple[str, ...] = ("train",),
    seed: int = 0,
    pixel_size_m: float | None = None,
) -> AnnotationsFile:
    """``count`` tiles under ``<prefix>/tiles/`` with 1-2 random panels each (split cycled
    through ``splits``), and their ``<prefix>/annotations.json`` (recording ``pixel_size_m``)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            width, height = (int(v) for v in rng.integers(size // 6, size // 3, 2))
            x1 = int(rng.integers(0, size - width))
            y1 = int(rng.integers(0, size - height))
            boxes.append((x1, y1, x1 + width, y1 + height))
        image_uri = uri_io.join(prefix, "tiles", f"tile_{index:03d}.png")
        uri_io.write_bytes(image_uri, tile_with_panels(size, boxes), content_type="image/png")
        images.append(
            AnnotatedImage(
                image=image_uri,
                width=size,
                height=size,
                boxes=[tuple(float(v) for v in box) for box in boxes],
                labels=["solar_panel"] * len(boxes),
                split=splits[index % len(splits)],
                task_id=index,
            )
        )
    annotations = AnnotationsFile(classes=["solar_panel"], images=images, pixel_size_m=pixel_size_m)
    save_annotations(uri_io.join(prefix, "annotations.json"), annotations)
    return annotations
