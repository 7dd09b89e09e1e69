"""The Lightning module: a torchvision detector, its optimizer and schedule, and val/test mAP.

Checkpoint contract (export, evaluate and detect rely on it): the detector is ``self.model``
(state-dict keys start with ``model.``) and ``hyper_parameters`` holds the run's whole resolved
``train`` params, the ``classes``, the ``anchor_scales``, ``pixel_size_m`` (ground size of one
model-input pixel, ``null`` when the data did not say) and the tiles' ``data_pixel_size_m`` (see
components/ml/checkpoint.py). Every checkpoint also records ``val_operating_point``: the score
threshold with the best F1 on the val split at IoU 0.5 for the weights it holds, with that
precision, recall and F1.

The learning-rate schedule runs over the training *budget*: progress is the larger of the
share of steps done and the share of ``max_time`` used, so a time-limited run still anneals.

Before every validation the BatchNorm running statistics are re-estimated for the current
weights from the last few training batches ("precise BN"): a detector trained from scratch for
a few hundred steps otherwise validates (and is saved) with statistics that lag its weights so
far that its eval-mode output is noise.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Timer
from torchmetrics.detection import MeanAveragePrecision

from components.core.params import TrainParams
from components.ml.checkpoint import detector_spec
from components.ml.dataset import TileBatch
from components.ml.detector import anchor_scales_of, build_detector
from components.ml.matching import ImageMatches, OperatingPoint, best_f1_threshold, match_image
from components.ml.metrics import MAP_KEYS, map_metric

OPERATING_POINT_IOU = 0.5  # a val detection counts as found at this IoU (evaluate's default)

STEP_MILESTONES = (0.7, 0.9)  # "step" schedule: lr x0.1 at 70 % and again at 90 % of the budget
ONECYCLE_WARMUP = 0.3  # "onecycle": warm up over 30 % of the budget, then cosine down
MIN_LR_FACTOR = 0.01


def lr_factor(schedule: str, progress: float, warmup_fraction: float) -> float:
    """Multiplier of the base learning rate at ``progress`` (0 → 1) through the budget."""
    warmup = ONECYCLE_WARMUP if schedule == "onecycle" else warmup_fraction
    if warmup > 0 and progress < warmup:
        return max(MIN_LR_FACTOR, progress / warmup)
    if schedule in ("cosine", "onecycle"):
        remaining = (progress - warmup) / max(1e-9, 1.0 - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, remaining)))
        return MIN_LR_FACTOR + (1.0 - MIN_LR_FACTOR) * cosine
    if schedule == "step":
        return 0.1 ** sum(progress >= milestone for milestone in STEP_MILESTONES)
    return 1.0


BATCH_NORMS = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
)


def recalibrate_batch_norm(model: torch.nn.Module, batches: Iterable[TileBatch]) -> None:
    """Replace BatchNorm running statistics by their average over ``batches`` (train-mode
    forward passes without gradients) for the model's current weights."""
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch.images, batch.targets)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


