"""evaluate's page for people: the figures and the best and worst tiles, one self-contained HTML.

Written to the output folder as ``overlays.html`` and, with ``--report overlays``, where
Kubeflow picks it up (its HTML viewer shows self-contained pages only: images are data URIs).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from components.core.reports import png_data_uri

SHOWN = (
    ("map_50", "mAP@0.5"),
    ("map", "mAP@0.5:0.95"),
    ("map_75", "mAP@0.75"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
)


def evaluation_page(metrics: dict[str, Any], split: str, overlays: Path) -> str:
    """The figures of ``metrics`` and every overlay PNG in the folder ``overlays``, inline."""
    rows = "".join(f"<tr><th>{label}</th><td>{metrics[key]:.3f}</td></tr>" for key, label in SHOWN)
    sections = []
    for kind in ("best", "worst"):
        figures = [
            f'<figure><img src="{png_data_uri(path.read_bytes())}" alt="{html.escape(path.name)}">'
            f"<figcaption>{html.escape(path.stem.split('_', 2)[-1])}</figcaption></figure>"
            for path in sorted(overlays.glob(f"{kind}_*.png"))
        ]
        body = "\n".join(figures) or "<p>none</p>"
        sections.append(f'<h2>{kind} tiles</h2>\n<div class="grid">\n{body}\n</div>')
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>solarpipe evaluation</title>\n'
        "<style>body{font-family:sans-serif;margin:1em} .grid{display:flex;flex-wrap:wrap;gap:8px}"
        " figure{margin:0} img{width:256px;image-rendering:pixelated} figcaption{font-size:12px}"
        " th{text-align:left;padding-right:1em}</style></head><body>\n"
        f"<h1>Evaluation on the {html.escape(split)} split ({metrics['images']} tiles)</h1>\n"
        f"<table>{rows}</table>\n"
        f"<p>At score ≥ {metrics['score_threshold']:g} and IoU ≥ {metrics['iou_threshold']:g}. "
        "Truth in green, predictions in red.</p>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
