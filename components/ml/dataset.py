"""Stream annotated tiles from S3 (or local disk) into a DataLoader, fetching ahead of use.

:class:`TileStream` is an ``IterableDataset`` of whole batches. Each epoch it draws one seeded
order of the split, cuts it into batches and deals them to DDP ranks and DataLoader workers
the way a batch sampler would; inside each worker a bounded pool of concurrent GETs runs ahead
of the batch being assembled (retried under the core S3 policy, optional local cache), and the tiles are
decoded and augmented there. Batches come out in the same order, with the same augmentation,
whatever the number of workers. Nothing is downloaded before the first batch is asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from components.core import retry
from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage
from components.core.errors import NotFoundError, SolarpipeError, one_line
from components.ml.transforms import Target, apply_transform, eval_transform

log = logging.getLogger(__name__)

Transform = Callable[..., Any]


class TileBatch(NamedTuple):
    """One batch: float CHW images, their targets (``boxes`` XYXY px, ``labels``), and how many
    tiles of the batch were skipped because their image is missing."""

    images: list[torch.Tensor]
    targets: list[Target]
    skipped: int


@dataclass(frozen=True)
class FetchOptions:
    """How a worker gets tile bytes."""

    concurrency: int = 8  # GETs in flight per worker, ahead of use; 0 = one blocking GET per item
    attempts: int = 0  # tries per failing GET or broken body; 0 = the core policy's (env)
    backoff_s: float | None = None  # first retry delay; None = the core policy's (env)
    cache_dir: str = ""  # local copy of every fetched tile; empty = no cache
    on_missing: Literal["fail", "skip"] = "fail"


def _cache_path(cache_dir: str, uri: str) -> Path:
    digest = hashlib.sha256(uri.encode("utf-8")).hexdigest()
    return Path(cache_dir) / digest[:2] / f"{digest}{Path(uri_io.basename(uri)).suffix}"


def retry_policy(options: FetchOptions) -> retry.RetryPolicy:
    """The core policy (from the environment) with the attempts and backoff of ``options``."""
    policy = retry.RetryPolicy.from_env().with_attempts(options.attempts)
    if options.backoff_s is not None:
        policy = dataclasses.replace(policy, backoff_s=options.backoff_s)
    return policy


def fetch_tile_bytes(image_uri: str, options: FetchOptions) -> bytes:
    """The bytes at ``image_uri`` (cache first); failed requests and broken bodies are retried
    by ``core/uri.py`` under the core policy, a missing object is not (S3 is consistent)."""
    cached = _cache_path(options.cache_dir, image_uri) if options.cache_dir else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    try:
        with retry.using(retry_policy(options)):
            data = uri_io.read_bytes(image_uri)
    except NotFoundError as exc:
        raise NotFoundError(
            f"tile image missing: {image_uri} (set train.on_missing_image=skip to train without it)"
        ) from exc
    if cached is not None:
        uri_io.write_bytes(str(cached), data)
    return data


def decode_tile(data: bytes, image_uri: str) -> torch.Tensor:
    """PNG/JPEG bytes → uint8 RGB tensor (C, H, W); a corrupt file is an error naming it."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            pixels = np.asarray(picture.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise SolarpipeError(f"corrupt image: {image_uri} ({exc})") from exc
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def load_tile(record: AnnotatedImage, options: FetchOptions) -> torch.Tensor | None:
    """Fetch and decode one tile; ``None`` when it is missing and ``on_missing`` is ``skip``."""
    try:
        data = fetch_tile_bytes(record.image, options)
    except NotFoundError:
        if options.on_missing == "skip":
            return None
        raise
    image = decode_tile(data, record.image)
    height, width = image.shape[-2:]
    if (width, height) != (record.width, record.height):
        raise SolarpipeError(
            f"image {record.image} is {width}x{height} px, "
            f"the annotations say {record.width}x{record.height}"
        )
    return image