class DetectorModule(LightningModule):
    """Train a torchvision detector on :class:`TileBatch` batches; log val mAP every epoch."""

    def __init__(
        self,
        train: dict[str, Any],
        classes: Sequence[str],
        anchor_scales: Sequence[float] | None = None,
        pixel_size_m: float | None = None,
        data_pixel_size_m: float | None = None,
    ) -> None:
        super().__init__()
        settings = TrainParams.model_validate(train)
        self.save_hyperparameters(
            {
                "train": settings.model_dump(mode="json"),
                "classes": list(classes),
                # A checkpoint's own scales when loaded from one, the current ones when new.
                "anchor_scales": (
                    list(anchor_scales) if anchor_scales else anchor_scales_of(settings.arch)
                ),
                "pixel_size_m": pixel_size_m,
                "data_pixel_size_m": data_pixel_size_m,
            }
        )
        self.settings = settings
        self.spec = detector_spec(self.hparams, "this run")
        # Channels-last convolutions: the same numbers, training steps about twice as fast for
        # ssdlite on CPU (oneDNN) in an interleaved measurement; GPUs favour the layout too.
        self.model = build_detector(
            settings.arch,
            self.spec.num_classes,
            settings.image_size,
            settings.pretrained,
            self.spec.anchor_scales,
            self.spec.anchor_ratios,
        ).to(memory_format=torch.channels_last)
        self.val_map = map_metric()
        self.test_map = map_metric()
        self._total_steps = 0.0
        self._recent_batches: deque[TileBatch] = deque(
            maxlen=max(1, settings.bn_recalibration_batches)
        )
        self._val_matches: list[ImageMatches] = []
        self.val_operating_point: OperatingPoint | None = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model(images)

    # -- schedule -------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._total_steps = float(self.trainer.estimated_stepping_batches)

    def budget_progress(self) -> float:
        """Share of the training budget used: steps done or time spent, whichever is more."""
        if self._trainer is None:
            return 0.0
        progress = self.global_step / self._total_steps if self._total_steps > 0 else 0.0
        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None:
            elapsed = timer.time_elapsed("train")
            remaining = timer.time_remaining("train")
            if remaining is not None and elapsed + remaining > 0:
                progress = max(progress, elapsed / (elapsed + remaining))
        return min(1.0, progress)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.settings
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                trainable,
                lr=hp.lr,
                momentum=hp.momentum,
                weight_decay=hp.weight_decay,
                nesterov=hp.momentum > 0,
            )
        else:
            optimizer = torch.optim.AdamW(trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda _step: lr_factor(hp.scheduler, self.budget_progress(), hp.warmup_fraction),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step"},
        }

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: TileBatch, batch_idx: int) -> torch.Tensor | None:
        if batch.skipped:
            self.log(
                "train_skipped_images",
                float(batch.skipped),
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                batch_size=1,
            )
        if not batch.images:
            return None
        losses = self.model(batch.images, batch.targets)
        loss = sum(losses.values())
        if self.settings.bn_recalibration_batches:
            images = [image.detach() for image in batch.images]
            self._recent_batches.append(TileBatch(images, batch.targets, 0))
        size = len(batch.images)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def _update_map(
        self, metric: MeanAveragePrecision, batch: TileBatch
    ) -> list[dict[str, torch.Tensor]]:
        if not batch.images:
            return []
        predictions = [
            {k: v.float() if k != "labels" else v for k, v in p.items()}
            for p in self.model(batch.images)
        ]
        metric.update(predictions, batch.targets)
        return predictions

    def _log_map(self, metric: MeanAveragePrecision, prefix: str) -> None:
        result = metric.compute()
        for key in MAP_KEYS:
            self.log(
                f"{prefix}_{key}", result[key].float(), prog_bar=key == "map_50", sync_dist=False
            )
        metric.reset()

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking and self._recent_batches:
            recalibrate_batch_norm(self.model, self._recent_batches)

    def validation_step(self, batch: TileBatch, batch_idx: int) -> None:
        predictions = self._update_map(self.val_map, batch)
        for prediction, target in zip(predictions, batch.targets, strict=True):
            self._val_matches.append(
                match_image(
                    prediction["boxes"].cpu(),
                    prediction["scores"].cpu(),
                    prediction["labels"].cpu(),
                    target["boxes"].cpu(),
                    target["labels"].cpu(),
                    OPERATING_POINT_IOU,
                )
            )

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")
        if self._val_matches:
            point = best_f1_threshold(self._val_matches)
            self._val_matches = []
            if not self.trainer.sanity_checking:
                self.val_operating_point = point
            self.log("val_f1", point.f1)
            self.log("val_score_threshold", point.threshold)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        point = self.val_operating_point
        checkpoint["val_operating_point"] = (
            None
            if point is None
            else {
                "score_threshold": point.threshold,
                "precision": round(point.precision, 6),
                "recall": round(point.recall, 6),
                "f1": round(point.f1, 6),
                "iou_threshold": OPERATING_POINT_IOU,
            }
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        recorded = checkpoint.get("val_operating_point")
        if isinstance(recorded, dict):  # a resumed run keeps it until its next validation
            self.val_operating_point = OperatingPoint(
                recorded["score_threshold"],
                recorded["precision"],
                recorded["recall"],
                recorded["f1"],
            )

    def test_step(self, batch: TileBatch, batch_idx: int) -> None:
        self._update_map(self.test_map, batch)

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")
