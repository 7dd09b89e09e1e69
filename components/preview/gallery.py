"""The preview's pages: a markdown summary (counts per split) and an HTML gallery of samples."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from components.core.annotations import AnnotatedImage, AnnotationsFile
from components.core.annotations import Split as SplitName

SPLITS: tuple[SplitName, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One drawn tile: where its PNG is in the output folder and what it shows."""

    split: SplitName
    file_name: str  # relative to the output folder
    image: AnnotatedImage


def summary_markdown(annotations: AnnotationsFile, source_uri: str) -> str:
    rows = [
        "| split | tiles | with panels | without panels | boxes |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in SPLITS:
        images = annotations.split(name)
        with_panels = sum(1 for image in images if image.boxes)
        boxes = sum(len(image.boxes) for image in images)
        rows.append(
            f"| {name} | {len(images)} | {with_panels} | {len(images) - with_panels} | {boxes} |"
        )
    total_boxes = sum(len(image.boxes) for image in annotations.images)
    rows.append(
        f"| **all** | {len(annotations.images)} | "
        f"{sum(1 for image in annotations.images if image.boxes)} | "
        f"{sum(1 for image in annotations.images if not image.boxes)} | {total_boxes} |"
    )
    classes = ", ".join(annotations.classes)
    return (
        f"# Ground truth preview\n\nSource: `{source_uri}`; classes: {classes}.\n\n"
        + "\n".join(rows)
        + "\n\nSampled tiles with their boxes: see `index.html`.\n"
    )


def gallery_html(
    samples: Sequence[Sample],
    source_uri: str,
    summary: str,
    image_source: Callable[[Sample], str] = lambda sample: sample.file_name,
) -> str:
    """The gallery page; ``image_source`` gives each ``<img src>`` (a file name, a data URI)."""
    sections = []
    for name in SPLITS:
        figures = [
            f'<figure><img src="{html.escape(image_source(s))}" alt="{html.escape(s.image.image)}">'
            f"<figcaption>{html.escape(s.image.image.rsplit('/', 1)[-1])} "
            f"({len(s.image.boxes)} boxes)</figcaption></figure>"
            for s in samples
            if s.split == name
        ]
        body = "\n".join(figures) or "<p>no tiles</p>"
        sections.append(f'<h2>{name}</h2>\n<div class="grid">\n{body}\n</div>')
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>solarpipe preview</title>\n'
        "<style>body{font-family:sans-serif;margin:1em} .grid{display:flex;flex-wrap:wrap;"
        "gap:8px} figure{margin:0} img{width:256px;image-rendering:pixelated} "
        "figcaption{font-size:12px} pre{background:#f4f4f4;padding:8px}</style></head><body>\n"
        f"<h1>Ground truth preview</h1>\n<p>{html.escape(source_uri)}</p>\n"
        f"<pre>{html.escape(summary)}</pre>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
