"""Detection mAP as the project reports it: torchmetrics' COCO mAP and the keys we keep of it."""

from __future__ import annotations

from torchmetrics.detection import MeanAveragePrecision

# The figures reported for each scored split (train logs them as val_<key>, evaluate writes them).
MAP_KEYS = ("map", "map_50", "map_75", "mar_100")


def map_metric() -> MeanAveragePrecision:
    """COCO mAP over boxes (pycocotools), quiet about untrained detectors' many detections."""
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    metric.warn_on_many_detections = False
    return metric
