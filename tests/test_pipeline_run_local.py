"""``pipeline.py run-local``: the compiled graph in the real images (kfp's DockerRunner, host
network) against the embedded S3, as a user runs it: synth a scene, tile it, play the annotator,
run the whole graph; then the outputs and the run's params document are checked on S3.

The container tests need a Docker engine and the images (`solarpipe images build`); they skip
without them unless SOLARPIPE_REQUIRE_DOCKER is set (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.core.annotations import load_annotations
from components.core.manifest import Manifest, load_manifest
from components.core.params import TrainParams, load_params, stage_params, validate_params
from components.core.stages import STAGE_NAMES, STAGES
from components.core.uri import exists, list_objects, read_text
from components.images.names import IMAGES
from components.s3server import free_port
from tests.docker_support import engine_or_skip, images_or_skip

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A run small enough for 2 CPU cores, with nested overrides whose parity with dvc is checked.
TINY = {
    "kubeflow.min_map50": 0.0,  # a tiny model scores little: let detect run
    "kubeflow.shards": 2,  # prepare and detect fan out (ParallelFor) and merge (Collected)
    "prepare.tile_size": 128,
    "preprocess.split.train": 0.6,
    "preprocess.split.val": 0.2,
    "preprocess.split.test": 0.2,
    "preprocess.max_empty_fraction": "null",
    "preview.samples": 1,
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.num_workers": 0,
    "train.limit_train_batches": 2,
    "train.image_size": 128,
    "export.parity_samples": 1,
    "evaluate.overlays": 1,
    "detect.overlap": 32,
}


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or dict(os.environ),
        timeout=900,
    )


def run_local(*options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, str(REPO / "pipeline.py"), "run-local", *options, env=env)


def outputs_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The ``  name: uri`` lines run-local prints when it finishes."""
    return dict(re.findall(r"^  (\w+): (\S+)$", done.stdout, flags=re.MULTILINE))


