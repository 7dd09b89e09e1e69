"""The whole graph with ``dvc repro`` on a tiny configuration against the embedded S3 server.

Checks every output, the no-op rerun, the partial rerun after a param change, experiments,
metrics and plots, and a DVC remote on the same S3 endpoint (push, pull).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.synth.geotiff import truth_uri_for, write_scene

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY_PARAMS = {
    "prepare": {"tile_size": 128},
    "preprocess": {"max_empty_fraction": None, "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preview": {"samples": 2},
    "train": {
        "epochs": 1,
        "image_size": 128,
        "batch_size": 4,
        "num_workers": 0,
        "limit_train_batches": 2,
    },
    "detect": {"window": 256, "overlap": 32},
}


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run(command: list[str], project: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["BENTOML_DO_NOT_TRACK"] = "true"
    completed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout + completed.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_server) -> Path:
    """A copy of the project (code, dvc.yaml, tiny params) in its own git + DVC repository."""
    from components.s3server import ensure_bucket

    root = tmp_path_factory.mktemp("project")
    shutil.copytree(
        REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    bucket = "dvc-e2e"
    ensure_bucket(bucket)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {
        "bucket": bucket,
        "raster": f"s3://{bucket}/scenes/tiny.tif",
        "tiles": f"s3://{bucket}/tiles",
        "annotations": f"s3://{bucket}/annotations",
    }
    merge(params, TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_scene(params["data"]["raster"], size=512, seed=5)
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "ci@example.com"], root)
    run(["git", "config", "user.name", "ci"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run(
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "s3cache", f"s3://{bucket}/dvc-cache"],
        root,
    )
    run([sys.executable, "-m", "dvc", "repro", "prepare"], root)
    run(
        [
            sys.executable,
            "-m",
            "components.cli",
            "labelstudio",
            "annotate-from-truth",
            "--manifest",
            "data/manifest.json",
            "--truth",
            truth_uri_for(params["data"]["raster"]),
            "--annotations",
            params["data"]["annotations"],
        ],
        root,
    )
    output = run([sys.executable, "-m", "dvc", "repro"], root)
    assert {"preprocess", "preview", "train", "export", "evaluate", "detect"} <= stages_run(output)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny pipeline"], root)
    return root


def test_repro_writes_every_output_and_numeric_metrics(project: Path) -> None:
    for path in [
        "data/manifest.json",
        "data/annotations.json",
        "out/preview/index.html",
        "out/train/model.ckpt",
        "out/train/metrics.json",
        "out/export/model.pt",
        "out/evaluate/metrics.json",
        "out/evaluate/pr_curve.json",
        "out/detect/detections.geojson",
    ]:
        assert (project / path).exists(), path
    metrics = json.loads((project / "out/evaluate/metrics.json").read_text())
    assert metrics and all(isinstance(v, int | float) for v in metrics.values())
    detections = json.loads((project / "out/detect/detections.geojson").read_text())
    assert detections["type"] == "FeatureCollection"


def test_second_repro_runs_nothing(project: Path) -> None:
    output = run([sys.executable, "-m", "dvc", "repro"], project)
    assert stages_run(output) <= {"annotations-listing"}


def test_changing_epochs_reruns_only_train_and_after(project: Path) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["epochs"] = 2
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    output = run([sys.executable, "-m", "dvc", "repro"], project)
    assert stages_run(output) - {"annotations-listing"} == {"train", "export", "evaluate", "detect"}
    run(["git", "commit", "-qam", "two epochs"], project)


def test_changed_annotations_rerun_preprocess(project: Path) -> None:
    from components.core import uri as uri_io

    params = yaml.safe_load((project / "params.yaml").read_text())
    first = next(uri_io.list_objects(params["data"]["annotations"]))
    uri_io.delete(first.uri)
    output = run([sys.executable, "-m", "dvc", "repro", "preprocess"], project)
    assert "preprocess" in stages_run(output)


def test_experiment_metrics_and_plots(project: Path) -> None:
    run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=0.005"], project)
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project)
    assert "metrics.json" in shown
    run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots"], project)
    assert (project / "plots" / "index.html").exists()


def test_push_and_pull_through_the_s3_remote(project: Path) -> None:
    run([sys.executable, "-m", "dvc", "push"], project)
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "data" / "annotations.json").unlink()
    shutil.rmtree(project / "out" / "train")
    run([sys.executable, "-m", "dvc", "pull"], project)
    assert (project / "data" / "annotations.json").exists()
    assert (project / "out" / "train" / "model.ckpt").exists()
