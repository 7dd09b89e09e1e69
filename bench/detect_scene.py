"""Whole-scene quality of an exported model: synthetic scenes it never saw, at their own 0.1 m
and resampled to other pixel sizes, scored as a map layer.

For each seed: synthesize the scene (``components.synth``, 0.1 m), write copies resampled to
the other pixel sizes (``components.raster.resample``), run detect over each through its stage
contract (``python -m components.detect``), and match the detections to the truth panels'
axis-aligned boxes in map coordinates, one to one by score (highest first, each truth box
taken once) at IoU 0.5 and 0.3. Prints recall, precision and F1 per pixel size (seeds pooled)
and per scene, the mean IoU of the matches (box quality), detect's wall time, and the goals:
recall and precision >= 0.9 at IoU 0.5 at the model's pixel size, and each other pixel size's
recall >= 0.8x that recall. Training scenes use seeds from 0; the default seeds here are far
from them.

Usage: nice python bench/detect_scene.py --model out/export [--seeds 1000,1001,1002,1003] [--size 2048]
       [--pixel-sizes 0.1,0.2] [--work DIR] [--json FILE] [--set detect.overlap=96 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from stages import run_stage  # bench/stages.py (this script's folder)

from components.ml.matching import ImageMatches, match_image, precision_recall_f1
from components.synth.geotiff import truth_uri_for, write_scene

IOU_THRESHOLDS = (0.5, 0.3)
GOAL_RECALL = GOAL_PRECISION = 0.9
GOAL_RECALL_RATIO = 0.8
NATIVE_PIXEL_SIZE = 0.1  # the synthetic scenes' own


@dataclass
class Scored:
    """Detections of one or more scenes matched at each IoU threshold."""

    matches: dict[float, list[ImageMatches]] = field(default_factory=dict)
    matched_ious: list[float] = field(default_factory=list)  # of the matches at the lowest IoU
    detect_seconds: float = 0.0

    def add(self, other: Scored) -> None:
        for iou, matches in other.matches.items():
            self.matches.setdefault(iou, []).extend(matches)
        self.matched_ious += other.matched_ious
        self.detect_seconds += other.detect_seconds

    def figures(self, iou: float) -> tuple[int, int, float, float, float]:
        """(truth panels, detections, recall, precision, F1) at ``iou``."""
        tp = sum(int(m.true_positive.sum()) for m in self.matches[iou])
        detections = sum(len(m.scores) for m in self.matches[iou])
        truth = sum(m.ground_truth for m in self.matches[iou])
        precision, recall, f1 = precision_recall_f1(tp, detections - tp, truth - tp)
        return truth, detections, recall, precision, f1


def boxes_of(geojson: dict, origin: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned ``[x1, y1, x2, y2]`` of every feature (map units, relative to ``origin``
    so that float32 keeps centimetres) and each feature's score (1 without one)."""
    boxes, scores = [], []
    for feature in geojson["features"]:
        ring = np.asarray(feature["geometry"]["coordinates"][0], dtype=np.float64)
        x, y = ring[:, 0] - origin[0], ring[:, 1] - origin[1]
        boxes.append([x.min(), y.min(), x.max(), y.max()])
        scores.append(float(feature.get("properties", {}).get("score", 1.0)))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores)


def score_scene(detections: dict, truth: dict) -> Scored:
    truth_boxes, _ = boxes_of(truth, (0.0, 0.0))
    origin = (float(truth_boxes[:, 0].min()), float(truth_boxes[:, 1].min()))
    truth_boxes, _ = boxes_of(truth, origin)
    found, scores = boxes_of(detections, origin)
    scored = Scored()
    for iou in IOU_THRESHOLDS:
        matches = match_image(
            torch.from_numpy(found),
            torch.from_numpy(scores),
            torch.ones(len(found), dtype=torch.int64),
            torch.from_numpy(truth_boxes),
            torch.ones(len(truth_boxes), dtype=torch.int64),
            iou,
        )
        scored.matches[iou] = [matches]
    scored.matched_ious = matched_ious(found, scores, truth_boxes, min(IOU_THRESHOLDS))
    return scored


def matched_ious(
    found: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float
) -> list[float]:
    """IoU of each one-to-one match (by score) at ``iou``: how tight the found boxes are."""
    from torchvision.ops import box_iou

    if not len(found) or not len(truth):
        return []
    overlaps = box_iou(torch.from_numpy(found), torch.from_numpy(truth))
    taken = torch.zeros(len(truth), dtype=torch.bool)
    result = []
    for index in np.argsort(-scores, kind="stable"):
        candidates = overlaps[int(index)].masked_fill(taken, -1.0)
        best = int(torch.argmax(candidates))
        if candidates[best] >= iou:
            taken[best] = True
            result.append(float(candidates[best]))
    return result


def run_detect(raster: Path, model: str, out: Path, overrides: list[str]) -> float:
    options = ("--raster", str(raster), "--model", model, "--out", str(out))
    return run_stage("detect", *options, overrides=overrides, bench="detect_scene")


