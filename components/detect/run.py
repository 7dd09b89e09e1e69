"""The detect stage's work: windows → batched TorchScript inference → seam merge → GeoJSON.

A raster of another pixel size than the model's is resampled to it on the fly: each window
spans the ground of ``detect.window`` model pixels (``raster_window``) and the model resizes it
to its input, so boxes come back in raster pixels and map through the raster's geotransform.

A shard (``--shard I/N``) runs the windows of its part (``components/shards/spec.py``) and
writes them as a detections part; the whole run is shard ``0/1`` and merges its single part
with the very function the shard merge uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from components.core.errors import UsageError
from components.core.logs import get_logger
from components.core.params import DetectParams, PrepareParams
from components.core.progress import progress_bar
from components.detect.reader import window_batches
from components.ml.scripted import load_scripted_model, model_pixel_size, resolve_device
from components.raster.mosaic import resolve_raster
from components.raster.pixel_size import Resampling, format_metres, plan_resampling
from components.raster.reader import RasterInfo
from components.raster.windows import WindowGrid, plan_grid
from components.shards.detections import DetectionPart, save_part, write_detections
from components.shards.spec import WHOLE, ShardSpec, part_uri, shard_cells

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
    merged: int | None  # None for a shard's part: the merge counts them
    panels: int | None
    out_uri: str


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


Pair = tuple[int, int]  # (columns, rows)


def raster_window(
    resampling: Resampling, model_window: int, model_overlap: int
) -> tuple[Pair, Pair]:
    """Window and overlap edges in raster pixels for ``model_window`` and ``model_overlap``
    model pixels."""
    if not 0 <= model_overlap < model_window:
        raise UsageError(
            f"detect.overlap must be in [0, window={model_window}), got {model_overlap}"
        )
    columns, rows = (max(1, edge) for edge in resampling.raster_pixels(model_window))
    shared_columns, shared_rows = resampling.raster_pixels(model_overlap)
    return (columns, rows), (min(shared_columns, columns - 1), min(shared_rows, rows - 1))


def part_meta(
    raster: RasterInfo,
    grid: WindowGrid,
    overlap: Pair,
    classes: list[str],
    params: DetectParams,
    shard: ShardSpec,
) -> dict[str, Any]:
    """What the merge must agree on across shards, and this shard's identity; ``window`` and
    ``overlap`` in raster pixels (columns, rows)."""
    return {
        "raster": raster.uri,
        "crs": raster.crs,
        "transform": list(raster.transform)[:6],
        "width": raster.width,
        "height": raster.height,
        "window": [grid.width, grid.height],
        "overlap": list(overlap),
        "classes": classes,
        "nms_iou": params.nms_iou,
        "score_threshold": params.score_threshold,
        "shard": str(shard),
    }


def detect_windows(
    model: torch.jit.ScriptModule,
    raster: RasterInfo,
    grid: WindowGrid,
    cells: np.ndarray,
    params: DetectParams,
    prepare_params: PrepareParams,
) -> tuple[RasterDetections, list[int], int]:
    """Run the model over the windows of ``cells``: detections, their cells, windows skipped."""
    windows = grid.windows(cells)
    detections = RasterDetections([], [], [])
    found_in: list[int] = []
    skipped = 0
    batches = window_batches(
        raster.dataset, windows, params.batch_size, prepare_params.uint16_max, prepare_params.nodata
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
                    owned = owned_detections(
                        output,
                        grid,
                        row_index,
                        column_index,
                        tile.col_off,
                        tile.row_off,
                        (raster.width, raster.height),
                    )
                    detections.add(*owned)
                    found_in += [row_index * grid.shape[1] + column_index] * len(owned[0])
            bar.update(len(batch.windows) + batch.skipped_nodata)
    return detections, found_in, skipped


def detect(
    raster_uri: str,
    model_uri: str,
    out_target: str,
    params: DetectParams,
    prepare_params: PrepareParams,
    shard: ShardSpec = WHOLE,
) -> DetectSummary:
    """Detect panels in ``shard``'s windows. The whole run (``0/1``) merges its one part and
    writes the GeoJSON to ``out_target``; a shard writes its part there (or, when that ends in
    ``/``, to ``shard-IIII-of-NNNN.npz`` under it) for ``solarpipe shards merge-detections``."""
    source = resolve_raster(raster_uri)
    raster = source.info
    device = resolve_device(params.device, "detect.device")
    model = load_scripted_model(model_uri, device)
    model_size_m = model_pixel_size(model, model_uri)
    resampling = plan_resampling(raster.pixel_size, model_size_m, params.resample, raster_uri)
    window, overlap = raster_window(
        resampling, params.window or int(model.image_size), params.overlap
    )
    grid = plan_grid(raster.width, raster.height, window, overlap)
    log_scale(raster, model_size_m, resampling, grid, params.resample)
    if params.score_threshold is None:
        params = params.model_copy(update={"score_threshold": float(model.score_threshold)})
    cells = shard_cells(grid.covered(source.footprints), shard)
    detections, found_in, skipped = detect_windows(
        model, raster, grid, cells, params, prepare_params
    )
    boxes, scores, labels = detections.arrays()
    meta = part_meta(raster, grid, overlap, list(model.classes), params, shard)
    meta.update(windows=len(cells), skipped_nodata=skipped)
    part = DetectionPart(meta, boxes, scores, labels, np.asarray(found_in, dtype=np.int64))
    summary = {
        "window": (grid.width, grid.height),
        "raster_pixel_size": raster.pixel_size.describe(),
        "model_pixel_size_m": model_size_m,
        "resampled": resampling.active,
        "score_threshold": float(params.score_threshold),
        "windows": len(cells),
        "skipped_nodata": skipped,
        "detections": len(boxes),
    }
    if shard.is_whole:
        merged = write_detections(out_target, [part])
        return DetectSummary(
            **summary, merged=merged.merged, panels=merged.panels, out_uri=out_target
        )
    out_uri = part_uri(out_target, shard, ".npz")
    save_part(out_uri, part)
    return DetectSummary(**summary, merged=None, panels=None, out_uri=out_uri)


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
