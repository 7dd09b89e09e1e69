"""The evaluate stage's work: stream the split's tiles through the TorchScript model, score it.

mAP comes from torchmetrics' ``MeanAveragePrecision`` over every detection the model keeps
(score threshold 0); precision, recall and F1 at ``evaluate.score_threshold`` and the PR curve
come from greedy matching at ``evaluate.iou_threshold`` (``matching.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, load_annotations
from components.core.draw import draw_boxes
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.core.params import EvaluateParams
from components.core.progress import progress_bar
from components.evaluate.page import evaluation_page
from components.ml.dataset import FetchOptions, TileStream
from components.ml.matching import (
    ImageMatches,
    match_image,
    precision_recall_curve,
    precision_recall_f1,
    total_counts,
)
from components.ml.metrics import MAP_KEYS, map_metric
from components.ml.scripted import (
    load_scripted_model,
    model_file_uri,
    model_pixel_size,
    resolve_device,
)
from components.raster.pixel_size import SAME_PIXEL_SIZE_TOLERANCE

log = get_logger(__name__)
METRICS_FILE = "metrics.json"
CURVE_FILE = "pr_curve.json"
OVERLAY_FOLDER = "overlays"
PAGE_FILE = "overlays.html"
TRUTH_COLOUR = (0, 255, 0)
PREDICTION_COLOUR = (255, 0, 0)


@dataclass(frozen=True)
class TileResult:
    """One tile's truth, the predictions above the score threshold, and its F1 there."""

    record: AnnotatedImage
    predicted_boxes: list[list[float]]
    matches: ImageMatches
    f1: float
    errors: int  # false positives + false negatives at the threshold


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    page: str  # the self-contained HTML page of the figures and overlays


def evaluate(
    annotations_uri: str, model_uri: str, out_uri: str, params: EvaluateParams
) -> Evaluation:
    """Run the model on ``params.split``; write metrics, PR curve, overlays and their page."""
    annotations = load_annotations(annotations_uri)
    records = annotations.split(params.split)
    if not records:
        raise SolarpipeError(
            f"no {params.split} tiles in {annotations_uri} (evaluate.split={params.split})"
        )
    device = resolve_device(params.device, "evaluate.device")
    model = load_scripted_model(model_uri, device)
    model_size_m = model_pixel_size(model, model_uri)
    tiles_size_m = annotations.input_pixel_size(int(model.image_size))
    check_pixel_sizes(tiles_size_m, model_size_m, annotations_uri)
    if params.score_threshold is None:
        params = params.model_copy(update={"score_threshold": float(model.score_threshold)})
    classes = list(model.classes)
    stream = TileStream(records, classes, params.batch_size, fetch=FetchOptions())
    mean_ap = map_metric()  # COCO: the best 100 detections per tile
    results: list[TileResult] = []
    with progress_bar(total=len(records), desc=f"evaluate {params.split}", unit="tile") as bar:
        for batch in stream:
            with torch.inference_mode():
                outputs = model(batch.images, 0.0)
            predictions = [{key: value.cpu() for key, value in out.items()} for out in outputs]
            mean_ap.update(predictions, batch.targets)
            for prediction, target in zip(predictions, batch.targets, strict=True):
                results.append(_tile_result(records[len(results)], prediction, target, params))
            bar.update(len(batch.images))
    summary = mean_ap.compute()
    tp, fp, fn = total_counts([r.matches for r in results], params.score_threshold)
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    metrics: dict[str, Any] = {key: round(float(summary[key]), 6) for key in MAP_KEYS}
    metrics.update(
        precision=round(precision, 6),
        recall=round(recall, 6),
        f1=round(f1, 6),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        images=len(results),
        truth_boxes=sum(r.matches.ground_truth for r in results),
        score_threshold=params.score_threshold,
        iou_threshold=params.iou_threshold,
        model_pixel_size_m=model_size_m,
    )
    if tiles_size_m is not None:  # flat numbers only (DVC metrics): absent when unknown
        metrics["pixel_size_m"] = round(tiles_size_m, 6)
    curve = precision_recall_curve([r.matches for r in results])
    with uri_io.local_output_dir(out_uri) as staging:
        uri_io.write_json(str(staging / METRICS_FILE), metrics)
        uri_io.write_json(str(staging / CURVE_FILE), curve)
        _write_overlays(results, staging / OVERLAY_FOLDER, params.overlays)
        page = evaluation_page(metrics, params.split, staging / OVERLAY_FOLDER)
        (staging / PAGE_FILE).write_text(page)
    log.info("evaluated %s on %d tiles", model_file_uri(model_uri), len(results))
    return Evaluation(metrics, page)


def check_pixel_sizes(tiles_m: float | None, model_m: float, annotations_uri: str) -> None:
    """Warn when the tiles are scored at another pixel size than the model's (or unknown)."""
    if tiles_m is None:
        log.warning("%s records no pixel size: scoring its tiles as they are", annotations_uri)
    elif abs(tiles_m / model_m - 1) > SAME_PIXEL_SIZE_TOLERANCE:
        log.warning(
            "the tiles of %s make %g m model-input pixels, the model's are %g m: scored "
            "without resampling (detect resamples whole rasters)",
            annotations_uri,
            tiles_m,
            model_m,
        )


def _tile_result(
    record: AnnotatedImage,
    prediction: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    params: EvaluateParams,
) -> TileResult:
    matches = match_image(
        prediction["boxes"],
        prediction["scores"],
        prediction["labels"],
        target["boxes"],
        target["labels"],
        params.iou_threshold,
    )
    tp, fp, fn = matches.counts(params.score_threshold)
    kept = prediction["scores"] >= params.score_threshold
    return TileResult(
        record=record,
        predicted_boxes=prediction["boxes"][kept].tolist(),
        matches=matches,
        f1=precision_recall_f1(tp, fp, fn)[2],
        errors=fp + fn,
    )


def _write_overlays(results: list[TileResult], folder: Path, count: int) -> None:
    """The ``count`` worst tiles (lowest F1, most errors) and the ``count`` best (highest F1,
    most panels), truth in green and predictions in red."""
    if count == 0:
        return
    ranked = sorted(
        range(len(results)),
        key=lambda i: (results[i].f1, -results[i].errors, results[i].matches.ground_truth),
    )
    worst = ranked[:count]
    best = [i for i in reversed(ranked) if i not in worst][:count]
    folder.mkdir(parents=True, exist_ok=True)
    for kind, indices in (("worst", worst), ("best", best)):
        for rank, index in enumerate(indices, start=1):
            result = results[index]
            image_uri = result.record.image
            with_truth = draw_boxes(
                uri_io.read_bytes(image_uri), result.record.boxes, 2, image_uri, TRUTH_COLOUR
            )
            overlay = draw_boxes(
                with_truth, result.predicted_boxes, 1, image_uri, PREDICTION_COLOUR
            )
            name = uri_io.basename(image_uri).rsplit(".", 1)[0]
            (folder / f"{kind}_{rank:02d}_{name}.png").write_bytes(overlay)
