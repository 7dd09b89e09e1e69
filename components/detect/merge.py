"""Merge detections across window seams.

Each window keeps the boxes whose centre it owns (``windows.py``); a panel seen whole by two
windows can still give two boxes on either side of a cut. Only boxes near a cut can have such a
twin (one of the pair must cross the cut, the other is within one box size of it), so class-wise
NMS runs on those boxes only: cost grows with the seams, not with the raster.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms


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
        survivors = batched_nms(
            torch.from_numpy(boxes[candidate_indices]).double(),
            torch.from_numpy(scores[candidate_indices]).double(),
            torch.from_numpy(labels[candidate_indices]),
            iou_threshold,
        ).numpy()
        keep[candidate_indices[survivors]] = True
    return np.flatnonzero(keep)
