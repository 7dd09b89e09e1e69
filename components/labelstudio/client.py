"""Connect to a Label Studio server with label-studio-sdk, and turn its failures into one line.

URL and token come from ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``; the token may be a
legacy API token or a personal access token (a JWT refresh token, which the SDK exchanges for
short-lived access tokens itself).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from components.core.errors import SolarpipeError, UsageError

URL_VARIABLE = "LABEL_STUDIO_URL"
TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
REQUEST_TIMEOUT_S = 60.0


@dataclass
class LabelStudioConnection:
    """A verified SDK client and the base URL it talks to."""

    url: str
    client: Any  # label_studio_sdk.LabelStudio


def labelstudio_url() -> str:
    """The server's base URL from ``LABEL_STUDIO_URL`` (scheme required, no trailing slash)."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        raise UsageError(
            f"set {URL_VARIABLE} to the Label Studio server, e.g. http://127.0.0.1:8080"
        )
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"{URL_VARIABLE}={url!r} must include the scheme, e.g. http://host:8080")
    return url.rstrip("/")


def _api_detail(body: Any) -> str:
    """The useful part of an error reply: DRF's field errors, else its ``detail``."""
    if isinstance(body, dict):
        errors = body.get("validation_errors")
        if isinstance(errors, dict):
            return "; ".join(
                f"{field}: {' '.join(map(str, problems))}" for field, problems in errors.items()
            )
        return str(errors or body.get("detail") or body)
    return str(body)[:200] if body else ""


def describe_labelstudio_error(exc: Exception, url: str) -> SolarpipeError:
    """One line a user can act on for an SDK or transport failure against ``url``."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(exc, ApiError):
        status = exc.status_code
        if status in (401, 403):
            return SolarpipeError(
                f"Label Studio at {url} rejected the token (HTTP {status}: "
                f"{_api_detail(exc.body)}); check {TOKEN_VARIABLE}"
            )
        return SolarpipeError(f"Label Studio at {url}: HTTP {status}: {_api_detail(exc.body)}")
    if isinstance(exc, httpx.TimeoutException):
        return SolarpipeError(f"Label Studio at {url} did not answer in time ({exc!r})")
    if isinstance(exc, httpx.TransportError):
        return SolarpipeError(
            f"cannot reach Label Studio at {url} ({type(exc).__name__}: {exc}); "
            f"is the server running? check {URL_VARIABLE}"
        )
    if isinstance(exc, json.JSONDecodeError):
        return SolarpipeError(f"Label Studio at {url} sent a reply that is not JSON ({exc})")
    return SolarpipeError(f"Label Studio at {url}: {exc}")


@contextmanager
def labelstudio_errors(url: str) -> Iterator[None]:
    """Re-raise SDK and transport failures inside the block as one-line ``SolarpipeError``."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except (ApiError, httpx.HTTPError, json.JSONDecodeError) as exc:
        raise describe_labelstudio_error(exc, url) from exc


def labelstudio_token() -> str:
    """The API token from ``LABEL_STUDIO_API_KEY`` (legacy token or personal access token)."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise UsageError(
            f"set {TOKEN_VARIABLE} to a Label Studio access token "
            "(Account & Settings → Personal Access Token, or a legacy token)"
        )
    return token


def connect(url: str | None = None, token: str | None = None) -> LabelStudioConnection:
    """A client whose token the server has just accepted (defaults: the environment's)."""
    url = url or labelstudio_url()
    token = token or labelstudio_token()
    from label_studio_sdk import LabelStudio

    with labelstudio_errors(url):
        client = LabelStudio(base_url=url, api_key=token, timeout=REQUEST_TIMEOUT_S)
        client.users.whoami()
    return LabelStudioConnection(url=url, client=client)
