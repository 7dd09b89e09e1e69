"""Logging set-up shared by the CLI and every stage entrypoint."""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``; quiet third-party chatter."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in (
        "botocore",
        "boto3",
        "urllib3",
        "s3transfer",
        "rasterio",
        "PIL",
        "fsspec",
        "httpx",
        "httpcore",
    ):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
