"""Seeded cap on the share of tiles without panels, and a seeded train/val/test split that is
stratified so that every split gets tiles with panels.

Both depend only on the sorted image URIs and the seed, so the same input gives the same split.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from components.core.annotations import Split
from components.core.errors import UsageError
from components.core.params import SplitParams
from components.preprocess.parse import LabelledTile

SPLITS: tuple[Split, ...] = ("train", "val", "test")
REQUIRED_SPLITS: tuple[Split, ...] = ("val", "test")
T = TypeVar("T")


def cap_empty_tiles(
    tiles: Sequence[LabelledTile], max_empty_fraction: float | None, seed: int
) -> tuple[list[LabelledTile], int]:
    """Keep at most ``max_empty_fraction`` of tiles without panels (a seeded choice).

    Returns the kept tiles in their input order and how many empty tiles were dropped.
    """
    empty = [tile for tile in tiles if not tile.has_panels]
    if max_empty_fraction is None or max_empty_fraction >= 1.0 or not empty:
        return list(tiles), 0
    with_panels = len(tiles) - len(empty)
    allowed = math.floor(max_empty_fraction / (1.0 - max_empty_fraction) * with_panels + 1e-9)
    if len(empty) <= allowed:
        return list(tiles), 0
    rng = random.Random(f"{seed}:empty-cap")
    kept_empty = {tile.image for tile in rng.sample(sorted(empty, key=_image), allowed)}
    kept = [tile for tile in tiles if tile.has_panels or tile.image in kept_empty]
    return kept, len(empty) - allowed


def _image(tile: LabelledTile) -> str:
    return tile.image


def split_counts(count: int, fractions: dict[Split, float], minimum: int) -> dict[Split, int]:
    """Share ``count`` items by ``fractions`` (largest remainder); every split with a positive
    fraction gets at least ``minimum`` when there are enough items."""
    exact = {name: count * fractions[name] for name in SPLITS}
    counts = {name: math.floor(exact[name] + 1e-9) for name in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda name: (counts[name] - exact[name], SPLITS.index(name)))
    for name in by_remainder[: count - sum(counts.values())]:
        counts[name] += 1
    for name in SPLITS:
        while fractions[name] > 0 and counts[name] < minimum:
            donor = max(SPLITS, key=lambda other: counts[other] - (fractions[other] > 0) * minimum)
            if counts[donor] - (fractions[donor] > 0) * minimum <= 0:
                break
            counts[donor] -= 1
            counts[name] += 1
    return counts


def _deal(items: list[T], counts: dict[Split, int]) -> dict[Split, list[T]]:
    dealt: dict[Split, list[T]] = {}
    start = 0
    for name in SPLITS:
        dealt[name] = items[start : start + counts[name]]
        start += counts[name]
    return dealt


def assign_splits(tiles: Sequence[LabelledTile], split: SplitParams, seed: int) -> dict[str, Split]:
    """Image URI → split. Tiles with and without panels are shuffled (seeded) and shared out
    separately, so each split gets its share of both."""
    fractions: dict[Split, float] = {"train": split.train, "val": split.val, "test": split.test}
    for name in REQUIRED_SPLITS:
        if fractions[name] <= 0:
            raise UsageError(
                f"preprocess.split.{name} is 0: the {name} split would be empty; "
                "give it a share (train + val + test = 1)"
            )
    rng = random.Random(f"{seed}:split")
    with_panels = sorted((t for t in tiles if t.has_panels), key=_image)
    without_panels = sorted((t for t in tiles if not t.has_panels), key=_image)
    needed = sum(1 for name in SPLITS if fractions[name] > 0)
    if len(with_panels) < needed:
        raise UsageError(
            f"only {len(with_panels)} tiles with panels: preprocess.split "
            f"(train={split.train:g}, val={split.val:g}, test={split.test:g}) needs at least "
            f"{needed} so that val and test get one each; label more tiles or change the split"
        )
    rng.shuffle(with_panels)
    rng.shuffle(without_panels)
    assignment: dict[str, Split] = {}
    for group, minimum in ((with_panels, 1), (without_panels, 0)):
        dealt = _deal(group, split_counts(len(group), fractions, minimum))
        for name, members in dealt.items():
            assignment.update({tile.image: name for tile in members})
    return assignment
