"""The preview stage's work: a seeded sample per split, boxes drawn, pages written atomically."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, load_annotations
from components.core.draw import draw_boxes
from components.core.errors import MISSING_TILES_HINT, NotFoundError
from components.core.params import PreviewParams
from components.core.reports import png_data_uri
from components.preview.gallery import SPLITS, Sample, gallery_html, summary_markdown

FETCH_WORKERS = 8


@dataclass
class PreviewSummary:
    tiles_drawn: int
    boxes_drawn: int
    inline_gallery: str | None = None  # the gallery as one self-contained page, when asked


def choose_samples(
    images: list[AnnotatedImage], count: int, seed: int, split: str
) -> list[AnnotatedImage]:
    """A seeded choice of ``count`` images (all when fewer), in image-URI order."""
    ordered = sorted(images, key=lambda image: image.image)
    if len(ordered) <= count:
        return ordered
    chosen = random.Random(f"{seed}:{split}").sample(ordered, count)
    return sorted(chosen, key=lambda image: image.image)


def sample_file_name(split: str, image_uri: str) -> str:
    return f"images/{split}-{uri_io.basename(image_uri)}"


def render_sample(sample: Sample, folder: Path, line_width: int, annotations_uri: str) -> None:
    try:
        tile_png = uri_io.read_bytes(sample.image.image)
    except NotFoundError as exc:
        raise NotFoundError(
            f"tile listed in {annotations_uri} is missing ({exc}); {MISSING_TILES_HINT}"
        ) from exc
    drawn = draw_boxes(tile_png, sample.image.boxes, line_width, sample.image.image)
    target = folder / sample.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(drawn)


def preview(
    annotations_uri: str, out_uri: str, params: PreviewParams, inline: bool = False
) -> PreviewSummary:
    """Write the gallery of ``params.samples`` tiles per split to the folder ``out_uri``;
    ``inline``: also return it as one page with the images inside."""
    annotations = load_annotations(annotations_uri)
    samples = [
        Sample(name, sample_file_name(name, image.image), image)
        for name in SPLITS
        for image in choose_samples(annotations.split(name), params.samples, params.seed, name)
    ]
    summary = summary_markdown(annotations, annotations_uri)
    with uri_io.local_output_dir(out_uri) as folder:
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            list(
                pool.map(
                    lambda s: render_sample(s, folder, params.line_width, annotations_uri),
                    samples,
                )
            )
        (folder / "summary.md").write_text(summary)
        (folder / "index.html").write_text(gallery_html(samples, annotations_uri, summary))
        inline_gallery = (
            gallery_html(
                samples,
                annotations_uri,
                summary,
                lambda sample: png_data_uri((folder / sample.file_name).read_bytes()),
            )
            if inline
            else None
        )
    return PreviewSummary(len(samples), sum(len(s.image.boxes) for s in samples), inline_gallery)
