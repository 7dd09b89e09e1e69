"""Logging set-up shared by the CLI and every stage entrypoint."""

from __future__ import annotations

import logging
import sys

# Lightning 2.6 logs these advertisements at INFO on every fit ("💡 Tip: … litlogger",
# "… litmodels"), and no Trainer or environment setting turns them off.
ADVERTISEMENT_PREFIX = "💡 Tip:"


class DropAdvertisements(logging.Filter):
    """Drop the log records that advertise a product instead of reporting an event."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVERTISEMENT_PREFIX)


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
    for handler in logging.getLogger().handlers:
        handler.addFilter(DropAdvertisements())
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


def adopt_library_loggers(*names: str) -> None:
    """Print these libraries' records through the project's handler only, once each.

    Lightning attaches a stderr handler of its own to the ``lightning`` logger when it is
    imported (and to ``lightning.pytorch`` / ``lightning.fabric`` when nothing is set up yet),
    so each of its lines came out twice. Without a handler of ours their own stay.
    """
    if not logging.getLogger().handlers:
        return
    for name in names:
        library_logger = logging.getLogger(name)
        for handler in list(library_logger.handlers):
            library_logger.removeHandler(handler)
        library_logger.propagate = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
