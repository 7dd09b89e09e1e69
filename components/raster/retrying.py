"""Raster opens and window reads that survive a broken connection to a remote raster.

GDAL retries the HTTP codes it knows (``GDAL_HTTP_MAX_RETRY``, set from the core policy in
``core/s3.py``) but not a response that breaks off mid-body: the read fails with
``TIFFFillTile: Read error ... got N bytes, expected M``, and GDAL keeps the short bytes in its
``/vsicurl/`` cache, so even a reopened dataset fails again (measured with
``tests/fault_proxy.py``). Here a failed open or read of an ``s3://`` or ``http(s)://`` raster is
retried under the core policy: drop GDAL's cached bytes of that file (open and close it once
with ``CPL_VSIL_CURL_NON_CACHED`` naming it), reopen, read the window again. Local rasters are
not retried: their errors do not go away.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, suppress
from typing import Any, TypeVar

import rasterio
from rasterio.errors import RasterioError

from components.core import retry
from components.core.errors import SolarpipeError
from components.core.s3 import raster_env

T = TypeVar("T")
Opener = Callable[[str], AbstractContextManager[Any]]
# GDAL already retried what it knows; an answer in the 4xx range will not change.
_FINAL_HTTP = re.compile(r"HTTP response code: 4\d\d")
_REMOTE_SCHEMES = {
    "s3://": "/vsis3/",
    "http://": "/vsicurl/http://",
    "https://": "/vsicurl/https://",
}


def vsi_path(raster_uri: str) -> str | None:
    """GDAL's name of a remote raster (``s3://b/k`` → ``/vsis3/b/k``); None for a local one."""
    for scheme, prefix in _REMOTE_SCHEMES.items():
        if raster_uri.startswith(scheme):
            return prefix + raster_uri.removeprefix(scheme)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def is_transient(exc: BaseException) -> bool:
    """A GDAL failure worth another try on a remote raster."""
    if not isinstance(exc, RasterioError):
        return False
    return not any(_FINAL_HTTP.search(str(link)) for link in _chain(exc))


def gdal_cause(exc: BaseException) -> str:
    """GDAL's own words for a failure (rasterio's message says "see previous exception")."""
    lines = str(_chain(exc)[-1]).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def forget_cached_bytes(raster_uri: str) -> None:
    """Drop what GDAL's ``/vsicurl/`` cache holds of one remote file."""
    # A failed open closes its handle too, which is all it takes; the retry reports what lasts.
    with (
        raster_env(),
        rasterio.Env(CPL_VSIL_CURL_NON_CACHED=vsi_path(raster_uri)),
        suppress(RasterioError),
    ):
        rasterio.open(raster_uri).close()


def open_dataset(raster_uri: str) -> Any:
    """``rasterio.open``, retried on a remote raster (inside ``raster_env``)."""
    if vsi_path(raster_uri) is None:
        return rasterio.open(raster_uri)
    try:
        return retry.call(
            lambda: rasterio.open(raster_uri),
            is_transient,
            raster_uri,
            before_retry=lambda: forget_cached_bytes(raster_uri),
        )
    except retry.GaveUp as exc:
        raise SolarpipeError(
            f"cannot open {raster_uri}: {gdal_cause(exc.cause)} "
            f"(gave up after {exc.attempts} attempts)"
        ) from exc


class RetryingDataset:
    """A raster opened with ``opener`` (``open_raster``) whose reads are retried; a context
    manager. ``read(fn)`` returns ``fn(dataset)``; on a remote raster a GDAL failure inside it
    closes the dataset, drops the cached bytes, reopens and calls ``fn`` again under the policy.
    """

    def __init__(self, raster_uri: str, opener: Opener) -> None:
        self.uri = raster_uri
        self.opener = opener
        self.remote = vsi_path(raster_uri) is not None
        self._stack = ExitStack()
        self.dataset: Any = None

    def __enter__(self) -> RetryingDataset:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self) -> None:
        self.dataset = self._stack.enter_context(self.opener(self.uri))

    def _reopen(self) -> None:
        self._stack.close()
        forget_cached_bytes(self.uri)
        self._open()

    def read(self, function: Callable[[Any], T]) -> T:
        """``function(dataset)``; a GDAL failure ends as one error naming the raster."""
        try:
            if not self.remote:
                return function(self.dataset)
            return retry.call(
                lambda: function(self.dataset), is_transient, self.uri, before_retry=self._reopen
            )
        except retry.GaveUp as exc:
            raise SolarpipeError(
                f"reading {self.uri} failed: {gdal_cause(exc.cause)} "
                f"(gave up after {exc.attempts} attempts)"
            ) from exc
        except RasterioError as exc:
            raise SolarpipeError(f"reading {self.uri} failed: {gdal_cause(exc)}") from exc