def worker_error_line(exc: BaseException) -> str:
    """One line for an error re-raised from a DataLoader worker (whose message holds the
    worker's traceback): the original exception's message."""
    return one_line(exc)


class TileStream(IterableDataset):
    """Batches of one split's tiles, streamed by URI; see the module docstring.

    ``len()`` is the number of batches this rank gets per epoch. Call :meth:`set_epoch` before
    each epoch for a new order and new augmentation: the epoch lives in shared memory, so the
    next DataLoader iterator picks it up also in persistent worker processes.
    """

    def __init__(
        self,
        records: Sequence[AnnotatedImage],
        classes: Sequence[str],
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        transform: Transform | None = None,
        fetch: FetchOptions | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.records = list(records)
        self.classes = list(classes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        # Shared memory: DataLoader workers (forked or spawned) see the parent's updates.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.transform = transform or eval_transform()
        self.fetch = fetch or FetchOptions()
        self.rank = rank
        self.world_size = world_size
        self._targets = [self._target_tensors(record) for record in self.records]

    def _target_tensors(self, record: AnnotatedImage) -> tuple[torch.Tensor, torch.Tensor]:
        if len(record.boxes) != len(record.labels):
            raise SolarpipeError(
                f"annotations for {record.image}: {len(record.boxes)} boxes "
                f"but {len(record.labels)} labels"
            )
        unknown = sorted(set(record.labels) - set(self.classes))
        if unknown:
            raise SolarpipeError(
                f"annotations for {record.image}: labels {unknown} are not among the "
                f"classes {self.classes}"
            )
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(
            [self.classes.index(label) + 1 for label in record.labels], dtype=torch.int64
        )
        return boxes, labels

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches (record indices) for the current epoch, in delivery order."""
        count = len(self.records)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(count).tolist()
        else:
            order = list(range(count))
        batches = [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        if batches and len(batches) % self.world_size:
            # Every rank gets as many batches (DDP steps in lock-step): repeat from the start.
            missing = self.world_size - len(batches) % self.world_size
            batches += [batches[i % len(batches)] for i in range(missing)]
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def _augment(self, index: int, image: torch.Tensor, epoch: int) -> tuple[torch.Tensor, Target]:
        boxes, labels = self._targets[index]
        # Seeded per (seed, epoch, tile): the same augmentation whatever worker runs it.
        item_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return apply_transform(self.transform, image, boxes, labels)

    def _fetched(self, indices: list[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """``(index, image)`` in order, with up to ``concurrency`` fetches running ahead."""
        concurrency = self.fetch.concurrency
        if concurrency <= 0:
            for index in indices:
                yield index, load_tile(self.records[index], self.fetch)
            return
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tile-fetch")
        pending: deque[tuple[int, Future[torch.Tensor | None]]] = deque()
        upcoming = iter(indices)
        try:
            while True:
                while len(pending) < concurrency:
                    index = next(upcoming, None)
                    if index is None:
                        break
                    pending.append((index, pool.submit(load_tile, self.records[index], self.fetch)))
                if not pending:
                    return
                index, future = pending.popleft()
                yield index, future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self) -> Iterator[TileBatch]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        epoch = self.epoch
        my_batches = self.epoch_batches()[worker_id::workers]
        fetched = self._fetched([index for batch in my_batches for index in batch])
        skipped_total = 0
        for batch in my_batches:
            images: list[torch.Tensor] = []
            targets: list[Target] = []
            for _ in batch:
                index, image = next(fetched)
                if image is None:
                    continue
                image, target = self._augment(index, image, epoch)
                images.append(image)
                targets.append(target)
            skipped = len(batch) - len(images)
            skipped_total += skipped
            yield TileBatch(images, targets, skipped)
        if skipped_total:
            log.warning(
                "skipped %d tiles with missing images (worker %d, epoch %d)",
                skipped_total,
                worker_id,
                epoch,
            )
