"""One S3 client factory for the whole project, and the matching GDAL settings.

The endpoint comes from ``AWS_ENDPOINT_URL`` (with scheme: ``http://127.0.0.1:9000`` or
``https://…``); credentials and region from the standard AWS variables. The same endpoint is
mapped onto GDAL (``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``) so rasterio
reads ``s3://`` rasters from it too.

Every request the client sends is retried under the one policy of ``core/retry.py``
(``core/s3_retries.py``); GDAL gets the same attempts and first delay.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from components.core import retry
from components.core.errors import NotFoundError, SolarpipeError, UsageError
from components.core.s3_retries import gave_up_after, is_broken_body, use_retry_policy

ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
DEFAULT_REGION = "us-east-1"
_client_lock = threading.Lock()


def endpoint_url() -> str | None:
    """The configured S3 endpoint (``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``)."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(ENDPOINT_VARIABLE)
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(
            f"{ENDPOINT_VARIABLE}={url!r} must include the scheme, e.g. http://127.0.0.1:9000"
        )
    return url.rstrip("/")


def region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or DEFAULT_REGION


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``; the key may be empty."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UsageError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _client_config() -> Config:
    return Config(
        region_name=region(),
        retries={"total_max_attempts": 1, "mode": "standard"},  # replaced: use_retry_policy
        connect_timeout=float(os.environ.get("SOLARPIPE_S3_CONNECT_TIMEOUT", "5")),
        read_timeout=60,
        max_pool_connections=64,
        s3={"addressing_style": "path"} if endpoint_url() else {},
    )


@functools.lru_cache(maxsize=8)
def _cached_client(endpoint: str | None, key_id: str | None, pid: int) -> Any:
    del key_id, pid  # cache keys only: a new process or new credentials get a new client
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=endpoint, config=_client_config())
    use_retry_policy(client)
    return client


def s3_client() -> Any:
    """A thread-safe boto3 S3 client for the current endpoint and credentials (cached)."""
    with _client_lock:
        return _cached_client(endpoint_url(), os.environ.get("AWS_ACCESS_KEY_ID"), os.getpid())


def gdal_options() -> dict[str, str]:
    """GDAL config options that point ``/vsis3/`` (rasterio ``s3://``) at the same endpoint."""
    policy = retry.current_policy()
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_USE_HEAD": "NO",
        # GDAL retries the HTTP codes it knows (429, 500, 502-504) and some curl errors itself,
        # doubling the delay with jitter: the policy's retries and first delay.
        "GDAL_HTTP_MAX_RETRY": str(policy.attempts - 1),
        "GDAL_HTTP_RETRY_DELAY": f"{policy.backoff_s:g}",
        "AWS_REGION": region(),
    }
    url = endpoint_url()
    if url:
        parsed = urlparse(url)
        options["AWS_S3_ENDPOINT"] = parsed.netloc
        options["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return options


@functools.lru_cache(maxsize=8)
def _rasterio_session(endpoint: str | None, key_id: str | None, region_name: str) -> Any:
    del key_id  # cache key only
    from rasterio.session import AWSSession

    return AWSSession(
        session=boto3.session.Session(region_name=region_name),
        endpoint_url=urlparse(endpoint).netloc if endpoint else None,
    )


@contextmanager
def raster_env() -> Iterator[None]:
    """A ``rasterio.Env`` with the S3 endpoint and credentials of :func:`s3_client`."""
    import rasterio

    session = _rasterio_session(endpoint_url(), os.environ.get("AWS_ACCESS_KEY_ID"), region())
    with rasterio.Env(session=session, **gdal_options()):
        yield


def describe_s3_error(exc: BaseException, uri: str) -> SolarpipeError:
    """Turn a botocore exception (or a read the policy gave up on) into one line a user can act
    on; a transient fault says how many tries it survived."""
    tries = gave_up_after()
    if isinstance(exc, retry.GaveUp):
        exc, tries = exc.cause, exc.attempts
    after = f"; gave up after {tries} attempts" if tries else ""
    if isinstance(exc, EndpointConnectionError):
        return SolarpipeError(
            f"cannot reach the S3 endpoint {endpoint_url() or 'AWS'} for {uri} "
            f"(is the server running? set {ENDPOINT_VARIABLE} or start `solarpipe s3 serve`)"
            f"{after}"
        )
    if isinstance(exc, NoCredentialsError):
        if not endpoint_url():
            return SolarpipeError(
                f"S3 is not configured for {uri}: set {ENDPOINT_VARIABLE} and AWS credentials, "
                "or start the embedded server (`solarpipe s3 serve`, then export the variables "
                "it prints), or run `solarpipe quickstart`"
            )
        return SolarpipeError(
            f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ClientError):
        return _describe_client_error(exc, uri, after)
    if is_broken_body(exc):
        return SolarpipeError(f"S3 read of {uri} broke off: {_first_line(exc)}{after}")
    return SolarpipeError(f"S3 error on {uri}: {_first_line(exc)}{after}")


def _describe_client_error(exc: ClientError, uri: str, after: str) -> SolarpipeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchBucket",):
        return NotFoundError(f"bucket does not exist: {uri} (HTTP {status})")
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFoundError(f"no such object: {uri} (HTTP {status})")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
        return SolarpipeError(
            f"S3 rejected the credentials for {uri}: {code} (HTTP {status}); "
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if code == "PreconditionFailed":
        return SolarpipeError(f"{uri} changed while it was read (HTTP {status}): run again")
    message = error.get("Message", "")
    return SolarpipeError(f"S3 error on {uri}: {code} {message} (HTTP {status}{after})")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