def scene_rasters(work: Path, seed: int, size: int, pixel_sizes: list[float]) -> dict[float, Path]:
    """The scene at 0.1 m and its resampled copies (kept in ``work`` for reruns)."""
    from components.raster.resample import write_resampled

    native = work / f"scene-{seed}-{size}.tif"
    if not native.exists() or not Path(truth_uri_for(str(native))).exists():
        write_scene(str(native), size=size, seed=seed)
    rasters = {}
    for pixel_size in pixel_sizes:
        if abs(pixel_size - NATIVE_PIXEL_SIZE) < 1e-9:
            rasters[pixel_size] = native
            continue
        resampled = work / f"scene-{seed}-{size}-{pixel_size:g}m.tif"
        if not resampled.exists():
            write_resampled(str(native), str(resampled), pixel_size)
        rasters[pixel_size] = resampled
    return rasters


def print_row(label: str, scored: Scored) -> None:
    cells = []
    for iou in IOU_THRESHOLDS:
        truth, detections, recall, precision, f1 = scored.figures(iou)
        cells.append(f"{recall:6.3f} {precision:6.3f} {f1:6.3f}")
    mean_iou = float(np.mean(scored.matched_ious)) if scored.matched_ious else float("nan")
    print(
        f"{label:<22}{truth:>6}{detections:>7}   {'   '.join(cells)}   {mean_iou:8.3f}"
        f"{scored.detect_seconds:9.0f}"
    )


def report(totals: dict[float, Scored], per_scene: dict[tuple[float, int], Scored]) -> dict:
    print(
        f"\n{'scenes':<22}{'truth':>6}{'found':>7}   {'IoU 0.5: R      P      F1':<23}   "
        f"{'IoU 0.3: R      P      F1':<23}   mean IoU  detect s"
    )
    for (pixel_size, seed), scored in per_scene.items():
        print_row(f"  seed {seed}, {pixel_size:g} m", scored)
    for pixel_size, scored in totals.items():
        print_row(f"all seeds, {pixel_size:g} m", scored)
    figures = {
        f"{pixel_size:g}": {
            f"iou_{iou:g}": dict(
                zip(
                    ("truth", "detections", "recall", "precision", "f1"),
                    scored.figures(iou),
                    strict=True,
                )
            )
            for iou in IOU_THRESHOLDS
        }
        | {
            "mean_matched_iou": float(np.mean(scored.matched_ious or [float("nan")])),
            "detect_seconds": scored.detect_seconds,
        }
        for pixel_size, scored in totals.items()
    }
    native = totals.get(NATIVE_PIXEL_SIZE)
    if native is not None:
        _, _, recall, precision, _ = native.figures(0.5)
        met = recall >= GOAL_RECALL and precision >= GOAL_PRECISION
        print(
            f"\nat {NATIVE_PIXEL_SIZE:g} m, IoU 0.5: recall {recall:.3f}, precision "
            f"{precision:.3f} vs goal >= {GOAL_RECALL} each: {'met' if met else 'missed'}"
        )
        for pixel_size, scored in totals.items():
            if pixel_size == NATIVE_PIXEL_SIZE:
                continue
            ratio = scored.figures(0.5)[2] / recall if recall else float("nan")
            verdict = "met" if ratio >= GOAL_RECALL_RATIO else "missed"
            print(
                f"recall at {pixel_size:g} m / at {NATIVE_PIXEL_SIZE:g} m = {ratio:.2f} "
                f"(goal >= {GOAL_RECALL_RATIO}): {verdict}"
            )
            figures[f"{pixel_size:g}"]["recall_ratio"] = ratio
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="export folder or model.pt")
    parser.add_argument(
        "--seeds", default="1000,1001,1002,1003", help="scene seeds, comma-separated"
    )
    parser.add_argument("--size", type=int, default=2048, help="scene edge in px at 0.1 m")
    parser.add_argument("--pixel-sizes", default="0.1,0.2", help="metres, comma-separated")
    parser.add_argument("--work", help="folder for the scenes and detections (kept); default temp")
    parser.add_argument("--json", help="also write the pooled figures to this JSON file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    return parser.parse_args()


def score_model(
    model: str,
    seeds: list[int],
    size: int,
    pixel_sizes: list[float],
    work: Path,
    overrides: list[str],
) -> tuple[dict[float, Scored], dict[tuple[float, int], Scored]]:
    """Detect with ``model`` over every scene at every pixel size; pooled and per-scene scores."""
    totals = {pixel_size: Scored() for pixel_size in pixel_sizes}
    per_scene: dict[tuple[float, int], Scored] = {}
    for seed in seeds:
        rasters = scene_rasters(work, seed, size, pixel_sizes)
        native = work / f"scene-{seed}-{size}.tif"
        truth = json.loads(Path(truth_uri_for(str(native))).read_text())
        for pixel_size, raster in rasters.items():
            out = work / f"detections-{seed}-{pixel_size:g}m.geojson"
            seconds = run_detect(raster, model, out, overrides)
            scored = score_scene(json.loads(out.read_text()), truth)
            scored.detect_seconds = seconds
            per_scene[(pixel_size, seed)] = scored
            totals[pixel_size].add(scored)
    return totals, per_scene


def main() -> int:
    args = parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "60")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    pixel_sizes = [float(size) for size in args.pixel_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="detect-scene-") as temporary:
        work = Path(args.work or temporary)
        work.mkdir(parents=True, exist_ok=True)
        totals, per_scene = score_model(
            args.model, seeds, args.size, pixel_sizes, work, args.overrides
        )
        figures = report(totals, per_scene)
    print(f"({len(seeds)} scenes of {args.size} px, {os.cpu_count()} cores, model {args.model})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
