"""Detections parts: what a detect shard writes, and the merge into one GeoJSON layer.

A part (``.npz``, numpy only) holds the detections its windows own, in raster pixels, with the
grid cell of the window that found each one, plus what the merge must agree on (raster, grid,
classes, NMS IoU). The merge orders all detections by cell (as one process finds them), merges
duplicates at every window seam (``seams.py``) and writes the GeoJSON. The detect stage runs the
same merge on its single part when it is not sharded.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.raster.geojson import feature_collection
from components.raster.windows import plan_grid
from components.shards.parts import check_complete, load_all, part_uris
from components.shards.seams import merge_at_seams
from components.shards.spec import parse_shard

log = get_logger(__name__)
# What every part of one run must share.
SHARED_KEYS = (
    "raster",
    "crs",
    "transform",
    "width",
    "height",
    "window",
    "overlap",
    "classes",
    "nms_iou",
    "score_threshold",
)


@dataclass
class DetectionPart:
    """One shard's detections: ``boxes`` (n x 4, raster px), ``scores``, ``labels`` (1-based
    class ids), ``cells`` (flat row-major grid cell of the owning window) and ``meta``."""

    meta: dict[str, Any]
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    cells: np.ndarray


@dataclass(frozen=True)
class MergeSummary:
    windows: int
    skipped_nodata: int
    detections: int  # kept by their windows, before the seam merge
    merged: int
    panels: int


def save_part(uri: str, part: DetectionPart) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta=np.array(json.dumps(part.meta, sort_keys=True)),
        boxes=part.boxes.astype(np.float64).reshape(-1, 4),
        scores=part.scores.astype(np.float64),
        labels=part.labels.astype(np.int64),
        cells=part.cells.astype(np.int64),
    )
    uri_io.write_bytes(uri, buffer.getvalue(), content_type="application/octet-stream")


def load_part(uri: str) -> DetectionPart:
    try:
        with np.load(io.BytesIO(uri_io.read_bytes(uri)), allow_pickle=False) as arrays:
            part = DetectionPart(
                meta=json.loads(str(arrays["meta"])),
                boxes=arrays["boxes"],
                scores=arrays["scores"],
                labels=arrays["labels"],
                cells=arrays["cells"],
            )
    except (ValueError, KeyError, OSError) as exc:
        raise SolarpipeError(f"not a detections part: {uri} ({exc})") from exc
    missing = {*SHARED_KEYS, "shard", "windows", "skipped_nodata"} - part.meta.keys()
    if missing:
        raise SolarpipeError(f"not a detections part: {uri} (no {', '.join(sorted(missing))})")
    return part


def check_same_run(parts: list[DetectionPart], uris: list[str]) -> None:
    check_complete([parse_shard(part.meta["shard"]) for part in parts], uris, "detections")
    first = parts[0].meta
    for part, uri in zip(parts[1:], uris[1:], strict=True):
        for key in SHARED_KEYS:
            if part.meta[key] != first[key]:
                raise SolarpipeError(
                    f"detections part {uri} has {key}={part.meta[key]!r}, unlike "
                    f"{first[key]!r} in {uris[0]}: parts of different runs"
                )


def merged_collection(parts: list[DetectionPart]) -> tuple[dict[str, Any], MergeSummary]:
    """The GeoJSON FeatureCollection of all parts, seam duplicates merged."""
    meta = parts[0].meta
    cells = np.concatenate([part.cells for part in parts])
    order = np.argsort(cells, kind="stable")  # one process's order: window by window
    boxes = np.concatenate([part.boxes.reshape(-1, 4) for part in parts])[order]
    scores = np.concatenate([part.scores for part in parts])[order]
    labels = np.concatenate([part.labels for part in parts])[order]
    grid = plan_grid(meta["width"], meta["height"], meta["window"], meta["overlap"])
    kept = merge_at_seams(boxes, scores, labels, grid.column_cuts, grid.row_cuts, meta["nms_iou"])
    final = kept[np.lexsort((boxes[kept, 0], boxes[kept, 1]))]  # top to bottom, left to right
    classes = meta["classes"]
    collection = feature_collection(
        [tuple(box) for box in boxes[final].tolist()],
        scores[final].tolist(),
        [classes[int(label) - 1] for label in labels[final]],
        Affine(*meta["transform"]),
        meta["crs"],
    )
    summary = MergeSummary(
        windows=sum(part.meta["windows"] for part in parts),
        skipped_nodata=sum(part.meta["skipped_nodata"] for part in parts),
        detections=len(boxes),
        merged=len(boxes) - len(final),
        panels=len(final),
    )
    return collection, summary


def write_detections(out_uri: str, parts: list[DetectionPart]) -> MergeSummary:
    collection, summary = merged_collection(parts)
    uri_io.write_bytes(
        out_uri, uri_io.dump_json_large(collection), content_type="application/geo+json"
    )
    log.info("wrote %d panels to %s", summary.panels, out_uri)
    return summary


def merge_detections(part_values: list[str], out_uri: str) -> MergeSummary:
    """Read every part (all present, or nothing is written), merge, write the GeoJSON."""
    uris = part_uris(part_values, ".npz")
    parts = load_all(uris, load_part)
    check_same_run(parts, uris)
    return write_detections(out_uri, parts)
