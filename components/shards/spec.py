"""``--shard I/N``: which windows shard ``I`` of ``N`` does, and how its part file is named.

Shards are numbered from 0 (as Kubernetes indexed Jobs and ``dsl.ParallelFor`` items are). The
windows that hold data (inside a mosaic file, inside the area of interest) are ordered block by
block (``BLOCK`` x ``BLOCK`` windows, blocks row by row) and cut into ``N`` runs of equal count:
shards get equal work however much of the area is empty, and each gets compact areas, so it
opens few of a mosaic's files. The unsharded run is shard ``0/1``: the same code path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from components.core import uri as uri_io
from components.core.errors import UsageError

# Windows per block edge: 16 windows of 256 px at 0.1 m are 410 m, so a shard's block touches
# at most 4 of SwissImage's 1-km files.
BLOCK = 16
SPEC_PATTERN = re.compile(r"^(\d+)/(\d+)$")
PART_PATTERN = re.compile(r"shard-(\d+)-of-(\d+)\.[a-z]+$")


@dataclass(frozen=True)
class ShardSpec:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def part_name(self, suffix: str) -> str:
        """``shard-0003-of-0008.json``: zero-padded, so listing order is shard order."""
        return f"shard-{self.index:04d}-of-{self.count:04d}{suffix}"


WHOLE = ShardSpec(0, 1)


def parse_shard(text: str | None) -> ShardSpec:
    """``"I/N"`` with ``0 <= I < N``; ``None`` is the whole run (``0/1``)."""
    if text is None:
        return WHOLE
    match = SPEC_PATTERN.match(text.strip())
    if not match:
        raise UsageError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise UsageError(f"--shard {text}: the shard count N must be at least 1")
    if index >= count:
        raise UsageError(
            f"--shard {text}: the shard index must be in 0..{count - 1} (shards count from 0)"
        )
    return ShardSpec(index, count)


def part_uri(target: str, shard: ShardSpec, suffix: str) -> str:
    """Where a shard writes its part: ``target`` itself, or the part name under a ``/`` prefix."""
    return uri_io.join(target, shard.part_name(suffix)) if target.endswith("/") else target


def shard_cells(has_data: np.ndarray, shard: ShardSpec, block: int = BLOCK) -> np.ndarray:
    """Flat row-major indices (sorted) of the grid cells holding data that ``shard`` does."""
    rows, columns = np.nonzero(has_data)
    order = np.lexsort((columns, rows, columns // block, rows // block))
    total = len(order)
    start = total * shard.index // shard.count
    end = total * (shard.index + 1) // shard.count
    mine = order[start:end]
    return np.sort(rows[mine].astype(np.int64) * has_data.shape[1] + columns[mine])
