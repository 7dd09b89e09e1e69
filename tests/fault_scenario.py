"""The scenario of the fault and kill tests: a small synthetic scene on the embedded S3 server,
its Label Studio export objects, the fixture detector, and every stage's output from a clean run
(through the real endpoint) to compare the faulty and the killed runs with.

Stages run as subprocesses (``python -m components.<stage>``), the way every orchestrator runs
them, so exit statuses, stderr lines and SIGKILL are real. :func:`fingerprint` reduces a stage's
output to what must be equal between two runs of it.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.core import uri as uri_io
from components.core.manifest import load_manifest
from components.core.stages import STAGE_NAMES
from components.s3server import EmbeddedS3, ensure_bucket

BUCKET = "faults-scene"
SCENE = f"s3://{BUCKET}/scene.tif"
CLEAN = f"s3://{BUCKET}/clean"
EXPORTS = f"s3://{BUCKET}/exports"
CHECKPOINT = f"s3://{BUCKET}/fixture/model.ckpt"
MODEL = f"s3://{BUCKET}/fixture/export/model.pt"
SCENE_PX = 512
# Fast retries in tests: the policy is the same, only the first delay is short. A fixed hash
# seed: TorchScript writes a module's constants in set order, so model.pt bytes differ between
# processes without it (measured: two exports of one checkpoint).
TEST_ENV = {
    "SOLARPIPE_S3_BACKOFF_S": "0.02",
    "SOLARPIPE_S3_MAX_BACKOFF_S": "0.5",
    "PYTHONHASHSEED": "0",
}
STAGE_TIMEOUT_S = 300
STAGES = STAGE_NAMES
SETTINGS = {
    "prepare": ["prepare.tile_size=128"],
    "preview": ["preview.samples=2"],
    "train": [
        "train.image_size=64",
        "train.batch_size=2",
        "train.num_workers=1",
        "train.prefetch=2",
        "train.epochs=1",
        "train.limit_train_batches=2",
        "train.accelerator=cpu",
        "train.pretrained=none",
    ],
    "export": ["export.parity_samples=1"],
    "evaluate": ["evaluate.device=cpu", "evaluate.overlays=1"],
    "detect": ["detect.device=cpu"],
}


def output_of(stage: str, root: str) -> str:
    """Where a stage writes below ``root`` (a local folder or an S3 prefix)."""
    names = {"preprocess": "annotations.json", "detect": "detections.geojson"}
    return uri_io.join(root, names.get(stage, stage))


def stage_args(stage: str, root: str) -> list[str]:
    """The stage's command line (after ``python -m components.<stage>``), output below ``root``."""
    annotations = output_of("preprocess", CLEAN)
    io_options = {
        "prepare": ["--raster", SCENE, "--tiles", uri_io.join(root, "tiles"),
                    "--manifest", uri_io.join(root, "manifest.json")],
        "preprocess": ["--annotations", EXPORTS, "--manifest", uri_io.join(CLEAN, "manifest.json")],
        "preview": ["--annotations", annotations],
        "train": ["--annotations", annotations],
        "export": ["--checkpoint", CHECKPOINT],
        "evaluate": ["--annotations", annotations, "--model", MODEL],
        "detect": ["--raster", SCENE, "--model", MODEL],
    }[stage]  # fmt: skip
    if stage != "prepare":
        io_options += ["--out", output_of(stage, root)]
    return io_options + [part for setting in SETTINGS.get(stage, []) for part in ("--set", setting)]


def stage_env(endpoint: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, **TEST_ENV, **extra}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def run_stage(
    stage: str, root: str, endpoint: str | None = None, *extra_args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"components.{stage}", *stage_args(stage, root), *extra_args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=STAGE_TIMEOUT_S,
        env=stage_env(endpoint, **env),
    )


