"""List the export objects under a prefix and fetch them concurrently, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.progress import progress_bar

T = TypeVar("T")


def list_export_objects(annotations_prefix: str) -> list[str]:
    """The URI of every object under the prefix (all pages), sorted by key."""
    object_uris = [info.uri for info in uri_io.list_objects(annotations_prefix)]
    if not object_uris:
        raise SolarpipeError(
            f"no export objects under {annotations_prefix}: run `solarpipe labelstudio setup` "
            "and label some tiles in Label Studio (or write them with "
            "`solarpipe labelstudio annotate-from-truth`), then run preprocess again"
        )
    return object_uris


def fetch_all(
    object_uris: Sequence[str],
    handle: Callable[[str, bytes | None], T],
    workers: int,
    desc: str = "fetch",
) -> list[T]:
    """GET every object on ``workers`` threads and ``handle(uri, data)`` it in the same thread.

    ``data`` is None for an object that vanished between listing and fetching. Results come
    back in the order of ``object_uris``.
    """

    def fetch_one(object_uri: str) -> T:
        try:
            data: bytes | None = uri_io.read_bytes(object_uri)
        except NotFoundError:
            data = None
        return handle(object_uri, data)

    results: list[T | None] = [None] * len(object_uris)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress_bar(total=len(object_uris), desc=desc, unit="obj") as bar,
    ):
        futures = {pool.submit(fetch_one, uri): index for index, uri in enumerate(object_uris)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]