def settings(bucket: str, extra: dict[str, object] | None = None) -> list[str]:
    data = {
        "data.bucket": bucket,
        "data.raster": f"s3://{bucket}/scenes/town.tif",
        "data.tiles": f"s3://{bucket}/tiles",
        "data.annotations": f"s3://{bucket}/annotations",
        **(extra or {}),
    }
    return [option for key, value in data.items() for option in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def images() -> None:
    engine = engine_or_skip()
    try:
        images_or_skip(engine, IMAGES)
    finally:
        engine.close()


def tiled_and_labelled(bucket: str) -> Manifest:
    """A synthetic scene, tiled by prepare, labelled by the stand-in annotator."""
    synth = run(str(BIN / "solarpipe"), "synth", "--out", f"s3://{bucket}/scenes/town.tif",
                "--size", "512", "--seed", "3")  # fmt: skip
    assert synth.returncode == 0, synth.stderr
    manifest_uri = f"s3://{bucket}/tiled/manifest.json"
    prepare = run(sys.executable, "-m", "components.prepare",
                  "--raster", f"s3://{bucket}/scenes/town.tif", "--tiles", f"s3://{bucket}/tiles",
                  "--manifest", manifest_uri, "--set", "prepare.tile_size=128")  # fmt: skip
    assert prepare.returncode == 0, prepare.stderr
    annotate = run(
        str(BIN / "solarpipe"), "labelstudio", "annotate-from-truth",
        "--manifest", manifest_uri,
        "--truth", f"s3://{bucket}/scenes/town.geojson",
        "--annotations", f"s3://{bucket}/annotations",
    )  # fmt: skip
    assert annotate.returncode == 0, annotate.stderr
    return load_manifest(manifest_uri)


def finished_run_folder(done: subprocess.CompletedProcess[str], bucket: str) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    folder = re.search(r"^run (\S+) finished$", done.stdout, flags=re.MULTILINE)[1]
    assert re.fullmatch(rf"s3://{bucket}/runs/local-[\w-]+", folder)
    return folder


def artifacts_of(done: subprocess.CompletedProcess[str]) -> dict[str, Path]:
    """``task/artifact`` → where run-local's pipeline root keeps it (a file, or nothing when the
    artifact is all metadata, like Metrics)."""
    root = Path(re.search(r"^KFP artifacts .* under (\S+)$", done.stdout, flags=re.MULTILINE)[1])
    [run] = [folder for folder in root.iterdir() if folder.name.startswith("solarpipe-")]
    found = {f"{p.parent.name}/{p.name}": p for p in run.glob("*/*") if p.is_file()}
    for recorded in run.glob("*/executor_output.json"):
        for name in json.loads(recorded.read_text()).get("artifacts", {}):
            found[f"{recorded.parent.name}/{name}"] = recorded.parent / name
    return {name: path for name, path in found.items() if not name.endswith("executor_output.json")}


def artifact_metadata(artifact: Path) -> dict[str, object]:
    """The metadata KFP's executor recorded for an artifact (what the KFP UI shows)."""
    recorded = json.loads((artifact.parent / "executor_output.json").read_text())
    [entry] = recorded["artifacts"][artifact.name]["artifacts"]
    return entry["metadata"]


def inline_images(page: str) -> list[str]:
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    return sources


@pytest.mark.docker
@pytest.mark.slow
def test_the_whole_graph_runs_on_the_embedded_default_in_its_containers(images) -> None:
    """A new user's run-local: no S3 settings, so it starts the embedded S3, synthesizes the
    scene, tiles and labels it as the quickstart does, runs every task in its container, and
    keeps the run folder on disk when the embedded S3 stops."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    extra = [option for key, value in TINY.items() for option in ("--set", f"{key}={value}")]
    done = run_local("--size", "512", "--seed", "3", "--port", str(free_port()), *extra,
                     env=environment)  # fmt: skip
    run_folder = finished_run_folder(done, "solarpipe")
    outputs = outputs_of(done)
    assert list(outputs) == list(STAGE_NAMES)
    assert all(uri.startswith(f"{run_folder}/") for uri in outputs.values())
    assert "run-local: embedded S3 at http://127.0.0.1:" in done.stdout
    kept = Path(re.search(r"the run folder is kept in (\S+)$", done.stdout, re.MULTILINE)[1])

    def local(uri: str) -> str:
        return str(kept / uri.removeprefix(f"{run_folder}/"))

    manifest = load_manifest(local(outputs["prepare"]))
    assert len(manifest.tiles) == 16 and manifest.tile_size == 128
    for stage, suffix in (("prepare", "json"), ("detect", "npz")):
        parts = sorted(path.name for path in (kept / stage / "parts").iterdir())
        assert parts == [f"shard-0000-of-0002.{suffix}", f"shard-0001-of-0002.{suffix}"]
    annotations = load_annotations(local(outputs["preprocess"]))
    assert {image.image for image in annotations.images} <= {t.uri for t in manifest.tiles}
    assert sum(len(image.boxes) for image in annotations.images) > 0
    assert "<img" in read_text(local(f"{outputs['preview']}/index.html"))
    assert exists(local(outputs["train"])) and outputs["train"].endswith("/model.ckpt")
    assert exists(local(f"{outputs['export']}/model.pt"))
    metrics = json.loads(read_text(local(f"{outputs['evaluate']}/metrics.json")))
    assert metrics and all(isinstance(value, int | float) for value in metrics.values())
    assert json.loads(read_text(local(outputs["detect"])))["type"] == "FeatureCollection"

    # Parity with dvc repro: each stage got from the run's document what params.yaml with the
    # same settings gives it (the stages checked the document's digest themselves).
    document = yaml.safe_load(read_text(local(f"{run_folder}/params.yaml")))
    expected = load_params(REPO / "params.yaml", extra[1::2])
    for stage in STAGES:
        from_run = stage_params(stage.name, validate_params(document))
        assert from_run == stage_params(stage.name, expected), stage.name
    assert document["preprocess"]["split"] == {"train": 0.6, "val": 0.2, "test": 0.2}

    # What the KFP UI shows for the run: the stages' reports and the Metrics and Model artifacts.
    artifacts = artifacts_of(done)
    inline_images(artifacts["preview/gallery"].read_text())
    summary = artifacts["preprocess/summary"].read_text()
    assert f"{len(annotations.images)} tiles" in summary and "| train |" in summary
    curve = artifacts["train/curve"].read_text()
    assert re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \|", curve, flags=re.MULTILINE)
    assert len(inline_images(artifacts["evaluate/overlays"].read_text())) == 2
    logged = artifact_metadata(artifacts["quality-gate/metrics"])
    assert logged == pytest.approx(
        {"mAP@0.5": metrics["map_50"], "mAP@0.5:0.95": metrics["map"],
         "precision": metrics["precision"], "recall": metrics["recall"], "F1": metrics["f1"]}
    )  # fmt: skip
    assert "detect runs" in artifacts["quality-gate/decision"].read_text()
    model = artifact_metadata(artifacts["exported-model/model"])
    assert model["arch"] == TrainParams().arch
    assert model["map_50"] == pytest.approx(metrics["map_50"])
    assert model["model_pt"] == f"{outputs['export']}/model.pt"
    assert exists(local(str(model["model_pt"]))) and exists(local(str(model["bentoml_archive"])))
    sizes = {name: path.stat().st_size for name, path in artifacts.items() if path.is_file()}
    print(f"KFP artifacts of the run: {sizes}")


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_below_the_quality_bar_ends_without_detections_and_says_why(images, bucket) -> None:
    tiled_and_labelled(bucket)
    done = run_local(*settings(bucket, {**TINY, "kubeflow.min_map50": 1.0}))
    run_folder = finished_run_folder(done, bucket)
    written = [info.uri for info in list_objects(f"{run_folder}/")]
    assert any(uri.endswith("/evaluate/metrics.json") for uri in written)
    assert not [uri for uri in written if "/detect/" in uri]
    decision = artifacts_of(done)["quality-gate/decision"].read_text()
    assert "< 1.000 (kubeflow.min_map50)" in decision and "detect and deploy" in decision


@pytest.mark.docker
def test_a_failing_stage_stops_the_run_with_exit_1_naming_the_task(images, bucket) -> None:
    synth = run(
        str(BIN / "solarpipe"), "synth", "--out", f"s3://{bucket}/scenes/town.tif", "--size", "256"
    )
    assert synth.returncode == 0, synth.stderr
    done = run_local(*settings(bucket, {"data.annotations": f"s3://{bucket}/no-annotations-here"}))
    assert done.returncode == 1
    assert "no export objects under" in done.stdout  # the stage's own error, in its log
    last_line = done.stderr.strip().splitlines()[-1]
    assert "preprocess" in last_line and "\x1b[" not in last_line
    written = [info.uri for info in list_objects(f"s3://{bucket}/runs/")]
    assert any("/prepare/manifest.json" in uri for uri in written)
    assert not [uri for uri in written if "/preprocess/" in uri or "/train/" in uri]


@pytest.mark.docker
def test_missing_image_says_how_to_build_it(images, bucket) -> None:
    done = run_local("--set", "kubeflow.tag=not-built-anywhere")
    assert done.returncode == 1
    assert "solarpipe-prepare:not-built-anywhere" in done.stderr
    assert "solarpipe images build --stage prepare" in done.stderr
