"""The BentoML service as users run it: `bentoml models import` the exported archive, `bentoml
serve` on a loopback port, POST images over HTTP; answers equal the TorchScript model's."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from components.ml.scripted import load_scripted_model
from components.s3server import free_port
from tests.detector_fixture import cached_export, panel_tile

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))
SERVICE = "components.serving.service:SolarPanelDetector"
STARTUP_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_export(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def service_url(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bentoml serve components.serving.service:SolarPanelDetector` with the imported model."""
    home = tmp_path_factory.mktemp("bentoml-home")
    environment = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    imported = subprocess.run(
        [BENTOML, "models", "import", str(exported / "solar_panel_detector.tar.gz")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    port = free_port()
    log_path = home / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [BENTOML, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**environment, "SOLARPIPE_BENTO_MODEL": "solar_panel_detector:latest"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"bentoml serve exited:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bentoml serve not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def encoded(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(exported: Path) -> torch.jit.ScriptModule:
    return load_scripted_model(str(exported / "model.pt"))


def expected_detections(model: torch.jit.ScriptModule, image_bytes: bytes) -> dict:
    """What the exported TorchScript model finds in the decoded image."""
    pixels = np.array(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    with torch.inference_mode():
        return model([torch.from_numpy(pixels)])[0]


def post_image(url: str, image_bytes: bytes, name: str, mime: str) -> requests.Response:
    return requests.post(
        f"{url}/detect", files=[("images", (name, image_bytes, mime))], timeout=120
    )


def assert_same_detections(answer: dict, expected: dict[str, torch.Tensor]) -> None:
    assert len(answer["boxes"]) == len(expected["boxes"]) > 0
    torch.testing.assert_close(torch.tensor(answer["boxes"]), expected["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(
        torch.tensor(answer["scores"]), expected["scores"], atol=1e-5, rtol=0
    )
    assert answer["labels"] == ["solar_panel"] * len(expected["boxes"])


def test_png_upload_gets_the_torchscript_models_boxes(service_url: str, model) -> None:
    pixels, _ = panel_tile(np.random.default_rng(3), 128)
    png = encoded(pixels, "PNG")

    response = post_image(service_url, png, "tile.png", "image/png")

    assert response.status_code == 200, response.text
    (answer,) = response.json()
    assert_same_detections(answer, expected_detections(model, png))


def test_jpeg_upload_of_another_size_is_answered_in_its_pixels(service_url: str, model) -> None:
    pixels, _ = panel_tile(np.random.default_rng(4), 128)
    wide = np.ascontiguousarray(np.repeat(pixels, 2, axis=1))  # 128 x 256
    jpeg = encoded(wide, "JPEG")

    response = post_image(service_url, jpeg, "tile.jpg", "image/jpeg")

    assert response.status_code == 200, response.text
    (answer,) = response.json()
    assert_same_detections(answer, expected_detections(model, jpeg))
    assert max(box[2] for box in answer["boxes"]) > 128  # boxes span the 256-px width


def test_concurrent_clients_each_get_their_own_answer(service_url: str, model) -> None:
    """Requests batched together must come back to the right client, none refused."""
    images = []
    for width in (64, 96, 128, 160, 192, 224):
        pixels, _ = panel_tile(np.random.default_rng(width), 128)
        resized = np.array(Image.fromarray(pixels).resize((width, 128)))
        images.append(encoded(resized, "PNG"))

    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        responses = list(
            pool.map(lambda png: post_image(service_url, png, "t.png", "image/png"), images)
        )

    for png, response in zip(images, responses, strict=True):
        assert response.status_code == 200, response.text
        (answer,) = response.json()
        assert_same_detections(answer, expected_detections(model, png))


def test_upload_that_is_not_an_image_is_refused_with_400(service_url: str) -> None:
    response = post_image(service_url, b"not an image at all", "notes.txt", "text/plain")
    assert response.status_code == 400
    assert "not a readable PNG or JPEG image" in response.text
