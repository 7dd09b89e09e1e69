"""The embedded S3 server: moto's S3-compatible server on loopback, for the quickstart and tests.

It keeps objects in memory: they are gone when the process ends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from components.core.errors import SolarpipeError

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 9555
EMBEDDED_ACCESS_KEY = "solarpipe-embedded"  # moto accepts any key; not a secret
EMBEDDED_SECRET_KEY = "solarpipe-embedded"


@dataclass
class EmbeddedS3:
    """A running embedded server: its endpoint and a handle to stop it."""

    endpoint: str
    server: Any

    def stop(self) -> None:
        self.server.stop()

    def environment(self) -> dict[str, str]:
        """The AWS variables a client needs to talk to this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", EMBEDDED_ACCESS_KEY),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", EMBEDDED_SECRET_KEY),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise SolarpipeError(f"embedded S3 server did not start on {host}:{port}")


def start_embedded_s3(port: int | None = None, host: str = LOOPBACK) -> EmbeddedS3:
    """Start moto's server in a background thread; ``port=None`` picks a free one.

    A taken port is a runtime error naming it (callers that may move pass ``None``).
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SolarpipeError(
            "the embedded S3 server needs moto: pip install 'solarpipe[s3server]'"
        ) from exc
    chosen = port if port is not None else free_port(host)
    if not port_is_free(chosen, host):
        raise SolarpipeError(
            f"port {chosen} on {host} is already in use (pick another with --port)"
        )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=chosen, verbose=False)
    server.start()
    _wait_until_serving(host, chosen)
    return EmbeddedS3(endpoint=f"http://{host}:{chosen}", server=server)


def ensure_bucket(bucket: str) -> None:
    """Create a bucket on the configured endpoint if it does not exist."""
    from botocore.exceptions import ClientError

    from components.core.s3 import describe_s3_error, s3_client

    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise describe_s3_error(exc, f"s3://{bucket}") from exc
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as create_exc:
            raise describe_s3_error(create_exc, f"s3://{bucket}") from create_exc


def start_embedded_s3_process(buckets: tuple[str, ...] = ()) -> Any:
    """``solarpipe s3 serve`` in its own process (as users run it); points this process at it.

    Benchmarks use it so the server does not share the client's interpreter. Returns the
    ``subprocess.Popen``; terminate it when done.
    """
    import subprocess
    import sys

    port = free_port()
    command = [sys.executable, "-m", "components.cli", "s3", "serve", "--port", str(port)]
    for bucket in buckets:
        command += ["--bucket", bucket]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    if "serving at" not in server.stdout.readline():
        server.kill()
        raise SolarpipeError("the embedded S3 server did not start")
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{LOOPBACK}:{port}",
        AWS_ACCESS_KEY_ID=EMBEDDED_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=EMBEDDED_SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server
