"""The stages in their images through `solarpipe run-stage`, against the embedded S3 server on
loopback (so the containers use the host network): prepare → (annotator) → preprocess →
preview on a synthetic scene, train for one tiny epoch, export; and run-stage's bad inputs.

Tests marked ``docker`` need a running engine and the built images; they skip without them,
or fail when SOLARPIPE_REQUIRE_DOCKER is set (CI builds the images before running them).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.manifest import load_manifest
from components.core.stages import STAGE_NAMES
from components.images.run_stage import is_loopback_endpoint, local_mounts
from components.s3server import EmbeddedS3, ensure_bucket
from tests.docker_support import engine_or_skip, images_or_skip

SCENE_PX = 512
TILE_PX = 128
TINY_TRAINING = [
    "train.image_size=64",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.epochs=1",
    "train.accelerator=cpu",
]


def run_stage(stage: str, *stage_args: str, settings: tuple[str, ...] = ()) -> int:
    overrides = [part for setting in settings for part in ("--set", setting)]
    return solarpipe(["run-stage", stage, "--", *stage_args, *overrides])


@pytest.fixture(scope="module")
def engine() -> Any:
    return engine_or_skip()


@pytest.fixture(scope="module")
def light_images(engine: Any) -> None:
    images_or_skip(engine, ("prepare", "preprocess", "preview"))


@pytest.fixture(scope="module")
def scene_bucket(s3_server: EmbeddedS3, light_images: None) -> str:
    """A bucket holding a synthetic scene, cut into tiles by the prepare container."""
    from components.synth.geotiff import write_scene

    bucket = "containers-scene"
    ensure_bucket(bucket)
    write_scene(f"s3://{bucket}/scene.tif", SCENE_PX, seed=3)
    status = run_stage(
        "prepare",
        "--raster", f"s3://{bucket}/scene.tif",
        "--tiles", f"s3://{bucket}/tiles",
        "--manifest", f"s3://{bucket}/manifest.json",
        settings=(f"prepare.tile_size={TILE_PX}",),
    )  # fmt: skip
    assert status == 0
    return bucket


@pytest.fixture(scope="module")
def annotated_bucket(scene_bucket: str) -> str:
    """The scene's tiles annotated (export objects as Label Studio writes them), then turned
    into annotations.json by the preprocess container."""
    from components.labelstudio.annotate import annotate_from_truth

    bucket = scene_bucket
    annotate_from_truth(
        f"s3://{bucket}/manifest.json",
        f"s3://{bucket}/scene.geojson",
        f"s3://{bucket}/exports",
        "annotation",
        "solar_panel",
        min_size=2.0,
        workers=4,
    )
    status = run_stage(
        "preprocess",
        "--annotations", f"s3://{bucket}/exports",
        "--manifest", f"s3://{bucket}/manifest.json",
        "--out", f"s3://{bucket}/annotations.json",
    )  # fmt: skip
    assert status == 0
    return bucket


@pytest.mark.docker
def test_prepare_container_writes_every_tile_and_its_manifest(scene_bucket: str) -> None:
    manifest = load_manifest(f"s3://{scene_bucket}/manifest.json")
    assert (manifest.raster_width, manifest.raster_height) == (SCENE_PX, SCENE_PX)
    assert len(manifest.tiles) == (SCENE_PX // TILE_PX) ** 2
    stored = {info.uri for info in uri_io.list_objects(f"s3://{scene_bucket}/tiles")}
    assert stored == {tile.uri for tile in manifest.tiles}
    for tile in manifest.tiles:
        assert hashlib.sha256(uri_io.read_bytes(tile.uri)).hexdigest() == tile.sha256


@pytest.mark.docker
def test_preprocess_container_turns_exports_into_split_annotations(annotated_bucket: str) -> None:
    annotations = load_annotations(f"s3://{annotated_bucket}/annotations.json")
    manifest = load_manifest(f"s3://{annotated_bucket}/manifest.json")
    assert {image.image for image in annotations.images} <= {t.uri for t in manifest.tiles}
    assert annotations.images
    assert sum(len(image.boxes) for image in annotations.images) > 0
    assert {image.split for image in annotations.images} <= {"train", "val", "test"}


@pytest.mark.docker
def test_preview_container_draws_a_gallery(annotated_bucket: str) -> None:
    out = f"s3://{annotated_bucket}/preview"
    status = run_stage(
        "preview", "--annotations", f"s3://{annotated_bucket}/annotations.json", "--out", out
    )
    assert status == 0
    names = [uri_io.basename(info.uri) for info in uri_io.list_objects(out)]
    assert "index.html" in names
    assert any(name.endswith(".png") for name in names)
    assert ".png" in uri_io.read_text(uri_io.join(out, "index.html"))


@pytest.mark.docker
def test_local_outputs_land_in_the_working_folder_owned_by_the_caller(
    scene_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The working folder is mounted at the same path and the container runs as the caller."""
    monkeypatch.chdir(tmp_path)
    status = run_stage(
        "prepare",
        "--raster", f"s3://{scene_bucket}/scene.tif",
        "--tiles", f"s3://{scene_bucket}/tiles",
        "--manifest", "out/manifest.json",
        settings=(f"prepare.tile_size={TILE_PX}",),
    )  # fmt: skip
    assert status == 0
    written = tmp_path / "out" / "manifest.json"
    assert load_manifest(str(written)).tiles
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())


