"""The Lightning data module: train/val/test :class:`TileStream` loaders from ``annotations.json``.

The train loader is rebuilt every epoch (``reload_dataloaders_every_n_epochs=1``) so that its
stream carries the trainer's epoch, also after ``--resume``: a new order and new augmentation
per epoch, the same for the same seed.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule
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
            transform=train_transform(self.params.color_jitter)
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
        )

    def train_dataloader(self) -> DataLoader[Any]:
        stream = self.streams["train"]
        stream.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return self.loader(stream)

    def val_dataloader(self) -> DataLoader[Any]:
        return self.loader(self.streams["val"])

    def test_dataloader(self) -> DataLoader[Any]:
        return self.loader(self.streams["test"])
