"""The model served as users run it: `python -m components.serving --model s3://…/export` (what
`solarpipe serve` and the serving image run) fetches the archive from the embedded S3 server,
imports it and runs the BentoML service on a loopback port; tiles are posted over HTTP and the
answers compared with the TorchScript model's. Then what it must refuse without falling over
(an upload too large, a non-image, a decompression bomb), and the faults it reports in one line
before serving anything (no archive, not an archive, no model, port taken).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.ml.scripted import load_scripted_model
from components.s3server import EmbeddedS3, ensure_bucket, free_port
from tests.detector_fixture import export_on_s3, panel_tile

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 300
BUCKET = "serve-tests"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def model_on_s3(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> str:
    return export_on_s3(tmp_path_factory.getbasetemp(), BUCKET, "runs/run-1/export")


def wait_until_ready(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"the server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server is not ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> int:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        return server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        raise


@pytest.fixture(scope="module")
def served(
    model_on_s3: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`python -m components.serving --model s3://…/export` on a free port: (url, process,
    its TMPDIR)."""
    scratch = tmp_path_factory.mktemp("serve-tmp")
    environment = {k: v for k, v in os.environ.items() if k != "BENTOML_HOME"}
    environment["TMPDIR"] = str(scratch)
    port = free_port()
    log_path = scratch.parent / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "components.serving",
                "--model",
                model_on_s3,
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server, log_path)
        yield url, server, scratch
    finally:
        if server.poll() is None:
            stop(server)


@pytest.fixture(scope="module")
def service_url(served: tuple[str, subprocess.Popen, Path]) -> str:
    return served[0]


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
        f"{url}/detect", files=[("images", (name, image_bytes, mime))], timeout=300
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


def test_32_concurrent_clients_are_all_answered_with_their_own_boxes(
    service_url: str, model
) -> None:
    """Requests batched together must come back to the right client, none refused."""
    images = []
    for index in range(32):
        pixels, _ = panel_tile(np.random.default_rng(100 + index), 128)
        width = 64 + 8 * index  # a different size per client: a mix-up would show
        images.append(encoded(np.array(Image.fromarray(pixels).resize((width, 128))), "PNG"))

    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        responses = list(
            pool.map(lambda png: post_image(service_url, png, "t.png", "image/png"), images)
        )

    assert [response.status_code for response in responses] == [200] * len(images)
    for png, response in zip(images, responses, strict=True):
        (answer,) = response.json()
        assert_same_detections(answer, expected_detections(model, png))


def test_upload_that_is_not_an_image_is_refused_with_400(service_url: str) -> None:
    response = post_image(service_url, b"not an image at all", "notes.txt", "text/plain")
    assert response.status_code == 400
    assert "not a readable PNG or JPEG image" in response.text


def test_truncated_png_is_refused_with_400(service_url: str) -> None:
    pixels, _ = panel_tile(np.random.default_rng(5), 128)
    png = encoded(pixels, "PNG")
    response = post_image(service_url, png[: len(png) // 2], "cut.png", "image/png")
    assert response.status_code == 400, response.text


def test_50_mb_upload_is_refused_with_413_before_it_is_parsed(service_url: str) -> None:
    response = post_image(service_url, os.urandom(50_000_000), "big.png", "image/png")
    assert response.status_code == 413
    assert "over the limit of 20000000 bytes" in response.text


def test_chunked_upload_growing_over_the_limit_is_refused_with_413(service_url: str) -> None:
    """No Content-Length to judge by: the body is counted as it arrives."""
    boundary = "solarpipe"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(30):
            yield os.urandom(1_000_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = requests.post(
        f"{service_url}/detect",
        data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=300,
    )
    assert response.status_code == 413


def png_of_size(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width × height`` px written row by row: ~100 kB for 10,000² px."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + grey pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_with_413_from_its_header(
    served: tuple[str, subprocess.Popen, Path],
) -> None:
    url, server, _ = served
    bomb = png_of_size(10_000, 10_000)
    assert len(bomb) < 1_000_000  # 300 MB of RGB once decoded

    response = post_image(url, bomb, "bomb.png", "image/png")

    assert response.status_code == 413
    assert "10000 x 10000 px is over the limit" in response.text
    assert server.poll() is None
    assert requests.get(f"{url}/livez", timeout=10).status_code == 200


def test_server_still_answers_after_the_refusals(service_url: str, model) -> None:
    pixels, _ = panel_tile(np.random.default_rng(6), 128)
    png = encoded(pixels, "PNG")
    assert requests.get(f"{service_url}/readyz", timeout=10).status_code == 200
    response = post_image(service_url, png, "tile.png", "image/png")
    assert response.status_code == 200
    assert_same_detections(response.json()[0], expected_detections(model, png))


def test_sigterm_stops_the_server_and_removes_its_model_store(
    served: tuple[str, subprocess.Popen, Path],
) -> None:
    """Last in this module: it stops the module's server (as Kubernetes and `docker stop` do)."""
    _, server, scratch = served
    assert list(scratch.glob("solarpipe-bentoml-*")), "the temporary model store exists"

    assert stop(server) == 0

    assert not list(scratch.iterdir()), "the model store and downloads are gone"


# -- faults reported before anything is served ------------------------------------------------


def serve(*args: str) -> int:
    return solarpipe(["serve", *args, "--port", str(free_port())])


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_model_uri_without_an_archive_is_one_line(s3_server: EmbeddedS3, capsys) -> None:
    ensure_bucket(BUCKET)
    assert serve("--model", f"s3://{BUCKET}/runs/none/export") == 1
    assert error_line(capsys.readouterr().err) == (
        f"solarpipe serve: error: no model archive (*.tar.gz or *.bentomodel) at "
        f"s3://{BUCKET}/runs/none/export; pass the export stage's output folder or its archive"
    )


def test_object_that_is_not_an_archive_is_one_line(s3_server: EmbeddedS3, capsys) -> None:
    ensure_bucket(BUCKET)
    uri_io.write_bytes(f"s3://{BUCKET}/junk/model.tar.gz", b"this is no tar file")
    assert serve("--model", f"s3://{BUCKET}/junk/model.tar.gz") == 1
    assert error_line(capsys.readouterr().err).startswith(
        f"solarpipe serve: error: not a BentoML model archive: s3://{BUCKET}/junk/model.tar.gz"
    )


def test_archive_without_a_model_is_one_line(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model.yaml")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"a: 1"))
    assert serve("--model", str(archive)) == 1
    assert error_line(capsys.readouterr().err) == (
        f"solarpipe serve: error: not a solarpipe model archive: {archive} has no model.pt; "
        "pass the archive written by the export stage"
    )


def test_missing_local_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert serve("--model", str(tmp_path / "out" / "export")) == 1
    assert "no model archive (*.tar.gz or *.bentomodel) at" in error_line(capsys.readouterr().err)


def test_no_model_at_all_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("SOLARPIPE_MODEL_URI", raising=False)
    assert solarpipe(["serve"]) == 2
    assert "no model: pass --model" in error_line(capsys.readouterr().err)


def test_taken_port_is_one_line(exported: Path, capsys) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert solarpipe(["serve", "--model", str(exported), "--port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is taken" in error_line(capsys.readouterr().err)
