"""Label Studio predictions from the exported model's boxes: the payload and its model version.

A prediction holds the tile's boxes from ``labelstudio.score_threshold`` up as
``rectanglelabels`` results in percent of the tile's real width and height, each with the
model's score, and a task score (``1 - priority``, see ``priority.py``). Its model version is
the export's name and version (``export.json``'s BentoML tag) plus the run id:
``solar_panel_detector:3xq7…@<run id>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from components.core import uri as uri_io
from components.core.errors import UsageError
from components.labelstudio.export_objects import PixelBox, rectangle_result
from components.labelstudio.priority import task_score

# Label Studio lists a task's model versions joined by commas (SQLite): none may hold one.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
SCORE_DIGITS = 4


@dataclass(frozen=True)
class LabelTarget:
    """The project's RectangleLabels control: its name, its image's name and data key, labels."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class TileDetections:
    """The model's candidate boxes on one task's tile, in the tile's pixels."""

    task_id: int
    image: str
    width: int
    height: int
    boxes: Sequence[tuple[float, float, float, float]]
    scores: Sequence[float]
    labels: Sequence[str]


def check_run_id(run_id: str) -> str:
    """The run id, or a usage error: letters, digits, ``._:-``, no comma or space."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise UsageError(
            f"--run-id {run_id!r}: use up to 100 letters, digits, '.', '_', ':' or '-' "
            "(no spaces or commas)"
        )
    return run_id


def export_identity(model_uri: str) -> str:
    """``name:version`` of the export (``export.json``), else the file's name and content hash."""
    from components.ml.scripted import EXPORT_SUMMARY_FILE, model_file_uri  # torch: predict only

    file_uri = model_file_uri(model_uri)
    summary_uri = uri_io.join(uri_io.parent(file_uri), EXPORT_SUMMARY_FILE)
    if uri_io.exists(summary_uri):
        summary = uri_io.read_json(summary_uri)
        tag = summary.get("bento_tag") if isinstance(summary, dict) else None
        if isinstance(tag, str) and tag:
            return tag
    digest = hashlib.sha256(uri_io.read_bytes(file_uri)).hexdigest()[:12]
    return f"{uri_io.basename(file_uri).rsplit('.', 1)[0]}:{digest}"


def model_version(identity: str, run_id: str) -> str:
    return f"{identity}@{check_run_id(run_id)}"


def prediction_payload(
    tile: TileDetections,
    target: LabelTarget,
    threshold: float,
    priority: float,
    version: str,
) -> dict[str, Any]:
    """The prediction of one task, as ``POST /api/projects/<id>/import/predictions`` takes it."""
    results = []
    for box, score, label in zip(tile.boxes, tile.scores, tile.labels, strict=True):
        if score < threshold:
            continue
        result = rectangle_result(
            PixelBox(*box),
            tile.width,
            tile.height,
            label,
            from_name=target.from_name,
            to_name=target.to_name,
        )
        result["id"] = f"sp{len(results)}"
        result["score"] = round(float(score), SCORE_DIGITS)
        results.append(result)
    return {
        "task": tile.task_id,
        "result": results,
        "score": task_score(priority),
        "model_version": version,
    }
