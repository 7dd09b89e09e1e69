"""Errors a user can cause, each carrying the exit status the CLI returns for it."""

from __future__ import annotations


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
