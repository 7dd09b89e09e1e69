"""Read inference windows from a raster in a background thread, a few batches ahead.

The thread opens the raster itself, inside the S3-aware GDAL environment (GDAL settings are
per thread), reads each window with the shared raster reader (same band and bit-depth rules, padding
past the edge; a read broken by the network is retried, ``raster/retrying.py``) and hands over batches through a bounded queue: at most ``depth`` batches of
pixels are held at once, never the whole raster.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from components.core.manifest import TileWindow
from components.raster.reader import open_raster, read_tile
from components.raster.retrying import RetryingDataset

_DONE = object()


@dataclass
class WindowBatch:
    """Pixels (``H×W×3`` uint8) of the windows of one batch that hold data."""

    windows: list[tuple[int, int, TileWindow]]
    pixels: list[np.ndarray]
    skipped_nodata: int


def _read_batches(
    raster_uri: str,
    windows: list[tuple[int, int, TileWindow]],
    batch_size: int,
    uint16_max: int,
    nodata: int | None,
) -> Iterator[WindowBatch]:
    with RetryingDataset(raster_uri, open_raster) as raster:
        for start in range(0, len(windows), batch_size):
            batch = WindowBatch([], [], 0)
            for entry in windows[start : start + batch_size]:
                rgb, all_nodata = raster.read(
                    lambda dataset, window=entry[2]: read_tile(dataset, window, uint16_max, nodata)
                )
                if all_nodata:
                    batch.skipped_nodata += 1
                    continue
                batch.windows.append(entry)
                batch.pixels.append(rgb)
            yield batch


def window_batches(
    raster_uri: str,
    windows: list[tuple[int, int, TileWindow]],
    batch_size: int,
    uint16_max: int,
    nodata: int | None,
    depth: int = 2,
) -> Iterator[WindowBatch]:
    """Batches of windows in order, read by a background thread ``depth`` batches ahead."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in _read_batches(raster_uri, windows, batch_size, uint16_max, nodata):
                while not stop.is_set():
                    try:
                        handoff.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # re-raised in the consuming thread
            handoff.put(exc)

    reader = threading.Thread(target=produce, name="raster-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join(timeout=5)
