"""Errors a user can cause, each carrying the exit status the CLI returns for it, and which
library exceptions are runtime faults (I/O, S3, rasters) that the CLI also reports in one line."""

from __future__ import annotations

import builtins
import re


class SolarpipeError(Exception):
    """A runtime failure the user can act on (exit status 1)."""

    exit_code = 1


class UsageError(SolarpipeError):
    """Bad command line or params (exit status 2)."""

    exit_code = 2


class NotFoundError(SolarpipeError):
    """An input URI (object, file, bucket) that does not exist."""


# What to do when tiles listed in a manifest are gone from S3 (an embedded server restarted).
MISSING_TILES_HINT = (
    "the tiles are gone from S3: rebuild them with `dvc repro --force prepare` "
    "(or rerun `solarpipe quickstart`, which does it by itself)"
)


# Libraries whose exceptions are runtime faults of I/O, S3 or rasters, not programming errors.
RUNTIME_FAULT_MODULES = ("botocore", "boto3", "s3transfer", "urllib3", "rasterio", "http.client")
_WORKER_HEADER = re.compile(r"^Caught (\w+) in (DataLoader worker process \d+|[\w ]+)\.")
_QUALIFIED_LINE = re.compile(r"^([\w.]+): (.*)$")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` for the error line: for an error re-raised from a DataLoader
    worker (whose message holds the worker's traceback) the original exception's message; for
    a library's exception its first line, or its cause's where it says "see previous exception"
    (rasterio)."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        match = _QUALIFIED_LINE.match(last)
        return match.group(2) if match else last
    if isinstance(exc, SolarpipeError):
        return text
    if "previous exception" in text and exc.__cause__ is not None:
        return one_line(exc.__cause__)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _is_fault_class(qualified_name: str) -> bool:
    module, _, name = qualified_name.rpartition(".")
    if not module:
        builtin = getattr(builtins, name, None)
        return isinstance(builtin, type) and issubclass(builtin, OSError)
    return module.startswith(RUNTIME_FAULT_MODULES) or module.startswith("components.")


def is_runtime_fault(exc: BaseException) -> bool:
    """An exception that is an I/O, S3 or raster failure (exit status 1, one line), also when a
    DataLoader worker re-raised it as a ``RuntimeError``; anything else is a programming error."""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__
    if module.startswith(RUNTIME_FAULT_MODULES):
        return True
    text = str(exc)
    if not _WORKER_HEADER.match(text) or "Original Traceback" not in text:
        return False
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    match = _QUALIFIED_LINE.match(last)
    return bool(match) and _is_fault_class(match.group(1))
