"""The Lightning data module: train/val/test :class:`TileStream` loaders from ``annotations.json``.

Each loader is built once and keeps its worker processes between epochs
(``train.persistent_workers``; otherwise the trainer rebuilds them every epoch);
:class:`StreamEpoch` hands the trainer's epoch to the train stream
before each epoch (shared memory, so the workers see it), also after ``--resume``: a new order
and new augmentation per epoch, the same for the same seed.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader

from components.core.annotations import AnnotationsFile, Split
from components.core.params import TrainParams
from components.ml.dataset import FetchOptions, TileBatch, TileStream
from components.ml.transforms import eval_transform, train_transform


def _keep_batch(batch: TileBatch) -> TileBatch:
    return batch


class TileDataModule(LightningDataModule):
    """Streams the splits of one annotations file with the train params' loader settings."""

    def __init__(
        self, annotations: AnnotationsFile, params: TrainParams, pin_memory: bool = False
    ) -> None:
        super().__init__()
        self.annotations = annotations
        self.params = params
        self.pin_memory = pin_memory
        self.streams: dict[Split, TileStream] = {}

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(
            concurrency=self.params.prefetch,
            attempts=self.params.fetch_attempts,
            cache_dir=self.params.cache_dir,
            on_missing=self.params.on_missing_image,
        )

    def make_stream(self, split: Split, rank: int = 0, world_size: int = 1) -> TileStream:
        training = split == "train"
        return TileStream(
            self.annotations.split(split),
            self.annotations.classes,
            self.params.batch_size,
            shuffle=training,
            drop_last=training,
            seed=self.params.seed,
            transform=train_transform(self.params.color_jitter, self.params.coarsen_max)
            if training and self.params.augment
            else eval_transform(),
            fetch=self.fetch_options(),
            rank=rank,
            world_size=world_size,
        )

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        for split in ("train", "val", "test"):
            self.streams[split] = self.make_stream(split, rank, world_size)

    def loader(self, stream: TileStream) -> DataLoader[Any]:
        workers = self.params.num_workers
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            collate_fn=_keep_batch,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if workers else None,
            persistent_workers=workers > 0 and self.params.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        stream = self.streams["train"]
        stream.set_epoch(upcoming_epoch(self.trainer) if self.trainer else 0)
        return self.loader(stream)

    def val_dataloader(self) -> DataLoader[Any]:
        return self.loader(self.streams["val"])

    def test_dataloader(self) -> DataLoader[Any]:
        return self.loader(self.streams["test"])


def upcoming_epoch(trainer: Trainer) -> int:
    """The epoch the train loader is built or restarted for, as Lightning numbers its samplers'
    epochs. Not ``current_epoch``: a resumed run builds the loader (and persistent workers start
    reading) before ``current_epoch`` counts the restored epochs, so the resumed epoch would
    replay epoch 0's order (measured: weights unlike an uninterrupted run's)."""
    return trainer.fit_loop.epoch_progress.current.processed


class StreamEpoch(Callback):
    """Set the train stream's epoch before each epoch's loader iterator starts."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, TileDataModule) and "train" in datamodule.streams:
            datamodule.streams["train"].set_epoch(upcoming_epoch(trainer))
