"""Find the part files a merge joins, and check that every shard's part is there.

A merge takes its parts as URIs, as one JSON list of URIs (what Kubeflow's ``dsl.Collected``
passes), or as a prefix ending in ``/`` (every ``shard-IIII-of-NNNN.*`` under it). Each part
names its own shard ``I/N``; the merge refuses to start unless all ``N`` are present once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError, UsageError
from components.shards.spec import PART_PATTERN, ShardSpec

T = TypeVar("T")
# Parts are fetched in parallel: over S3 each is one GET of ~20-50 ms latency.
PART_READERS = 16


def part_uris(values: list[str], suffix: str) -> list[str]:
    """Expand ``--parts`` values: URIs, JSON lists of URIs, prefixes ending in ``/``."""
    uris: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            uris.extend(json_list(text))
        elif text.endswith("/"):
            uris.extend(parts_under(text, suffix))
        else:
            uris.append(text)
    if not uris:
        raise UsageError("--parts: no part URIs given")
    return uris


def json_list(text: str) -> list[str]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--parts: not a JSON list of URIs: {text[:80]!r} ({exc})") from exc
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise UsageError(f"--parts: expected a JSON list of URI strings, got {text[:80]!r}")
    return items


def parts_under(prefix: str, suffix: str) -> list[str]:
    found = [
        info.uri
        for info in uri_io.list_objects(prefix)
        if info.uri.endswith(suffix) and PART_PATTERN.search(uri_io.basename(info.uri))
    ]
    if not found:
        raise NotFoundError(f"no shard parts (shard-IIII-of-NNNN{suffix}) under {prefix}")
    return found


def load_all(uris: list[str], load: Callable[[str], T]) -> list[T]:
    """Every part, fetched in parallel, in the order of ``uris``."""
    with ThreadPoolExecutor(max_workers=max(1, min(PART_READERS, len(uris)))) as pool:
        return list(pool.map(load, uris))


def check_complete(shards: list[ShardSpec], uris: list[str], what: str) -> None:
    """All parts of one shard count, each index once, none missing."""
    counts = sorted({shard.count for shard in shards})
    if len(counts) > 1:
        raise SolarpipeError(
            f"{what} parts come from different shard counts {counts}: "
            "merge the parts of one run only"
        )
    count = counts[0]
    seen: dict[int, str] = {}
    for shard, uri in zip(shards, uris, strict=True):
        if shard.index in seen:
            raise SolarpipeError(
                f"{what} of shard {shard} given twice: {seen[shard.index]} and {uri}"
            )
        seen[shard.index] = uri
    missing = [index for index in range(count) if index not in seen]
    if missing:
        example = ShardSpec(missing[0], count)
        raise SolarpipeError(
            f"{what} of shard {example} is missing ({len(missing)} of {count} missing, e.g. "
            f"{example.part_name('')}*): nothing merged"
        )
