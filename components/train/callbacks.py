"""Training callbacks: publish the resumable checkpoint, and plain progress lines without a tty."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from components.core import uri as uri_io
from components.core.progress import PLAIN_INTERVAL_S
from components.ml.dataset import TileBatch
from components.train.run import LAST_CHECKPOINT

log = logging.getLogger("components.train")


# Seconds between uploads of last.ckpt during training (each is the whole optimizer state).
PUBLISH_INTERVAL_S = 60.0


class PublishLastCheckpoint(Callback):
    """Copy ``last.ckpt`` to ``<out>/last.ckpt`` (atomically: ``uri.upload_file``) when the
    second epoch starts, then at most every ``PUBLISH_INTERVAL_S`` and when training is
    interrupted, so ``--resume`` finds it even on
    another machine; forget a best checkpoint that a resumed run cannot see."""

    def __init__(self, out_uri: str, last: ModelCheckpoint, best: ModelCheckpoint) -> None:
        self.out_uri = out_uri
        self.last = last
        self.best = best
        self._published_mtime = 0.0
        self._published_at = float("-inf")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stale = self.best.best_model_path
        if stale and not Path(stale).exists():
            log.warning(
                "the best checkpoint of the interrupted run is not on this machine: "
                "the best is chosen among the epochs from here on"
            )
            self.best.best_model_path = ""
            self.best.best_model_score = None
            self.best.best_k_models = {}
            self.best.kth_best_model_path = ""
            self.best.kth_value = torch.tensor(float("-inf"))

    def _publish(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not self.last.dirpath:
            return
        path = Path(self.last.dirpath) / LAST_CHECKPOINT
        if not path.exists() or path.stat().st_mtime == self._published_mtime:
            return
        uri_io.upload_file(path, uri_io.join(self.out_uri, LAST_CHECKPOINT))
        self._published_mtime = path.stat().st_mtime
        self._published_at = time.monotonic()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not at the end of an epoch: Lightning runs ModelCheckpoint's hooks after every other
        # callback's, so last.ckpt of the ending epoch is not written yet there (measured: the
        # published one lagged an epoch behind). The end of the last epoch is published with
        # the whole output folder.
        if time.monotonic() - self._published_at >= PUBLISH_INTERVAL_S:
            self._publish(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        try:
            self._publish(trainer)
        except Exception as exc:  # the original failure is the one to report
            log.warning("could not publish %s after the failure: %s", LAST_CHECKPOINT, exc)


CURVE_BAR_WIDTH = 40  # characters of a bar at mAP 1.0


def _metric(trainer: Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


class TrainingRecord(Callback):
    """Counts what this run did (steps, images, seconds, skipped tiles) and, without a tty,
    prints a progress line every ``PLAIN_INTERVAL_S`` seconds and one per validation."""

    def __init__(self, print_lines: bool) -> None:
        self.print_lines = print_lines
        self.start_step = 0
        self.images = 0
        self.skipped = 0
        self.started = 0.0
        self.seconds = 0.0
        self._last_line = 0.0
        # (epoch, train loss, val mAP@0.5, val mAP@0.5:0.95) per validation; kept in checkpoints
        # so that a resumed run's curve starts at its first epoch
        self.history: list[tuple[int, float | None, float, float | None]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(row) for row in state_dict.get("history", [])]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = trainer.global_step
        self.started = self._last_line = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(batch, TileBatch):
            self.images += len(batch.images) * trainer.world_size
            self.skipped += batch.skipped
        now = time.monotonic()
        self.seconds = now - self.started
        if self.print_lines and now - self._last_line >= PLAIN_INTERVAL_S:
            self._last_line = now
            loss = _metric(trainer, "train_loss_step")
            log.info(
                "epoch %d/%d batch %d/%s: loss %s, %.1f images/s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                batch_idx + 1,
                trainer.num_training_batches,
                f"{loss:.3f}" if loss is not None else "-",
                self.images / max(self.seconds, 1e-9),
            )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        val_map_50 = _metric(trainer, "val_map_50")
        loss = _metric(trainer, "train_loss_epoch") or _metric(trainer, "train_loss_step")
        if val_map_50 is not None:
            epoch = trainer.current_epoch + 1
            self.history = [row for row in self.history if row[0] != epoch]
            self.history.append((epoch, loss, val_map_50, _metric(trainer, "val_map")))
        if self.print_lines and val_map_50 is not None:
            log.info(
                "epoch %d: val mAP@0.5 %.3f, train loss %s (%.0f s)",
                trainer.current_epoch + 1,
                val_map_50,
                f"{loss:.3f}" if loss is not None else "-",
                time.monotonic() - self.started,
            )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seconds = time.monotonic() - self.started

    def curve_markdown(self, best_epoch: int | None) -> str:
        """The validation curve as a page: one row per epoch, a bar for mAP@0.5."""

        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = [
            "| epoch | train loss | val mAP@0.5 | val mAP@0.5:0.95 | |",
            "|---:|---:|---:|---:|:--|",
        ]
        for epoch, loss, map_50, map_all in self.history:
            bar = "█" * round(map_50 * CURVE_BAR_WIDTH)
            mark = " ← model.ckpt" if epoch == best_epoch else ""
            rows.append(
                f"| {epoch} | {number(loss)} | {number(map_50)} | {number(map_all)} | {bar}{mark} |"
            )
        return "\n".join(["# Training curve", "", *rows, ""])
