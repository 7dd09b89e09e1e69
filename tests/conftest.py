"""Shared fixtures: one embedded S3 server (moto, real HTTP on loopback) and, for the
``labelstudio`` tests, one Label Studio server per test session (it takes minutes to start)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.s3server import EmbeddedS3, ensure_bucket, start_embedded_s3
from tests.labelstudio_server import (
    LabelStudioServer,
    labelstudio_executable,
    running_labelstudio,
)


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


@pytest.fixture(scope="session")
def labelstudio_server(s3_server: EmbeddedS3) -> Iterator[LabelStudioServer]:
    """A real Label Studio server; skipped without its venv, or failed when
    ``SOLARPIPE_REQUIRE_LABELSTUDIO`` is set (CI)."""
    if not labelstudio_executable().exists():
        message = (
            f"no Label Studio at {labelstudio_executable()}: run scripts/install-labelstudio.sh"
        )
        if os.environ.get("SOLARPIPE_REQUIRE_LABELSTUDIO"):
            pytest.fail(message)
        pytest.skip(message)
    with running_labelstudio() as server:
        yield server


@pytest.fixture()
def labelstudio(
    labelstudio_server: LabelStudioServer, monkeypatch: pytest.MonkeyPatch
) -> LabelStudioServer:
    """The server, with ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` pointing at it."""
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio_server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio_server.token)
    return labelstudio_server


# The scene, detector and clean stage outputs of the fault and kill tests (built once).
from tests.fault_scenario import scenario  # noqa: E402, F401

# Fixtures that train, export or run a detector: a test using one is not pure logic.
MODEL_FIXTURES = {"checkpoint", "exported", "exported_at_10cm", "exported_model"}
# Modules whose tests compile the pipeline or run commands in subprocesses (seconds each).
SUBPROCESS_MODULES = {"test_pipeline_compile", "test_pipeline_submit", "test_s3_serve"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``s3`` every test that starts the embedded S3 server (through any fixture),
    ``labelstudio`` every test that starts Label Studio, and ``slow`` the tests that run a model
    or a subprocess pipeline compile, so ``-m`` can leave them out (the pure-logic subset)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "s3_server" in fixtures:
            item.add_marker(pytest.mark.s3)
        if "labelstudio_server" in fixtures:
            item.add_marker(pytest.mark.labelstudio)
        if (
            fixtures & MODEL_FIXTURES
            or item.module.__name__.rsplit(".", 1)[-1] in SUBPROCESS_MODULES
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture()
def without_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process sees no CUDA device (as on a CPU machine, also on a GPU one); the returned
    environment hides the devices from a subprocess too."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test detector's export folder (``tests/detector_fixture.py``), built once per session;
    its checkpoint records no pixel size (an older one)."""
    from tests.detector_fixture import cached_export

    return cached_export(tmp_path_factory.getbasetemp())
