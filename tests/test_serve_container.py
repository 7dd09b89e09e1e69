"""The serving image as Kubernetes runs it: user 10001, a read-only root filesystem with a
writable /tmp, the model URI and S3 settings from the environment. Against the embedded S3
server on loopback (so the container uses the host network): it fetches the archive, answers
/readyz, /livez and /detect like the TorchScript model, stops cleanly on SIGTERM, and exits 1
with one line when the URI holds no model or not an archive.

Marked ``docker``: it needs a running engine; the image is built (BuildKit) when missing.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from components.core import uri as uri_io
from components.images.names import SERVE_IMAGE, image_name
from components.ml.scripted import load_scripted_model
from components.s3server import EmbeddedS3, ensure_bucket, free_port
from tests.detector_fixture import export_on_s3, panel_tile
from tests.docker_support import engine_or_skip, images_or_skip

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

BUCKET = "serve-container"
STARTUP_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def engine() -> Any:
    return engine_or_skip()


@pytest.fixture(scope="module")
def serve_image(engine: Any) -> str:
    """The image `solarpipe images build` built (CI builds every image before the tests)."""
    images_or_skip(engine, [SERVE_IMAGE])
    return image_name(SERVE_IMAGE)


@pytest.fixture(scope="module")
def model_on_s3(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> str:
    return export_on_s3(tmp_path_factory.getbasetemp(), BUCKET, "runs/run-7/export")


def start(engine: Any, image: str, model_uri: str, port: int) -> Any:
    """The container as the Deployment runs it: image user, read-only root, /tmp writable."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    environment.update(SOLARPIPE_MODEL_URI=model_uri, SOLARPIPE_SERVE_PORT=str(port))
    return engine.containers.run(
        image,
        detach=True,
        network_mode="host",
        read_only=True,
        tmpfs={"/tmp": "rw,size=1g"},
        environment=environment,
    )


def wait_for_exit(container: Any, timeout_s: float = 300) -> tuple[int, str]:
    status = container.wait(timeout=timeout_s)["StatusCode"]
    logs = container.logs().decode()
    container.remove(force=True)
    return status, logs


def test_serving_image_runs_as_the_non_root_user(engine, serve_image: str) -> None:
    config = engine.images.get(serve_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert "SOLARPIPE_ENTRYPOINT=components.serving" in config["Env"]


def test_container_serves_the_model_from_s3_and_stops_on_sigterm(
    engine, serve_image: str, model_on_s3: str, exported: Path
) -> None:
    port = free_port()
    container = start(engine, serve_image, model_on_s3, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            container.reload()
            assert container.status == "running", container.logs().decode()[-3000:]
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, container.logs().decode()[-3000:]
            time.sleep(1)
        assert requests.get(f"{url}/livez", timeout=10).status_code == 200

        pixels, _ = panel_tile(np.random.default_rng(11), 128)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        response = requests.post(
            f"{url}/detect",
            files=[("images", ("tile.png", buffer.getvalue(), "image/png"))],
            timeout=120,
        )

        assert response.status_code == 200, response.text
        (answer,) = response.json()
        with torch.inference_mode():
            expected = load_scripted_model(str(exported / "model.pt"))([torch.from_numpy(pixels)])[
                0
            ]
        assert len(answer["boxes"]) == len(expected["boxes"]) > 0
        torch.testing.assert_close(
            torch.tensor(answer["boxes"]), expected["boxes"], atol=1e-3, rtol=0
        )
        container.stop(timeout=30)  # SIGTERM, as Kubernetes sends it
        status, logs = wait_for_exit(container)
        assert status == 0, logs[-3000:]
        assert f"from {model_on_s3} at http://0.0.0.0:{port}" in logs
    finally:
        remove_if_left(engine, container)


def remove_if_left(engine: Any, container: Any) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        engine.containers.get(container.id).remove(force=True)


def test_container_without_a_model_at_the_uri_exits_1_with_one_line(
    engine, serve_image: str, s3_server: EmbeddedS3
) -> None:
    ensure_bucket(BUCKET)
    status, logs = wait_for_exit(
        start(engine, serve_image, f"s3://{BUCKET}/runs/missing/export", free_port())
    )
    assert status == 1
    assert logs.strip() == (
        f"components.serving: error: no model archive (*.tar.gz or *.bentomodel) at "
        f"s3://{BUCKET}/runs/missing/export; pass the export stage's output folder or its archive"
    )


def test_container_given_an_object_that_is_no_archive_exits_1_with_one_line(
    engine, serve_image: str, s3_server: EmbeddedS3
) -> None:
    ensure_bucket(BUCKET)
    uri_io.write_bytes(f"s3://{BUCKET}/junk/solar_panel_detector.tar.gz", b"<html>not it</html>")
    status, logs = wait_for_exit(
        start(engine, serve_image, f"s3://{BUCKET}/junk/solar_panel_detector.tar.gz", free_port())
    )
    assert status == 1
    assert logs.strip().startswith(
        "components.serving: error: not a BentoML model archive: "
        f"s3://{BUCKET}/junk/solar_panel_detector.tar.gz"
    )
    assert len(logs.strip().splitlines()) == 1
