"""The detect stage's work: windows → batched TorchScript inference → seam merge → GeoJSON.

A raster of another pixel size than the model's is resampled to it on the fly: each window
spans the ground of ``detect.window`` model pixels (``raster_pixels``) and the model resizes it
to its input, so boxes come back in raster pixels and map through the raster's geotransform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from components.core import uri as uri_io
from components.core.errors import UsageError
from components.core.logs import get_logger
from components.core.params import DetectParams, PrepareParams
from components.core.progress import progress_bar
from components.detect.geojson import feature_collection
from components.detect.merge import merge_at_seams
from components.detect.reader import window_batches
from components.detect.windows import WindowGrid, plan_grid
from components.ml.scripted import load_scripted_model, model_pixel_size, resolve_device
from components.raster.pixel_size import Resampling, format_metres, plan_resampling
from components.raster.reader import RasterInfo, inspect_raster

log = get_logger(__name__)


@dataclass(frozen=True)
class DetectSummary:
    window: tuple[int, int]  # columns, rows of raster pixels
    raster_pixel_size: str
    model_pixel_size_m: float
    resampled: bool
    score_threshold: float
    windows: int
    skipped_nodata: int
    detections: int  # kept by their windows, before the seam merge
    merged: int
    panels: int


@dataclass
class RasterDetections:
    """Detections in raster pixel coordinates, gathered window by window."""

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    labels: list[np.ndarray]

    def add(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        self.boxes.append(boxes)
        self.scores.append(scores)
        self.labels.append(labels)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(self.boxes), np.concatenate(self.scores), np.concatenate(self.labels)


def owned_detections(
    output: dict[str, torch.Tensor],
    grid: WindowGrid,
    row_index: int,
    column_index: int,
    col_off: int,
    row_off: int,
    raster_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window's detections in raster pixels, clipped to the raster, whose centre it owns."""
    boxes = output["boxes"].cpu().double().numpy() + np.array([col_off, row_off] * 2)
    width, height = raster_size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    x_min, y_min, x_max, y_max = grid.owned_area(row_index, column_index)
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    keep = (
        (centre_x >= x_min)
        & (centre_x < x_max)
        & (centre_y >= y_min)
        & (centre_y < y_max)
        & (boxes[:, 2] > boxes[:, 0])
        & (boxes[:, 3] > boxes[:, 1])
    )
    return (
        boxes[keep],
        output["scores"].cpu().double().numpy()[keep],
        output["labels"].cpu().numpy()[keep],
    )


def plan_windows(
    raster: RasterInfo, resampling: Resampling, model_window: int, params: DetectParams
) -> WindowGrid:
    """The window grid in raster pixels for windows of ``model_window`` model pixels."""
    if not 0 <= params.overlap < model_window:
        raise UsageError(
            f"detect.overlap must be in [0, window={model_window}), got {params.overlap}"
        )
    window = tuple(max(1, edge) for edge in resampling.raster_pixels(model_window))
    overlap = tuple(
        min(shared, edge - 1)
        for shared, edge in zip(resampling.raster_pixels(params.overlap), window, strict=True)
    )
    return plan_grid(raster.width, raster.height, window, overlap)  # type: ignore[arg-type]


def detect(
    raster_uri: str,
    model_uri: str,
    out_uri: str,
    params: DetectParams,
    prepare_params: PrepareParams,
) -> DetectSummary:
    """Detect panels over the whole raster and write them as GeoJSON to ``out_uri``."""
    raster = inspect_raster(raster_uri)
    device = resolve_device(params.device, "detect.device")
    model = load_scripted_model(model_uri, device)
    model_size_m = model_pixel_size(model, model_uri)
    resampling = plan_resampling(raster.pixel_size, model_size_m, params.resample, raster_uri)
    grid = plan_windows(raster, resampling, params.window or int(model.image_size), params)
    log_scale(raster, model_size_m, resampling, grid, params.resample)
    threshold = (
        float(model.score_threshold) if params.score_threshold is None else params.score_threshold
    )
    windows = grid.windows()
    detections = RasterDetections([], [], [])
    skipped = 0
    batches = window_batches(
        raster_uri, windows, params.batch_size, prepare_params.uint16_max, prepare_params.nodata
    )
    with progress_bar(total=len(windows), desc="detect", unit="window") as bar:
        for batch in batches:
            skipped += batch.skipped_nodata
            if batch.pixels:
                images = [torch.from_numpy(pixels) for pixels in batch.pixels]
                with torch.inference_mode():
                    outputs = model(images, threshold)
                for (row_index, column_index, tile), output in zip(
                    batch.windows, outputs, strict=True
                ):
                    detections.add(
                        *owned_detections(
                            output,
                            grid,
                            row_index,
                            column_index,
                            tile.col_off,
                            tile.row_off,
                            (raster.width, raster.height),
                        )
                    )
            bar.update(len(batch.windows) + batch.skipped_nodata)
    boxes, scores, labels = detections.arrays()
    kept = merge_at_seams(boxes, scores, labels, grid.column_cuts, grid.row_cuts, params.nms_iou)
    order = kept[np.lexsort((boxes[kept, 0], boxes[kept, 1]))]  # top to bottom, left to right
    classes = list(model.classes)
    collection = feature_collection(
        [tuple(box) for box in boxes[order].tolist()],
        scores[order].tolist(),
        [classes[int(label) - 1] for label in labels[order]],
        raster.transform,
        raster.crs,
    )
    uri_io.write_bytes(out_uri, uri_io.dump_json(collection), content_type="application/geo+json")
    log.info("wrote %d panels to %s", len(order), out_uri)
    return DetectSummary(
        window=(grid.width, grid.height),
        raster_pixel_size=raster.pixel_size.describe(),
        model_pixel_size_m=model_size_m,
        resampled=resampling.active,
        score_threshold=threshold,
        windows=len(windows),
        skipped_nodata=skipped,
        detections=len(boxes),
        merged=len(boxes) - len(order),
        panels=len(order),
    )


def log_scale(
    raster: RasterInfo, model_size_m: float, resampling: Resampling, grid: WindowGrid, mode: str
) -> None:
    raster_size = raster.pixel_size.describe()
    model_size = f"{format_metres(model_size_m)} m"
    if resampling.active:
        log.info(
            "raster pixels %s, model pixels %s: windows of %dx%d raster px resampled to the "
            "model's pixel size",
            raster_size,
            model_size,
            grid.width,
            grid.height,
        )
    elif mode == "never" and abs(raster.pixel_size.mean_m / model_size_m - 1) > 0.01:
        log.warning(
            "detect.resample=never: the raster's %s pixels are read as the model's %s ones",
            raster_size,
            model_size,
        )
