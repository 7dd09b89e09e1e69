"""The detect stage's work: windows → batched TorchScript inference → seam merge → GeoJSON."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from components.core import uri as uri_io
from components.core.logs import get_logger
from components.core.params import DetectParams, PrepareParams
from components.core.progress import progress_bar
from components.detect.geojson import feature_collection
from components.detect.merge import merge_at_seams
from components.detect.reader import window_batches
from components.detect.windows import WindowGrid, plan_grid
from components.ml.scripted import load_scripted_model, resolve_device
from components.raster.reader import inspect_raster

log = get_logger(__name__)


@dataclass(frozen=True)
class DetectSummary:
    window: int
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
    window = params.window or int(model.image_size)
    grid = plan_grid(raster.width, raster.height, window, params.overlap)
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
                    outputs = model(images, params.score_threshold)
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
        window=window,
        windows=len(windows),
        skipped_nodata=skipped,
        detections=len(boxes),
        merged=len(boxes) - len(order),
        panels=len(order),
    )