@pytest.fixture(scope="module")
def trained_bucket(s3_server: EmbeddedS3, engine: Any) -> str:
    """One tiny epoch of the train container on a few 64 px tiles."""
    from tests.tile_fixtures import write_tile_set

    images_or_skip(engine, ("train",))
    bucket = "containers-train"
    ensure_bucket(bucket)
    write_tile_set(f"s3://{bucket}/data", count=6, size=64, splits=("train", "train", "val"))
    status = run_stage(
        "train",
        "--annotations", f"s3://{bucket}/data/annotations.json",
        "--out", f"s3://{bucket}/run",
        settings=tuple(TINY_TRAINING),
    )  # fmt: skip
    assert status == 0
    return bucket


@pytest.mark.docker
def test_train_container_writes_a_checkpoint_and_metrics(trained_bucket: str) -> None:
    out = f"s3://{trained_bucket}/run"
    names = {uri_io.basename(info.uri) for info in uri_io.list_objects(out)}
    assert {"model.ckpt", "metrics.json"} <= names
    assert uri_io.read_json(uri_io.join(out, "metrics.json"))["epochs"] == 1


@pytest.mark.docker
def test_export_container_writes_torchscript_and_bento_model(
    trained_bucket: str, engine: Any
) -> None:
    images_or_skip(engine, ("export",))
    out = f"s3://{trained_bucket}/export"
    status = run_stage(
        "export", "--checkpoint", f"s3://{trained_bucket}/run/model.ckpt", "--out", out
    )
    assert status == 0
    names = {uri_io.basename(info.uri) for info in uri_io.list_objects(out)}
    assert {"model.pt", "export.json", "solar_panel_detector.tar.gz"} <= names


