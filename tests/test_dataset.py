"""The S3 streaming dataset: tiles fetched by URI from the embedded S3 server, prefetched,
decoded and augmented with their boxes; deterministic; clear errors for missing/corrupt tiles."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage
from components.core.errors import NotFoundError, SolarpipeError
from components.ml.dataset import FetchOptions, TileBatch, TileStream, worker_error_line
from components.ml.transforms import RandomCoarsen, apply_transform, train_transform
from tests.tile_fixtures import tile_with_panels, write_tile_set

QUICK_RETRY = FetchOptions(concurrency=4, attempts=2, backoff_s=0.01)


def _all_batches(stream: TileStream, num_workers: int = 0) -> list[TileBatch]:
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=lambda b: b)
    return list(loader)


def _bright_box(image: torch.Tensor) -> list[float]:
    """Bounding box (XYXY, pixel edges) of the bright pixels of a float CHW image."""
    ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_stream_fetches_tiles_from_s3_with_their_boxes(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/set", count=5, size=64)
    stream = TileStream(annotations.images, annotations.classes, batch_size=2, fetch=QUICK_RETRY)

    batches = _all_batches(stream)

    assert len(stream) == len(batches) == 3
    assert [len(b.images) for b in batches] == [2, 2, 1]
    images = [image for batch in batches for image in batch.images]
    targets = [target for batch in batches for target in batch.targets]
    for record, image, target in zip(annotations.images, images, targets, strict=True):
        assert image.dtype == torch.float32 and tuple(image.shape) == (3, 64, 64)
        assert target["boxes"].tolist() == [list(box) for box in record.boxes]
        assert target["labels"].tolist() == [1] * len(record.boxes)


def test_flip_moves_the_box_with_the_pixels(bucket: str) -> None:
    tile_uri = f"s3://{bucket}/flip.png"
    uri_io.write_bytes(tile_uri, tile_with_panels(64, [(4, 10, 20, 18)]))
    record = AnnotatedImage(
        image=tile_uri,
        width=64,
        height=64,
        boxes=[(4, 10, 20, 18)],
        labels=["panel"],
        split="train",
    )
    flip = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)])
    stream = TileStream([record], ["panel"], batch_size=1, transform=flip, fetch=QUICK_RETRY)

    (batch,) = _all_batches(stream)

    assert batch.targets[0]["boxes"].tolist() == [[44.0, 10.0, 60.0, 18.0]]
    assert _bright_box(batch.images[0]) == [44.0, 10.0, 60.0, 18.0]


def test_training_augmentation_keeps_boxes_on_the_panels(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/aug", count=6, size=64)
    single_panel = [image for image in annotations.images if len(image.boxes) == 1]
    stream = TileStream(
        single_panel, annotations.classes, 1, shuffle=True, transform=train_transform(0.2)
    )
    seen_geometries = set()
    for epoch in range(4):
        stream.set_epoch(epoch)
        for batch in _all_batches(stream):
            box = batch.targets[0]["boxes"][0].tolist()
            assert _bright_box(batch.images[0]) == box
            seen_geometries.add(tuple(box))
    assert len(seen_geometries) > len(single_panel)  # the augmentation did move the boxes


def test_coarsened_pixels_lose_detail_and_keep_boxes_and_canvas() -> None:
    checkerboard = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255
    image = checkerboard.to(torch.uint8).expand(3, 64, 64).clone()
    boxes = torch.tensor([[8.0, 12.0, 40.0, 30.0]])
    coarsen = v2.Compose(
        [RandomCoarsen(max_factor=3.0, p=1.0), v2.ToDtype(torch.float32, scale=True)]
    )
    detail = []
    for seed in range(5):
        torch.manual_seed(seed)
        out, target = apply_transform(coarsen, image, boxes, torch.tensor([1]))
        assert out.shape == (3, 64, 64) and torch.equal(target["boxes"], boxes)
        detail.append(float((out[:, :, 1:] - out[:, :, :-1]).abs().mean()))
    assert max(detail) < 0.5  # the checkerboard's neighbour difference is 1.0
    torch.manual_seed(0)
    kept, _ = apply_transform(
        v2.Compose([RandomCoarsen(3.0, p=0.0), v2.ToDtype(torch.float32, scale=True)]),
        image, boxes, torch.tensor([1]),
    )  # fmt: skip
    assert torch.equal(kept, image.float() / 255)


def _flatten(batches: list[TileBatch]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([torch.stack(b.images).flatten() for b in batches])
    boxes = torch.cat([t["boxes"].flatten() for b in batches for t in b.targets])
    return images, boxes


def test_same_seed_gives_the_same_batches_whatever_the_workers(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/seed", count=6, size=64)

    def stream(seed: int, epoch: int = 0) -> TileStream:
        s = TileStream(
            annotations.images, annotations.classes, 2, shuffle=True, seed=seed,
            transform=train_transform(0.2), fetch=QUICK_RETRY,
        )  # fmt: skip
        s.set_epoch(epoch)
        return s

    in_process = _flatten(_all_batches(stream(7)))
    two_workers = _flatten(_all_batches(stream(7), num_workers=2))
    other_seed = _flatten(_all_batches(stream(8)))
    next_epoch = _flatten(_all_batches(stream(7, epoch=1)))

    assert torch.equal(in_process[0], two_workers[0])
    assert torch.equal(in_process[1], two_workers[1])
    assert not torch.equal(in_process[0], other_seed[0])
    assert not torch.equal(in_process[0], next_epoch[0])


def test_persistent_workers_follow_the_epoch_set_in_the_parent(bucket: str) -> None:
    """The epoch lives in shared memory: workers kept between epochs deal the same batches
    as workers started anew for each epoch."""
    annotations = write_tile_set(f"s3://{bucket}/persistent", count=6, size=64)

    def stream() -> TileStream:
        return TileStream(
            annotations.images, annotations.classes, 2, shuffle=True, seed=3,
            transform=train_transform(0.2), fetch=QUICK_RETRY,
        )  # fmt: skip

    kept = stream()
    loader = DataLoader(
        kept, batch_size=None, num_workers=2, collate_fn=lambda b: b, persistent_workers=True
    )
    for epoch in range(3):
        kept.set_epoch(epoch)
        fresh = stream()
        fresh.set_epoch(epoch)
        from_kept, from_fresh = _flatten(list(loader)), _flatten(_all_batches(fresh, 2))
        assert torch.equal(from_kept[0], from_fresh[0])
        assert torch.equal(from_kept[1], from_fresh[1])
    assert not torch.equal(_flatten(list(loader))[0], _flatten(_all_batches(stream(), 2))[0])


def test_ranks_get_equal_shares_of_the_same_order(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/ranks", count=7, size=64)

    def share(rank: int, world_size: int) -> list[tuple[int, ...]]:
        stream = TileStream(
            annotations.images, annotations.classes, 2, shuffle=True, drop_last=True,
            rank=rank, world_size=world_size,
        )  # fmt: skip
        return [tuple(batch) for batch in stream.epoch_batches()]

    whole = share(0, 1)
    first, second = share(0, 2), share(1, 2)
    assert len(whole) == 3 and all(len(batch) == 2 for batch in whole)  # last tile dropped
    assert len(first) == len(second) == 2  # padded so DDP ranks step together
    assert set(first) | set(second) == set(whole)
    assert set(first).isdisjoint(second[:1])


def test_prefetch_runs_a_bounded_number_of_gets_ahead(bucket: str, tmp_path: Path) -> None:
    annotations = write_tile_set(f"s3://{bucket}/ahead", count=12, size=64)
    cache = tmp_path / "cache"
    options = FetchOptions(concurrency=4, cache_dir=str(cache))
    stream = TileStream(annotations.images, annotations.classes, 2, fetch=options)

    iterator = iter(stream)
    first = next(iterator)  # two tiles used

    def fetched() -> int:
        return sum(1 for p in cache.rglob("*.png"))

    deadline = time.monotonic() + 10
    while fetched() < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(first.images) == 2
    assert fetched() == 5  # the 2 used + 3 in flight ahead: 4 GETs at most, never the whole set
    del iterator


def test_cache_serves_tiles_once_fetched(bucket: str, tmp_path: Path) -> None:
    annotations = write_tile_set(f"s3://{bucket}/cache", count=3, size=64)
    options = FetchOptions(concurrency=2, attempts=1, cache_dir=str(tmp_path / "cache"))
    stream = TileStream(annotations.images, annotations.classes, 3, fetch=options)
    first = _all_batches(stream)
    for record in annotations.images:
        uri_io.delete(record.image)

    second = _all_batches(stream)

    assert torch.equal(torch.stack(first[0].images), torch.stack(second[0].images))


def test_missing_image_fails_naming_the_key(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/missing", count=3, size=64)
    uri_io.delete(annotations.images[1].image)
    stream = TileStream(annotations.images, annotations.classes, 3, fetch=QUICK_RETRY)

    with pytest.raises(NotFoundError, match=r"tile image missing: .*tile_001\.png"):
        _all_batches(stream)
    with pytest.raises(NotFoundError) as from_worker:
        _all_batches(stream, num_workers=1)
    line = worker_error_line(from_worker.value)
    assert "\n" not in line and line.startswith("tile image missing: ")
    assert annotations.images[1].image in line


def test_missing_image_is_skipped_and_counted_when_asked(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/skip", count=4, size=64)
    uri_io.delete(annotations.images[2].image)
    options = FetchOptions(concurrency=2, attempts=2, backoff_s=0.01, on_missing="skip")
    stream = TileStream(annotations.images, annotations.classes, 2, fetch=options)

    batches = _all_batches(stream)

    assert [len(b.images) for b in batches] == [2, 1]
    assert [b.skipped for b in batches] == [0, 1]


def test_corrupt_png_fails_naming_the_key(bucket: str) -> None:
    annotations = write_tile_set(f"s3://{bucket}/corrupt", count=2, size=64)
    broken = annotations.images[0].image
    uri_io.write_bytes(broken, tile_with_panels(64, [(1, 1, 9, 9)])[:60])

    stream = TileStream(annotations.images, annotations.classes, 2, fetch=QUICK_RETRY)
    with pytest.raises(SolarpipeError, match=rf"corrupt image: {broken}"):
        _all_batches(stream)


def test_label_outside_the_classes_is_an_error(bucket: str) -> None:
    record = AnnotatedImage(
        image=f"s3://{bucket}/x.png", width=8, height=8, boxes=[(0, 0, 1, 1)], labels=["tree"],
        split="train",
    )  # fmt: skip
    with pytest.raises(SolarpipeError, match="labels \\['tree'\\] are not among the classes"):
        TileStream([record], ["solar_panel"], 1)
