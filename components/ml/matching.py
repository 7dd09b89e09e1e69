"""Match predictions to ground truth (greedy by score, per class) and count from the matches.

Matching every prediction once, highest score first, gives each prediction a fixed true/false
positive status; counts at any score threshold are then prefix sums. This yields precision,
recall and F1 at the configured threshold and the precision–recall curve from one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

CURVE_THRESHOLDS = [round(step / 100, 2) for step in range(101)]


@dataclass(frozen=True)
class ImageMatches:
    """One image's predictions (by descending score) with their match status."""

    scores: Tensor  # (P,) float
    true_positive: Tensor  # (P,) bool
    ground_truth: int  # number of truth boxes

    def counts(self, score_threshold: float) -> tuple[int, int, int]:
        """(true positives, false positives, false negatives) at ``score >= threshold``."""
        kept = self.scores >= score_threshold
        tp = int((self.true_positive & kept).sum())
        fp = int((~self.true_positive & kept).sum())
        return tp, fp, self.ground_truth - tp


def match_image(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    truth_boxes: Tensor,
    truth_labels: Tensor,
    iou_threshold: float,
) -> ImageMatches:
    """Greedy matching: each prediction, best score first, takes the unmatched truth box of
    its class with the highest IoU if that IoU reaches ``iou_threshold``."""
    order = torch.argsort(pred_scores, descending=True, stable=True)
    scores = pred_scores[order].float()
    true_positive = torch.zeros(len(order), dtype=torch.bool)
    if len(order) and len(truth_boxes):
        iou = box_iou(pred_boxes[order].float(), truth_boxes.float())
        iou[pred_labels[order][:, None] != truth_labels[None, :]] = -1.0
        taken = torch.zeros(len(truth_boxes), dtype=torch.bool)
        for index in range(len(order)):
            candidates = iou[index].masked_fill(taken, -1.0)
            best = int(torch.argmax(candidates))
            if candidates[best] >= iou_threshold:
                true_positive[index] = True
                taken[best] = True
    return ImageMatches(scores, true_positive, len(truth_boxes))


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; with nothing predicted, precision is 1 only if nothing was missed."""
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1


def total_counts(matches: list[ImageMatches], score_threshold: float) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for image in matches:
        image_tp, image_fp, image_fn = image.counts(score_threshold)
        tp, fp, fn = tp + image_tp, fp + image_fp, fn + image_fn
    return tp, fp, fn


def precision_recall_curve(matches: list[ImageMatches]) -> list[dict[str, float]]:
    """Precision and recall at score thresholds 0.00, 0.01, …, 1.00 (DVC plot rows)."""
    rows = []
    for threshold in CURVE_THRESHOLDS:
        precision, recall, _ = precision_recall_f1(*total_counts(matches, threshold))
        rows.append(
            {"threshold": threshold, "precision": round(precision, 6), "recall": round(recall, 6)}
        )
    return rows


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold and the precision, recall and F1 there."""

    threshold: float
    precision: float
    recall: float
    f1: float


def best_f1_threshold(matches: list[ImageMatches]) -> OperatingPoint:
    """The score threshold (of 0.00, 0.01, …, 1.00) with the highest F1; among equal F1s the
    middle one of that run, so a flat optimum does not put the threshold at its edge."""
    points = [
        OperatingPoint(threshold, *precision_recall_f1(*total_counts(matches, threshold)))
        for threshold in CURVE_THRESHOLDS
    ]
    best_f1 = max(point.f1 for point in points)
    best = [point for point in points if point.f1 >= best_f1 - 1e-12]
    return best[len(best) // 2]
