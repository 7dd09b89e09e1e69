"""Logging set-up shared by the CLI and every stage entrypoint, with secrets masked.

Every log line (tracebacks included) and every error line goes through :func:`redact`: the
values of the secret variables and the signature of a presigned URL become ``***``. Measured:
a presigned raster URL that fails is printed whole in the error line (its ``Signature`` lets
anyone read the object until it expires); botocore and rasterio at DEBUG print no secret
value, and the test keeps it so.
"""

from __future__ import annotations

import logging
import os
import re
import sys

# Lightning 2.6 logs these advertisements at INFO on every fit ("💡 Tip: … litlogger",
# "… litmodels"), and no Trainer or environment setting turns them off.
ADVERTISEMENT_PREFIX = "💡 Tip:"


class DropAdvertisements(logging.Filter):
    """Drop the log records that advertise a product instead of reporting an event."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVERTISEMENT_PREFIX)


SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LABEL_STUDIO_API_KEY",
    "LABEL_STUDIO_PASSWORD",
    "LABEL_STUDIO_USER_TOKEN",
)
MASK = "***"
_SIGNED_QUERY = re.compile(
    r"\b((?:X-Amz-Signature|X-Amz-Security-Token|Signature)=)"
    r"[^&\s\"'<>]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with secret values (read now from the environment) and URL signatures masked."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return _SIGNED_QUERY.sub(rf"\1{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message and traceback) goes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``; quiet third-party chatter."""
    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    )
    handler.addFilter(DropAdvertisements())
    logging.basicConfig(level=level, handlers=[handler], force=True)
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
