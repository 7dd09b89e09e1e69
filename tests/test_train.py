"""The train stage end to end on a few 64 px tiles in the embedded S3 server: outputs, the
checkpoint contract, ``--resume``, and the bad inputs it names in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.core.params import TrainParams
from components.train.hardware import resolve_hardware
from tests.tile_fixtures import write_tile_set

TINY = [
    "train.image_size=64",
    "train.batch_size=2",
    "train.num_workers=1",
    "train.prefetch=2",
    "train.fetch_attempts=2",
    "train.epochs=1",
]


def run_train(
    *args: str, settings: list[str] = TINY, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "components.train", *args]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _download_checkpoint(uri: str, tmp_path: Path) -> dict:
    local = tmp_path / uri_io.basename(uri)
    uri_io.download_file(uri, local)
    return torch.load(local, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained(s3_server, tmp_path_factory) -> dict[str, str]:
    """One epoch of training, S3 in and S3 out."""
    from components.s3server import ensure_bucket

    bucket = "train-module"
    ensure_bucket(bucket)
    write_tile_set(
        f"s3://{bucket}/data", count=6, size=64, splits=("train", "train", "val"), pixel_size_m=0.1
    )
    out = f"s3://{bucket}/run"
    result = run_train("--annotations", f"s3://{bucket}/data/annotations.json", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "bucket": bucket,
        "out": out,
        "annotations": f"s3://{bucket}/data/annotations.json",
        "stderr": result.stderr,
    }


def test_training_logs_each_event_once_and_no_advertisement(trained) -> None:
    stderr = trained["stderr"]
    # "12:00:00 INFO name: message" from the project's handler, "INFO: message" from Lightning's.
    messages = [
        re.sub(r"^(\d\d:\d\d:\d\d )?[A-Z]+ ?[\w.]*: ", "", line) for line in stderr.splitlines()
    ]
    repeated = [message for message, count in Counter(messages).items() if count > 1]
    assert repeated == [], stderr
    assert sum("`Trainer.fit` stopped" in line for line in stderr.splitlines()) == 1, stderr
    assert "Tip" not in stderr
    assert "litlogger" not in stderr
    assert "LeafSpec" not in stderr


def test_train_writes_checkpoint_metrics_params_and_logs(trained, tmp_path: Path) -> None:
    out = trained["out"]
    names = {uri_io.basename(info.uri) for info in uri_io.list_objects(out)}
    assert {"model.ckpt", "last.ckpt", "metrics.json", "params.yaml", "metrics.csv"} <= names
    assert any(name.startswith("events.out.tfevents") for name in names)

    metrics = uri_io.read_json(uri_io.join(out, "metrics.json"))
    assert metrics["global_steps"] >= 2 and metrics["epochs"] >= 1
    assert 0.0 <= metrics["val_map_50"] <= 1.0 and "train_loss" in metrics
    used = yaml.safe_load(uri_io.read_text(uri_io.join(out, "params.yaml")))
    assert used["train"]["image_size"] == 64

    checkpoint = _download_checkpoint(uri_io.join(out, "model.ckpt"), tmp_path)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["train"] == used["train"], "the whole resolved train params, as the run used"
    assert hparams["train"]["arch"] == TrainParams().arch, "the default detector"
    assert hparams["classes"] == ["solar_panel"]
    assert checkpoint["state_dict"] and all(
        k.startswith("model.") for k in checkpoint["state_dict"]
    )
    assert hparams["pixel_size_m"] == pytest.approx(0.1) == hparams["data_pixel_size_m"]
    settings = dict(setting.removeprefix("train.").split("=") for setting in TINY)
    assert hparams["train"] == TrainParams(**settings).model_dump(mode="json")
    point = checkpoint["val_operating_point"]
    assert 0.0 <= point["score_threshold"] <= 1.0 and point["iou_threshold"] == 0.5
    assert metrics["val_score_threshold"] == pytest.approx(point["score_threshold"])


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path: Path) -> None:
    out = trained["out"]
    first = _download_checkpoint(uri_io.join(out, "last.ckpt"), tmp_path / "first")

    result = run_train(
        "--annotations", trained["annotations"], "--out", out, "--resume",
        settings=[*TINY, "train.epochs=2"],
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    metrics = uri_io.read_json(uri_io.join(out, "metrics.json"))
    assert metrics["resumed_from_step"] == first["global_step"] > 0
    assert metrics["global_steps"] == 2 * first["global_step"]
    resumed = _download_checkpoint(uri_io.join(out, "last.ckpt"), tmp_path)
    assert resumed["epoch"] == first["epoch"] + 1


def test_missing_tile_fails_in_one_line_naming_it(trained, tmp_path: Path) -> None:
    annotations = uri_io.read_json(trained["annotations"])
    annotations["images"][0]["image"] = f"s3://{trained['bucket']}/data/tiles/gone.png"
    broken = tmp_path / "annotations.json"
    broken.write_text(json.dumps(annotations))

    result = run_train("--annotations", str(broken), "--out", str(tmp_path / "out"))

    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("components.train: error: tile image missing: ")
    assert "tiles/gone.png" in last_line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_not_an_annotations_file_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "annotations.json"
    bad.write_text(json.dumps({"tasks": [1, 2, 3]}))

    result = run_train("--annotations", str(bad), "--out", str(tmp_path / "out"))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"components.train: error: not an annotations file: {bad} (classes: Field required)"
    ]
    assert not (tmp_path / "out").exists()


def test_gpu_requested_without_cuda_is_an_error_or_falls_back_by_param(without_cuda) -> None:
    with pytest.raises(SolarpipeError, match="no CUDA device is available"):
        resolve_hardware(TrainParams(accelerator="gpu"))
    plan = resolve_hardware(TrainParams(accelerator="gpu", fallback_to_cpu=True))
    assert (plan.accelerator, plan.precision) == ("cpu", "32-true")


def test_cpu_threads_default_to_the_usable_cpus() -> None:
    """The cgroup cap itself is checked in test_shards (components/core/cpus.py)."""
    from components.core.cpus import usable_cpus

    assert resolve_hardware(TrainParams(accelerator="cpu")).cpu_threads == usable_cpus()
    assert resolve_hardware(TrainParams(accelerator="cpu", cpu_threads=3)).cpu_threads == 3


@pytest.mark.slow  # a subprocess stage run
def test_gpu_requested_without_cuda_exits_1(tmp_path: Path, without_cuda) -> None:
    write_tile_set(str(tmp_path / "data"), count=3, size=64, splits=("train", "train", "val"))
    result = run_train(
        "--annotations", str(tmp_path / "data" / "annotations.json"),
        "--out", str(tmp_path / "out"), settings=[*TINY, "train.accelerator=gpu"],
        env=without_cuda,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no CUDA device is available" in result.stderr.strip().splitlines()[-1]


def test_batch_norm_recalibration_averages_the_recent_batches() -> None:
    from components.ml.dataset import TileBatch
    from components.ml.detector import build_detector
    from components.ml.module import recalibrate_batch_norm

    torch.manual_seed(0)
    model = build_detector("ssdlite320_mobilenet_v3_large", 2, 64).eval()
    first_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen_means: list[torch.Tensor] = []
    first_norm.register_forward_hook(lambda m, i, o: seen_means.append(i[0].mean((0, 2, 3))))
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    batches = [
        TileBatch([torch.rand(3, 64, 64) * scale for _ in range(2)], [target, target], 0)
        for scale in (0.5, 1.0)
    ]

    recalibrate_batch_norm(model, batches)

    assert len(seen_means) == 2
    expected = (seen_means[0] + seen_means[1]) / 2
    assert torch.allclose(first_norm.running_mean, expected, atol=1e-5)
    assert first_norm.momentum == 0.03 and not model.training