def start_stage(
    stage: str,
    root: str,
    endpoint: str | None = None,
    extra_args: tuple[str, ...] = (),
    pause_at: tuple[str, ...] = (),
    **env: str,
) -> subprocess.Popen[str]:
    """The stage in the background; ``pause_at``: ``(marker, target, pattern, nth)`` of
    ``tests/pause_hook.py``."""
    hook = ("-m", "tests.pause_hook", *pause_at) if pause_at else ()
    command = [
        sys.executable, *hook, "-m", f"components.{stage}", *stage_args(stage, root), *extra_args
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stage_env(endpoint, **env),
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Until ``condition()`` holds; fails at once if the process ends first (no fixed sleeps:
    polls a file or an event that the process itself brings about)."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the stage ended before {what}: {stderr[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_digests(root: str) -> dict[str, str]:
    """Relative name → SHA-256 of every file of an output folder (local or S3)."""
    prefix = root.rstrip("/") + "/"
    return {
        info.uri.removeprefix(prefix): _sha256(uri_io.read_bytes(info.uri))
        for info in uri_io.list_objects(root)
        if uri_io.basename(info.uri) != uri_io.COMPLETE_MARKER
    }


def _checkpoint_weights(uri: str) -> dict[str, Any]:
    import torch

    loaded = torch.load(io.BytesIO(uri_io.read_bytes(uri)), map_location="cpu", weights_only=False)
    return {name: tensor.numpy().tobytes() for name, tensor in loaded["state_dict"].items()}


def fingerprint(stage: str, root: str) -> Any:
    """What must be equal between two runs of ``stage`` writing below ``root``."""
    out = output_of(stage, root)
    if stage == "prepare":
        manifest = load_manifest(uri_io.join(root, "manifest.json"))
        stored = folder_digests(uri_io.join(root, "tiles"))
        return [(tile.key, tile.sha256, stored.get(tile.key)) for tile in manifest.tiles]
    if stage in ("preprocess", "detect"):
        return _sha256(uri_io.read_bytes(out))
    if stage == "train":
        # Timings differ run to run; the weights and the figures that come from them do not.
        metrics = uri_io.read_json(uri_io.join(out, "metrics.json"))
        timing = {"train_seconds", "train_images_per_second"}
        figures = {key: value for key, value in metrics.items() if key not in timing}
        return figures, _checkpoint_weights(uri_io.join(out, "model.ckpt"))
    if stage == "export":
        # The BentoML archive carries its creation time and a random version in its tag; the
        # source revision is the checkout's at run time (a commit between two runs changes it).
        summary = uri_io.read_json(uri_io.join(out, "export.json"))
        kept = {k: v for k, v in summary.items() if not k.startswith("bento")}
        kept.pop("git_revision", None)
        return kept, _sha256(uri_io.read_bytes(uri_io.join(out, "model.pt")))
    return folder_digests(out)


class Scenario:
    """The scene on S3; each stage's clean output (under ``CLEAN``) is made on first use."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._clean: dict[str, Any] = {}

    def clean(self, stage: str) -> Any:
        """The fingerprint of the stage's clean run (made now when it is the first ask)."""
        if stage not in self._clean:
            for needed in {"preprocess": ["prepare"]}.get(stage, []) + (
                ["prepare", "preprocess"] if stage in ("preview", "train", "evaluate") else []
            ):
                self.clean(needed)
            done = run_stage(stage, CLEAN, self.endpoint)
            assert done.returncode == 0, f"clean {stage} failed: {done.stderr[-3000:]}"
            self._clean[stage] = fingerprint(stage, CLEAN)
            if stage == "prepare":
                _annotate_tiles()
        return self._clean[stage]


def _annotate_tiles() -> None:
    """Play the annotator on the clean tiles (the objects Label Studio would export)."""
    from components.labelstudio.annotate import annotate_from_truth

    annotate_from_truth(
        uri_io.join(CLEAN, "manifest.json"),
        uri_io.with_suffix(SCENE, ".geojson"),
        EXPORTS,
        "annotation",
        "solar_panel",
        min_size=2.0,
        workers=4,
    )


def put_scene_and_detector(scratch: Path, size: int = SCENE_PX) -> None:
    """The scene (raster and truth) and the fixture detector (checkpoint, model.pt) on S3."""
    from components.synth.geotiff import write_scene
    from tests.detector_fixture import cached_checkpoint, cached_export

    ensure_bucket(BUCKET)
    write_scene(SCENE, size, seed=1)  # at 512 px, 6 of its 16 tiles hold panels
    uri_io.upload_file(cached_checkpoint(scratch), CHECKPOINT)
    uri_io.upload_file(cached_export(scratch) / "model.pt", MODEL)


@pytest.fixture(scope="session")
def scenario(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Scene and fixture detector on the embedded server; clean outputs made on demand."""
    put_scene_and_detector(tmp_path_factory.getbasetemp())
    return Scenario(s3_server.endpoint)
