"""Shared fixtures: one embedded S3 server (moto, real HTTP on loopback) per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from components.s3server import EmbeddedS3, ensure_bucket, start_embedded_s3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    """A real S3-compatible server on 127.0.0.1; the process environment points at it."""
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(variable, None)
    server = start_embedded_s3()
    os.environ.update(server.environment())
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture()
def bucket(s3_server: EmbeddedS3) -> str:
    """A fresh, empty bucket on the embedded server for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name)
    return name


# The scene, detector and clean stage outputs of the fault and kill tests (built once).
from tests.fault_scenario import scenario  # noqa: E402, F401
