"""SIGKILL in the middle of writing outputs, for every stage, to S3 and to local disk; then the
rerun. The output is the old one or the new one, never a mixture; prepare and train resume.

Where the kill lands is deterministic, not timed: for S3 the fault proxy parks one upload
(``FaultProxy.hold``) and the test kills the stage once the upload has arrived; for local disk
``tests/pause_hook.py`` stops the stage at the rename that would put the output in place (a
file's ``os.replace``, a folder's ``swap_in_folder``), with everything before it written.

S3 has no way to swap many objects at once: an output folder there is whole when its
``_SUCCESS`` object is (see ``core/uri.publish_folder``). A kill mid-publish leaves no
``_SUCCESS``; the rerun makes the folder the new output exactly, stale objects gone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from components.core import uri as uri_io
from tests.fault_proxy import FaultProxy, FaultRates
from tests.fault_scenario import (
    BUCKET,
    CLEAN,
    Scenario,
    fingerprint,
    folder_digests,
    kill,
    output_of,
    run_stage,
    start_stage,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

OLD_FILE = b'{"written by": "the previous run"}\n'
FOLDER_STAGES = ("preview", "export", "evaluate")
FILE_STAGES = ("prepare", "preprocess", "detect")
# The upload each stage is killed in (S3), chosen so that other outputs went before it.
# Files whose bytes differ between any two runs: the BentoML model's tag has a random version.
DIFFERS_EVERY_RUN = {"export": ("export.json", "solar_panel_detector.tar.gz")}
# (A query follows the key in the parts of a multipart upload: model.pt is one.)
HELD_UPLOAD = {
    "prepare": r"/manifest\.json$",
    "preprocess": r"/annotations\.json$",
    "detect": r"/detections\.geojson$",
    "preview": r"/preview/index\.html$",
    "export": r"/export/model\.pt(\?|$)",
    "evaluate": r"/evaluate/pr_curve\.json$",
}


def output_file(stage: str, root: str) -> str:
    return uri_io.join(root, "manifest.json") if stage == "prepare" else output_of(stage, root)


def seed_old_output(stage: str, root: str) -> Any:
    """An output that a previous run left (distinct from the new one); what it must stay."""
    if stage in FILE_STAGES:
        uri_io.write_bytes(output_file(stage, root), OLD_FILE)
        return OLD_FILE
    folder = output_of(stage, root)
    names = [*folder_digests(output_of(stage, CLEAN)), "only-in-the-old-output.txt"]
    for name in names:
        uri_io.write_bytes(uri_io.join(folder, name), b"old " + name.encode())
    if uri_io.is_s3(folder):
        listing = {name: len(b"old " + name.encode()) for name in names}
        uri_io.write_json(uri_io.join(folder, uri_io.COMPLETE_MARKER), {"files": listing})
    return folder_digests(folder)


def current_output(stage: str, root: str) -> Any:
    if stage in FILE_STAGES:
        return uri_io.read_bytes(output_file(stage, root))
    return folder_digests(output_of(stage, root))


def rerun_gives_the_new_output(stage: str, root: str, scenario: Scenario) -> str:
    done = run_stage(stage, root, scenario.endpoint)
    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(stage, root) == scenario.clean(stage)
    return done.stdout


@pytest.mark.parametrize("stage", [*FILE_STAGES, *FOLDER_STAGES])
def test_killed_while_uploading_to_s3_leaves_old_or_flagged_output(
    stage: str, scenario: Scenario
) -> None:
    scenario.clean(stage)
    root = f"s3://{BUCKET}/killed-s3"
    old = seed_old_output(stage, root)
    with FaultProxy(scenario.endpoint, FaultRates()) as proxy:
        held = proxy.hold("PUT", HELD_UPLOAD[stage])
        process = start_stage(stage, root, proxy.endpoint)
        wait_for(held.arrived.is_set, process, f"the upload {HELD_UPLOAD[stage]}")
        kill(process)

    if stage in FILE_STAGES:
        assert current_output(stage, root) == old  # one object: S3 swaps it whole or not at all
    else:  # flagged as incomplete, and each object is the old one or the new one
        folder = output_of(stage, root)
        assert not uri_io.exists(uri_io.join(folder, uri_io.COMPLETE_MARKER))
        new = folder_digests(output_of(stage, CLEAN))
        for name, digest in folder_digests(folder).items():
            if name in DIFFERS_EVERY_RUN.get(stage, ()):
                assert name in new, name  # the old file, or this run's
            else:
                assert digest in (old.get(name), new.get(name)), name
    stdout = rerun_gives_the_new_output(stage, root, scenario)
    if stage == "prepare":
        assert "0 tiles uploaded" in stdout, stdout  # resumed: every tile was already there
    if stage in FOLDER_STAGES:
        folder = output_of(stage, root)
        marker = uri_io.read_json(uri_io.join(folder, uri_io.COMPLETE_MARKER))
        assert set(marker["files"]) == set(folder_digests(folder))


@pytest.mark.parametrize("stage", [*FILE_STAGES, *FOLDER_STAGES])
def test_killed_while_writing_to_local_disk_leaves_the_old_output(
    stage: str, scenario: Scenario, tmp_path: Path
) -> None:
    scenario.clean(stage)
    root = str(tmp_path / "out")
    old = seed_old_output(stage, root)
    marker = tmp_path / "paused"
    if stage in FILE_STAGES:
        name = uri_io.basename(output_file(stage, root)).replace(".", r"\.")
        pause = (str(marker), "os:replace", rf"/{name}$", "1")
    else:
        pause = (str(marker), "components.core.folders:swap_in_folder", rf"/{stage}$", "1")
    process = start_stage(stage, root, scenario.endpoint, pause_at=pause)
    wait_for(marker.exists, process, "the pause before the output is put in place")
    kill(process)

    assert current_output(stage, root) == old
    stdout = rerun_gives_the_new_output(stage, root, scenario)
    if stage == "prepare":
        assert "0 tiles uploaded" in stdout, stdout
    # The killed run's staging folder is gone (a killed file write leaves a hidden *.tmp file).
    assert not [p.name for p in Path(root).iterdir() if p.is_dir() and p.name.startswith(".")]


def _weights(uri: str) -> dict[str, bytes]:
    import torch

    loaded = torch.load(io.BytesIO(uri_io.read_bytes(uri)), map_location="cpu", weights_only=False)
    return {name: tensor.numpy().tobytes() for name, tensor in loaded["state_dict"].items()}


TWO_EPOCHS = ("--set", "train.epochs=2")


@pytest.fixture(scope="module")
def two_epoch_reference(scenario: Scenario) -> dict[str, dict[str, bytes]]:
    """The weights of an uninterrupted two-epoch run."""
    scenario.clean("train")
    root = f"s3://{BUCKET}/train-reference"
    done = run_stage("train", root, scenario.endpoint, *TWO_EPOCHS)
    assert done.returncode == 0, done.stderr[-3000:]
    out = output_of("train", root)
    return {name: _weights(uri_io.join(out, name)) for name in ("model.ckpt", "last.ckpt")}


@pytest.mark.parametrize("target", ["s3", "local"])
def test_train_killed_in_its_second_epoch_resumes_where_it_stopped(
    target: str, scenario: Scenario, two_epoch_reference, tmp_path: Path
) -> None:
    """Killed in the first training step of epoch 2 (the third step), after epoch 1's
    ``last.ckpt`` was published: the finished outputs stay the old ones, ``last.ckpt`` is a
    whole checkpoint, and ``--resume`` continues at step 2 to the very weights of an
    uninterrupted run."""
    root = f"s3://{BUCKET}/killed-train" if target == "s3" else str(tmp_path / "out")
    out = output_of("train", root)
    for name in ("model.ckpt", "metrics.json"):
        uri_io.write_bytes(uri_io.join(out, name), OLD_FILE)
    marker = tmp_path / "paused"
    pause = (str(marker), "components.ml.module:DetectorModule.training_step", "", "3")
    process = start_stage("train", root, scenario.endpoint, TWO_EPOCHS, pause)
    wait_for(marker.exists, process, "the second epoch")
    kill(process)

    for name in ("model.ckpt", "metrics.json"):
        assert uri_io.read_bytes(uri_io.join(out, name)) == OLD_FILE
    assert _weights(uri_io.join(out, "last.ckpt"))  # a whole checkpoint, loadable

    done = run_stage("train", root, scenario.endpoint, *TWO_EPOCHS, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = uri_io.read_json(uri_io.join(out, "metrics.json"))
    assert metrics["resumed_from_step"] == 2 and metrics["epochs"] == 2
    assert metrics["train_loss"] > 0  # the tiles hold panels: the weights really moved
    for name, weights in two_epoch_reference.items():
        assert _weights(uri_io.join(out, name)) == weights, name
