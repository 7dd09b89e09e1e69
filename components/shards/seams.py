"""Merge detections across window seams, with numpy and shapely only (no torch).

Each window keeps the boxes whose centre it owns (``components/raster/windows.py``); a panel
seen whole by two windows can still give two boxes on either side of a cut. Only boxes near a
cut can have such a twin (one of the pair must cross the cut, the other is within one box size
of it), so class-wise greedy NMS runs on those boxes only: cost grows with the seams, not with
the raster. The detect stage and the shard merge call the same function on the same arrays in
the same order, so a sharded run merges exactly like one process.
"""

from __future__ import annotations

import numpy as np
import shapely


def near_cuts(boxes: np.ndarray, cuts: list[float], reach: float, axis: int) -> np.ndarray:
    """Which ``[x1, y1, x2, y2]`` boxes come within ``reach`` of a cut line along ``axis``."""
    if not cuts or not len(boxes):
        return np.zeros(len(boxes), dtype=bool)
    sorted_cuts = np.sort(np.asarray(cuts))
    low = boxes[:, axis] - reach
    high = boxes[:, axis + 2] + reach
    # A cut lies in [low, high] when the first cut >= low is <= high.
    first = np.searchsorted(sorted_cuts, low, side="left")
    inside = first < len(sorted_cuts)
    result = np.zeros(len(boxes), dtype=bool)
    result[inside] = sorted_cuts[first[inside]] <= high[inside]
    return result


def pair_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of ``first[k]`` with ``second[k]`` for every row ``k``."""
    width = np.minimum(first[:, 2], second[:, 2]) - np.maximum(first[:, 0], second[:, 0])
    height = np.minimum(first[:, 3], second[:, 3]) - np.maximum(first[:, 1], second[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    return inter / (area_first + area_second - inter)


def greedy_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-wise greedy NMS: indices kept (sorted). Higher score first, ties by index; a box
    is suppressed by a kept box of its class with IoU above the threshold (as torchvision's)."""
    count = len(boxes)
    geometries = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pairs = (left < right) & (labels[left] == labels[right])
    left, right = left[pairs], right[pairs]
    overlapping = pair_iou(boxes[left], boxes[right]) > iou_threshold
    left, right = left[overlapping], right[overlapping]
    source = np.concatenate([left, right])
    target = np.concatenate([right, left])
    by_source = np.argsort(source, kind="stable")
    source, target = source[by_source], target[by_source]
    starts = np.searchsorted(source, np.arange(count + 1))
    suppressed = np.zeros(count, dtype=bool)
    kept = []
    for index in np.lexsort((np.arange(count), -scores)):
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed[target[starts[index] : starts[index + 1]]] = True
    return np.sort(np.asarray(kept, dtype=np.int64))


def merge_at_seams(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    column_cuts: list[float],
    row_cuts: list[float],
    iou_threshold: float,
) -> np.ndarray:
    """Indices of the boxes to keep (sorted), after NMS among the boxes near any cut."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    reach = float(extent.max())
    candidates = near_cuts(boxes, column_cuts, reach, 0) | near_cuts(boxes, row_cuts, reach, 1)
    keep = ~candidates
    candidate_indices = np.flatnonzero(candidates)
    if len(candidate_indices):
        survivors = greedy_nms(
            boxes[candidate_indices],
            scores[candidate_indices],
            labels[candidate_indices],
            iou_threshold,
        )
        keep[candidate_indices[survivors]] = True
    return np.flatnonzero(keep)
