"""What the HTTP service accepts: request body size, image formats, and pixel count.

A request body over ``SOLARPIPE_SERVE_MAX_UPLOAD_MB`` (default 20 MB: a 4096² px PNG tile is
~25 MB at worst, a 256² px tile ~0.2 MB) is answered 413 before it is parsed. An upload that
is not a PNG or JPEG is answered 400, and an image over ``SOLARPIPE_SERVE_MAX_PIXELS``
(default 4096² px; the model resizes every image to its input size anyway) 413 from its header
alone, before a byte of it is decompressed: a decompression bomb never reaches memory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_UPLOAD_BYTES = int(float(os.environ.get("SOLARPIPE_SERVE_MAX_UPLOAD_MB", "20")) * 1_000_000)
MAX_PIXELS = int(os.environ.get("SOLARPIPE_SERVE_MAX_PIXELS", str(4096 * 4096)))
IMAGE_FORMATS = ("PNG", "JPEG")
# A refused body is still read (and dropped) up to this many bytes, so that an HTTP client
# still sending it gets the 413 rather than a connection reset; past it the connection closes.
DRAIN_LIMIT_BYTES = 256_000_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ImageTooLarge(Exception):
    """An image over the pixel limit (HTTP 413); not a ValueError, so it is not a 400."""


def decode_rgb(image_path: Path) -> np.ndarray:
    """An uploaded PNG/JPEG as ``H×W×3`` uint8.

    ``ValueError`` when it is not a readable PNG or JPEG, :class:`ImageTooLarge` when it has
    more than ``MAX_PIXELS`` pixels (known from the header, before decompression).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(image_path, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageTooLarge(
                        f"image of {width} x {height} px is over the limit of {MAX_PIXELS} "
                        "pixels (SOLARPIPE_SERVE_MAX_PIXELS); cut it into tiles, or run "
                        "the detect stage on the raster"
                    )
                return np.array(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError("not a readable PNG or JPEG image") from exc


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or a bad one."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class UploadTooLarge(Exception):
    """Raised into the app when a body without Content-Length grows over the limit."""


class UploadLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 and is never parsed."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            await self.refuse(length, receive, send)
            return
        received, refused, answered = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                refused = True
                raise UploadTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not refused:  # the app's answer to a cut-off body is dropped; ours goes out
                answered = True
                await send(message)

        with contextlib.suppress(UploadTooLarge):
            await self.app(scope, counted_receive, guarded_send)
        if refused and not answered:
            await self.refuse(received, receive, send)

    async def refuse(self, size: int, receive: Receive, send: Send) -> None:
        drained = 0
        more_body = True
        while more_body and drained < DRAIN_LIMIT_BYTES:
            message = await receive()
            drained += len(message.get("body", b""))
            more_body = message["type"] == "http.request" and message.get("more_body", False)
        body = (
            f'{{"error": "request body of {size} bytes or more is over the limit of '
            f'{self.max_bytes} bytes (SOLARPIPE_SERVE_MAX_UPLOAD_MB)"}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
