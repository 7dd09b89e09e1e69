"""Least privilege: every stage image runs on a read-only root filesystem, writing only to an
in-memory /tmp and /dev/shm (``docker run --read-only --tmpfs /tmp --tmpfs /dev/shm``, what
``k8s/policy`` enforces on the cluster); and the S3 secret appears in no line a stage prints,
with ``-v``, when requests are retried, when S3 rejects a signature, when a presigned URL fails.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from components.core import uri as uri_io
from components.images.names import image_name
from components.s3server import EmbeddedS3
from tests.docker_support import engine_or_skip, images_or_skip
from tests.fault_proxy import FaultProxy, FaultRates
from tests.fault_scenario import (
    BUCKET,
    SCENE,
    STAGES,
    TEST_ENV,
    Scenario,
    output_of,
    stage_args,
    stage_env,
)
from tests.test_prepare import authenticating_s3  # noqa: F401 (fixture)

SECRET = "s3-secret-value-that-must-never-be-printed-7c1d"


@pytest.fixture(scope="module")
def engine() -> Any:
    return engine_or_skip()


def run_read_only(engine: Any, stage: str, args: list[str], environment: dict[str, str]) -> Any:
    """The stage's image with a read-only root, tmpfs /tmp and /dev/shm; (status, logs)."""
    container = engine.containers.run(
        image_name(stage),
        args,
        detach=True,
        read_only=True,
        tmpfs={"/tmp": "", "/dev/shm": ""},
        network_mode="host",  # the embedded S3 server listens on loopback
        environment=environment,
    )
    try:
        status = container.wait(timeout=600)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_on_a_read_only_root_filesystem(
    stage: str, engine: Any, scenario: Scenario, s3_server: EmbeddedS3
) -> None:
    images_or_skip(engine, (stage,))
    scenario.clean(stage)  # its inputs exist, and what a run writes is known
    root = f"s3://{BUCKET}/read-only"
    environment = {**s3_server.environment(), **TEST_ENV}

    status, logs = run_read_only(engine, stage, stage_args(stage, root), environment)

    assert status == 0, logs[-3000:]
    assert "Read-only file system" not in logs
    written = uri_io.join(root, "manifest.json") if stage == "prepare" else output_of(stage, root)
    assert uri_io.exists(written) or any(uri_io.list_objects(written)), written


def _all_output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_secret_is_in_no_line_with_verbose_output_and_retries(
    scenario: Scenario, s3_server: EmbeddedS3
) -> None:
    """prepare with ``-v`` (botocore, GDAL and retry details) through a faulty S3."""
    rates = FaultRates.uniform(0.2)
    with FaultProxy(s3_server.endpoint, rates, seed=3, first={"GET": ["cut", "reset"]}) as proxy:
        command = [sys.executable, "-m", "components.prepare", "-v"]
        done = subprocess.run(
            [*command, *stage_args("prepare", f"s3://{BUCKET}/secret-check")],
            capture_output=True,
            text=True,
            timeout=600,
            env=stage_env(
                proxy.endpoint, AWS_SECRET_ACCESS_KEY=SECRET, SOLARPIPE_S3_MAX_ATTEMPTS="8"
            ),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert proxy.injected() >= 2 and "retrying" in done.stderr  # the retries were logged
    assert "DEBUG" in done.stderr and SECRET not in _all_output(done)


@pytest.mark.slow  # a subprocess stage run
def test_secret_is_in_no_line_when_s3_rejects_the_signature(
    authenticating_s3: str,  # noqa: F811
) -> None:
    command = [sys.executable, "-m", "components.detect", "-v", *stage_args("detect", "/tmp/x")]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=stage_env(
            authenticating_s3,
            AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1",
            AWS_SECRET_ACCESS_KEY=SECRET,
        ),
    )
    assert done.returncode == 1
    assert "S3 rejected the credentials" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" in done.stderr  # -v: the details are there, the secret is not
    assert SECRET not in _all_output(done)


def test_a_failing_presigned_url_prints_neither_secret_nor_signature(
    scenario: Scenario, s3_server: EmbeddedS3
) -> None:
    from components.core.s3 import parse_s3_uri, s3_client

    bucket, key = parse_s3_uri(SCENE.replace("scene.tif", "missing.tif"))
    url = s3_client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    signature = url.split("Signature=")[1].split("&")[0]
    command = [sys.executable, "-m", "components.detect", "-v", "--raster", url]
    command += ["--model", "s3://nowhere/model.pt", "--out", "/tmp/never.geojson"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=stage_env(s3_server.endpoint, AWS_SECRET_ACCESS_KEY=SECRET),
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "missing.tif" in last and "Signature=***" in last
    assert SECRET not in _all_output(done) and signature not in _all_output(done)