@pytest.mark.docker
@pytest.mark.slow
def test_train_container_killed_mid_run_resumes_under_run_stage(
    s3_server: EmbeddedS3, engine: Any, tmp_path: Path
) -> None:
    """The train container killed (SIGKILL, as a preempted node's kubelet does) once an epoch's
    ``last.ckpt`` is published; ``run-stage`` reports the kill, and the rerun with ``--resume``
    (what Kubeflow's retry runs) continues from that checkpoint to a whole model."""
    from components.images.names import image_name
    from tests.tile_fixtures import write_tile_set

    images_or_skip(engine, ("train",))
    bucket = "containers-killed-train"
    ensure_bucket(bucket)
    write_tile_set(f"s3://{bucket}/data", count=40, size=64, splits=("train",) * 9 + ("val",))
    out = f"s3://{bucket}/run"
    # one torch thread: a training that shares the cores with other work is not slowed tenfold
    # by spinning threads (measured: 32 s alone, 441 s beside another torch process)
    settings = [*TINY_TRAINING, "train.epochs=6", "train.max_minutes=null", "train.cpu_threads=1"]
    command = [
        sys.executable, "-m", "components.cli", "run-stage", "train", "--",
        "--annotations", f"s3://{bucket}/data/annotations.json", "--out", out,
        *[part for setting in settings for part in ("--set", setting)],
    ]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not uri_io.exists(uri_io.join(out, "last.ckpt")):
            assert first.poll() is None, f"train ended before a checkpoint: {first.stderr.read()}"
            assert time.monotonic() < deadline, "no last.ckpt after 10 minutes"
            time.sleep(0.2)
        [container] = engine.containers.list(filters={"ancestor": image_name("train")})
        container.kill()
        assert first.wait(timeout=120) != 0, "the killed container's status passes through"
    finally:
        if first.poll() is None:
            first.kill()
    assert not uri_io.exists(uri_io.join(out, "model.ckpt")), "killed before the end"

    assert run_stage(
        "train",
        "--annotations", f"s3://{bucket}/data/annotations.json", "--out", out, "--resume",
        settings=tuple(settings),
    ) == 0  # fmt: skip
    metrics = uri_io.read_json(uri_io.join(out, "metrics.json"))
    assert metrics["resumed_from_step"] > 0
    assert metrics["epochs"] == 6
    assert uri_io.exists(uri_io.join(out, "model.ckpt"))


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("http://127.0.0.1:9000", True),
        ("http://localhost:9555", True),
        ("http://[::1]:9000", True),
        ("https://s3.eu-central-1.amazonaws.com", False),
        ("http://10.0.0.5:9000", False),
        (None, False),
    ],
)
def test_host_network_only_for_a_loopback_endpoint(endpoint: str | None, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


@pytest.mark.docker
def test_local_inputs_and_outputs_outside_the_working_folder_are_mounted(
    s3_server: EmbeddedS3,
    light_images: None,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A raster and a manifest in folders of their own, the working folder somewhere else."""
    from components.synth.geotiff import write_scene

    inputs, outputs, workdir = tmp_path / "data", tmp_path / "results", tmp_path / "project"
    inputs.mkdir()
    workdir.mkdir()
    write_scene(str(inputs / "scene.tif"), 256, seed=4)
    monkeypatch.chdir(workdir)
    status = run_stage(
        "prepare",
        "--raster", str(inputs / "scene.tif"),
        "--tiles", f"s3://{bucket}/tiles",
        "--manifest", str(outputs / "manifest.json"),
        settings=(f"prepare.tile_size={TILE_PX}",),
    )  # fmt: skip
    assert status == 0
    manifest = load_manifest(str(outputs / "manifest.json"))
    assert len(manifest.tiles) == 4 and manifest.raster == str(inputs / "scene.tif")
    assert (outputs / "manifest.json").stat().st_uid == os.getuid()
    assert sorted(p.name for p in inputs.iterdir()) == ["scene.geojson", "scene.tif"]


def test_mounts_inputs_read_only_and_outputs_read_write(tmp_path: Path) -> None:
    raster, model = tmp_path / "in" / "scene.tif", tmp_path / "export"
    raster.parent.mkdir()
    model.mkdir()
    mounts = local_mounts(
        "detect",
        ["--raster", str(raster), "--model", str(model), f"--out={tmp_path}/maps/det.geojson"],
        tmp_path / "work",
    )
    assert mounts == {
        str(tmp_path / "work"): "rw",
        str(raster.parent): "ro",
        str(model): "ro",
        str(tmp_path / "maps"): "rw",
    }
    assert (tmp_path / "maps").is_dir(), "an output's folder is made, as the stage would"
    shared = local_mounts(
        "preprocess",
        ["--annotations", "s3://b/a", "--manifest", str(model / "m.json"), "--out", str(model / "a.json")],
        tmp_path,
    )  # fmt: skip
    assert shared[str(model)] == "rw", "a folder both read and written is writable"


def test_missing_input_folder_is_exit_2_before_any_container(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = solarpipe(
        ["run-stage", "detect", "--", "--raster", f"{tmp_path}/nowhere/scene.tif", "--model",
         "s3://b/export", "--out", f"{tmp_path}/det.geojson"]
    )  # fmt: skip
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"solarpipe run-stage: error: {tmp_path}/nowhere/scene.tif: folder {tmp_path}/nowhere "
        "does not exist (nothing to mount)"
    )


def test_unknown_stage_exits_2_listing_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        solarpipe(["run-stage", "tiles", "--", "--raster", "x.tif"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'tiles'" in error
    assert all(f"'{stage}'" in error for stage in STAGE_NAMES)


def test_engine_not_running_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert solarpipe(["run-stage", "prepare", "--", "--raster", "x.tif"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("solarpipe run-stage: error: Docker engine not reachable")
    assert "\n" not in error


@pytest.mark.docker
def test_missing_image_says_how_to_build_it(
    engine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status = solarpipe(["run-stage", "detect", "--image", "solarpipe-detect:no-such-tag", "--"])
    assert status == 1
    error = capsys.readouterr().err
    assert "image solarpipe-detect:no-such-tag not found" in error
    assert "solarpipe images build" in error


@pytest.mark.docker
def test_stage_failure_passes_its_status_and_last_lines_through(
    s3_server: EmbeddedS3, light_images: None, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_stage(
        "prepare",
        "--raster", f"s3://{bucket}/missing.tif",
        "--tiles", f"s3://{bucket}/tiles",
        "--manifest", f"s3://{bucket}/manifest.json",
    )  # fmt: skip
    assert status == 1
    error = capsys.readouterr().err
    assert f"components.prepare: error: raster does not exist: s3://{bucket}/missing.tif" in error
    assert "stage prepare failed in solarpipe-prepare:" in error
    assert "with exit status 1" in error
    assert not uri_io.exists(f"s3://{bucket}/manifest.json")


@pytest.mark.docker
def test_usage_error_inside_the_container_exits_2(
    light_images: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_stage("preview", "--annotations", "a.json", "--out", "out", settings=("x.y=1",))
    assert status == 2
    assert "x.y" in capsys.readouterr().err


@pytest.mark.docker
def test_the_readmes_run_stage_command_runs_as_printed(
    s3_server: EmbeddedS3, light_images: None, tmp_path: Path
) -> None:
    """The README's run-stage line, copied as text and run by bash in a fresh folder, against
    the embedded S3 holding a small scene where the line expects it."""
    from components.synth.geotiff import write_scene
    from tests.readme_text import readme_line

    line = readme_line("solarpipe run-stage prepare")
    raster = next(word for word in line.split() if word.endswith(".tif"))
    ensure_bucket(raster.removeprefix("s3://").split("/", 1)[0])
    write_scene(raster, SCENE_PX, seed=4)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", line], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = load_manifest(str(tmp_path / "data" / "manifest.json"))
    assert len(manifest.tiles) == (SCENE_PX // 256) ** 2
    assert all(uri_io.exists(tile.uri) for tile in manifest.tiles)
