"""``solarpipe labelstudio predict`` and ``next`` against a real Label Studio server and the
embedded S3: predictions with the tiles' real coordinates, no duplicates on a rerun, the order
Label Studio serves, an accepted prediction through the export storage into preprocess, and the
bad inputs (each one line, exit 1 or 2, and a record of where to resume).

The model is the tests' small exported SSDlite (``tests/detector_fixture.py``): its boxes do not
depend much on the tile, so the ordering tests use the seeded ``random`` priority, whose order is
known in advance; the payload test checks the ``margin`` score against the model's own output.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.labelstudio.predict_record import load_record
from components.labelstudio.priority import tile_priority
from components.labelstudio.setup import label_config
from components.ml.scripted import load_scripted_model
from components.s3server import free_port
from tests.detector_fixture import cached_export
from tests.labelstudio_server import LabelStudioServer
from tests.test_labelstudio_setup import projects_titled, run_setup, sdk_client

WIDTH, HEIGHT = 96, 64  # not square: catches swapped axes in pixels → percent
TIMEOUT_S = 300
EXPORT_WAIT_S = 20.0


@pytest.fixture(autouse=True)
def default_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder: params are the built-in defaults plus each test's ``--set``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_export(tmp_path_factory.getbasetemp())


def panel_tile(index: int) -> bytes:
    """A dark WIDTH x HEIGHT tile with a bright panel that moves with ``index``."""
    pixels = np.full((HEIGHT, WIDTH, 3), 20, dtype=np.uint8)
    left = 5 + 9 * index % (WIDTH - 30)
    pixels[10:34, left : left + 24] = 240
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def labeling_project(bucket: str, count: int, title: str) -> tuple[Any, Any, dict[str, int]]:
    """``count`` tiles, a set-up project: (client, project, task id by tile URI)."""
    tiles = f"s3://{bucket}/tiles"
    for index in range(count):
        uri_io.write_bytes(f"{tiles}/t_{index:02d}.png", panel_tile(index), "image/png")
    assert run_setup(tiles, f"s3://{bucket}/annotations", f"labelstudio.title={title}") == 0
    client = sdk_client_from_environment()
    [project] = projects_titled(client, title)
    tasks = client.tasks.list(project=project.id, resolve_uri=False)
    return client, project, {task.data["image"]: task.id for task in tasks}


def sdk_client_from_environment() -> Any:
    from label_studio_sdk import LabelStudio

    return LabelStudio(
        base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"]
    )


def predict(model: Path, out: Path, title: str, *settings: str, run_id: str = "test-run") -> int:
    overrides = [
        item for setting in (f"labelstudio.title={title}", *settings) for item in ("--set", setting)
    ]
    argv = ["labelstudio", "predict", "--model", str(model), "--out", str(out), "--run-id", run_id]
    return solarpipe([*argv, *overrides])


def predictions_of(client: Any, task_id: int) -> list[Any]:
    return list(client.predictions.list(task=task_id))


def version_of(model: Path, run_id: str = "test-run") -> str:
    return f"{json.loads((model / 'export.json').read_text())['bento_tag']}@{run_id}"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr (progress lines aside), and no traceback."""
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


# --- predictions on the server ------------------------------------------------------------------


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_predictions_carry_real_coordinates_and_a_rerun_adds_none(
    labelstudio: LabelStudioServer,
    bucket: str,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    title = f"predict {bucket}"
    client, project, tasks = labeling_project(bucket, 5, title)
    labelled_tile = f"s3://{bucket}/tiles/t_00.png"
    client.annotations.create(id=tasks[labelled_tile], result=[])
    out = tmp_path / "predict"

    assert predict(exported_model, out, title, "labelstudio.page_size=2") == 0
    printed = capsys.readouterr().out
    assert "predict: 4 tasks predicted" in printed and "0 already had" in printed

    model = load_scripted_model(str(exported_model))
    version = version_of(exported_model)
    assert predictions_of(client, tasks[labelled_tile]) == []
    for tile, task_id in tasks.items():
        if tile == labelled_tile:
            continue
        [prediction] = predictions_of(client, task_id)
        assert prediction.model_version == version
        pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(uri_io.read_bytes(tile)))))
        expected = model([pixels], 0.05)[0]  # the candidates: down to labelstudio.candidate_score
        shown = expected["scores"] >= 0.3  # the model's own threshold: what gets uploaded
        assert len(prediction.result) == int(shown.sum()) > 0
        for result, box, score in zip(
            prediction.result, expected["boxes"][shown], expected["scores"][shown], strict=True
        ):
            value = result["value"]
            assert (result["original_width"], result["original_height"]) == (WIDTH, HEIGHT)
            corners = [
                value["x"] * WIDTH / 100,
                value["y"] * HEIGHT / 100,
                (value["x"] + value["width"]) * WIDTH / 100,
                (value["y"] + value["height"]) * HEIGHT / 100,
            ]
            assert corners == pytest.approx(box.tolist(), abs=1e-3)
            assert result["score"] == pytest.approx(float(score), abs=1e-4)
            assert value["rectanglelabels"] == ["solar_panel"]
        priority = tile_priority(expected["scores"].tolist(), "margin", 0.3)
        assert prediction.score == pytest.approx(1 - priority, abs=1e-6)
    record = load_record(str(out))
    assert record is not None and record.status == "done"
    assert (record.tasks_predicted, record.after_task_id) == (4, max(tasks.values()))

    assert predict(exported_model, out, title, "labelstudio.page_size=2") == 0
    assert "0 tasks predicted (0 boxes from score 0.3), 4 already had" in capsys.readouterr().out
    assert all(
        len(predictions_of(client, task)) == 1
        for tile, task in tasks.items()
        if tile != labelled_tile
    )

    assert predict(exported_model, out, title, run_id="second-run") == 0
    for tile, task_id in tasks.items():
        versions = sorted(p.model_version for p in predictions_of(client, task_id))
        expected_versions = (
            []
            if tile == labelled_tile
            else sorted([version, version_of(exported_model, "second-run")])
        )
        assert versions == expected_versions
    assert client.projects.get(project.id).model_version == version_of(exported_model, "second-run")


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_label_studio_serves_the_tiles_in_priority_order(
    labelstudio: LabelStudioServer,
    bucket: str,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    title = f"order {bucket}"
    client, project, tasks = labeling_project(bucket, 6, title)
    settings = ("labelstudio.priority=random", "labelstudio.seed=5", "labelstudio.page_size=4")
    assert predict(exported_model, tmp_path / "p", title, *settings) == 0
    expected = sorted(
        tasks.values(), key=lambda task: -tile_priority([], "random", 0.3, task_id=task, seed=5)
    )
    capsys.readouterr()

    assert (
        solarpipe(["labelstudio", "next", "--top", "3", "--set", f"labelstudio.title={title}"]) == 0
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(row[1]) for row in rows] == expected[:3]
    priorities = [float(row[2]) for row in rows]
    assert priorities == sorted(priorities, reverse=True)

    project = client.projects.get(project.id)
    assert (project.sampling, project.model_version) == (
        "Uncertainty sampling",
        version_of(exported_model),
    )
    [view] = [
        v
        for v in client.views.list(project=project.id)
        if v.data["title"] == "solarpipe: uncertain first"
    ]
    listed = [
        task.id for task in client.tasks.list(project=project.id, view=view.id, resolve_uri=False)
    ]
    assert listed == expected
    headers = {"Authorization": f"Token {labelstudio.token}"}
    served = httpx.get(
        f"{labelstudio.url}/api/projects/{project.id}/next", headers=headers, timeout=30
    )
    assert served.status_code == 200 and served.json()["id"] == expected[0]  # Label All Tasks
    assert "Active learning" in served.json()["queue"]

    client.annotations.create(id=expected[0], result=[])  # labelled: it leaves the queue
    listed = [
        task.id for task in client.tasks.list(project=project.id, view=view.id, resolve_uri=False)
    ]
    assert listed == expected[1:]
    # "Label Tasks As Displayed" from the tab: the Data Manager sends the tab's filters and order.
    tab = {"filters": view.data["filters"], "ordering": view.data["ordering"]}
    served = httpx.post(
        f"{labelstudio.url}/api/dm/actions?id=next_task&project={project.id}",
        headers=headers,
        json=tab,
        timeout=30,
    )
    assert served.status_code == 200 and served.json()["id"] == expected[1]
    assert served.json()["queue"] == "Data manager queue"


def wait_for_export_objects(prefix: str, count: int) -> list[str]:
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        keys = [info.uri for info in uri_io.list_objects(prefix)]
        if len(keys) >= count or time.monotonic() > deadline:
            return keys
        time.sleep(0.5)


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_an_accepted_prediction_flows_through_the_export_storage_into_preprocess(
    labelstudio: LabelStudioServer,
    bucket: str,
    exported_model: Path,
    tmp_path: Path,
) -> None:
    title = f"accept {bucket}"
    client, _, tasks = labeling_project(bucket, 4, title)
    assert predict(exported_model, tmp_path / "p", title, "labelstudio.score_threshold=0.5") == 0
    images = sorted(tasks)
    accepted_task, corrected_task, drawn_task = (tasks[image] for image in images[:3])
    [proposal] = predictions_of(client, accepted_task)
    assert proposal.result, "the model proposes boxes above 0.5"
    # What the labeling UI submits: the proposal's regions, each marked with its origin.
    client.annotations.create(
        id=accepted_task,
        result=[dict(region, origin="prediction") for region in proposal.result],
        parent_prediction=proposal.id,
    )
    [to_fix] = predictions_of(client, corrected_task)
    moved = dict(to_fix.result[0], origin="prediction-changed")
    moved["value"] = dict(moved["value"], x=1.0, y=2.0, width=20.0, height=30.0)
    client.annotations.create(id=corrected_task, result=[moved], parent_prediction=to_fix.id)
    drawn = dict(moved, origin="manual", id="m0")
    client.annotations.create(id=drawn_task, result=[drawn])
    annotations_prefix = f"s3://{bucket}/annotations"
    assert len(wait_for_export_objects(annotations_prefix, 3)) == 3

    manifest_uri = f"s3://{bucket}/manifest.json"
    records = [
        TileRecord(
            key=uri_io.basename(image),
            uri=image,
            window=TileWindow(col_off=index * WIDTH, row_off=0, width=WIDTH, height=HEIGHT),
            width=WIDTH,
            height=HEIGHT,
            sha256="0" * 64,
            bytes=1,
            transform=(0.1, 0.0, 2_600_000.0 + index * 9.6, 0.0, -0.1, 1_200_000.0),
        )
        for index, image in enumerate(images)
    ]
    save_manifest(
        manifest_uri,
        Manifest(
            raster="scene.tif", scene="t", crs="EPSG:2056", raster_width=WIDTH * len(images),
            raster_height=HEIGHT, tile_size=WIDTH, overlap=0, tiles_prefix=f"s3://{bucket}/tiles",
            tiles=records,
        ),
    )  # fmt: skip
    out_uri = f"s3://{bucket}/preprocess/annotations.json"
    settings = ["preprocess.max_empty_fraction=null", "preprocess.min_box_size=0"]
    completed = subprocess.run(
        [sys.executable, "-m", "components.preprocess", "--annotations", annotations_prefix,
         "--manifest", manifest_uri, "--out", out_uri,
         *(item for setting in settings for item in ("--set", setting))],
        cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert (
        "1 drawn by hand, 1 from accepted predictions, 1 from corrected predictions"
        in completed.stdout
    )
    by_image = {image.image: image for image in load_annotations(out_uri).images}
    assert set(by_image) == set(images[:3])  # the fourth has a prediction only: not ground truth
    assert by_image[images[2]].origin == "manual"
    accepted = by_image[images[0]]
    assert accepted.origin == "prediction"
    proposed_boxes = sorted(
        (
            round(r["value"]["x"] * WIDTH / 100, 3),
            round(r["value"]["y"] * HEIGHT / 100, 3),
            round((r["value"]["x"] + r["value"]["width"]) * WIDTH / 100, 3),
            round((r["value"]["y"] + r["value"]["height"]) * HEIGHT / 100, 3),
        )
        for r in proposal.result
    )
    np.testing.assert_allclose(sorted(accepted.boxes), proposed_boxes, atol=2e-3)
    corrected = by_image[images[1]]
    assert corrected.origin == "prediction-changed"
    assert corrected.boxes == [pytest.approx((0.96, 1.28, 20.16, 20.48))]


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_a_tile_gone_from_the_bucket_stops_with_a_record_and_the_rerun_resumes(
    labelstudio: LabelStudioServer,
    bucket: str,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    title = f"missing {bucket}"
    client, _, tasks = labeling_project(bucket, 3, title)
    by_id = sorted(tasks.items(), key=lambda item: item[1])
    gone_tile, gone_task = by_id[1]
    kept_bytes = uri_io.read_bytes(gone_tile)
    uri_io.delete(gone_tile)
    out = tmp_path / "p"

    assert predict(exported_model, out, title, "labelstudio.page_size=1") == 1
    error = one_error_line(capsys)
    assert f"no longer has the tile of task {gone_task}: {gone_tile}" in error
    assert f"tasks up to {by_id[0][1]} are done" in error and "predict.json" in error
    record = load_record(str(out))
    assert record is not None and (record.status, record.after_task_id) == ("failed", by_id[0][1])
    assert [len(predictions_of(client, task)) for _, task in by_id] == [1, 0, 0]

    assert predict(exported_model, out, title, "labelstudio.on_missing_tile=skip") == 0
    assert "1 tiles missing" in capsys.readouterr().out
    record = load_record(str(out))
    assert record is not None and record.missing_tiles == [gone_tile]
    assert record.tasks_predicted == 2  # the resumed run counts on from the first one

    uri_io.write_bytes(gone_tile, kept_bytes, "image/png")
    assert predict(exported_model, out, title) == 0
    assert "1 tasks predicted" in capsys.readouterr().out
    assert [len(predictions_of(client, task)) for _, task in by_id] == [1, 1, 1]


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_a_project_without_storages_is_one_line_and_exit_1(
    labelstudio: LabelStudioServer,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    title = f"bare {tmp_path.name}"
    sdk_client(labelstudio).projects.create(title=title, label_config=label_config(["solar_panel"]))
    assert predict(exported_model, tmp_path / "p", title) == 1
    error = one_error_line(capsys)
    assert "has no S3 import and no S3 export storage" in error and "labelstudio setup" in error
    assert solarpipe(["labelstudio", "next", "--set", f"labelstudio.title={title}"]) == 1
    assert "has no model version yet" in one_error_line(capsys)
    assert predict(exported_model, tmp_path / "p", f"nothing {tmp_path.name}") == 1
    assert "no Label Studio project titled" in one_error_line(capsys)


@pytest.mark.labelstudio
@pytest.mark.timeout(TIMEOUT_S, func_only=True)
def test_a_model_whose_labels_the_project_lacks_is_one_line_and_exit_2(
    labelstudio: LabelStudioServer,
    bucket: str,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    title = f"labels {bucket}"
    uri_io.write_bytes(f"s3://{bucket}/tiles/t.png", panel_tile(0), "image/png")
    settings = (f"labelstudio.title={title}", "labelstudio.labels=[solar_thermal]")
    assert run_setup(f"s3://{bucket}/tiles", f"s3://{bucket}/ann", *settings) == 0
    capsys.readouterr()
    assert predict(exported_model, tmp_path / "p", title) == 2
    error = one_error_line(capsys)
    assert "predicts ['solar_panel']" in error and "RectangleLabels are ['solar_thermal']" in error


@pytest.mark.labelstudio
def test_a_rejected_token_is_one_line_and_exit_1(
    labelstudio: LabelStudioServer,
    exported_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    assert predict(exported_model, tmp_path / "p", "any") == 1
    assert "rejected the token (HTTP 401" in one_error_line(capsys)


def test_an_unreachable_server_is_one_line_and_exit_1(
    exported_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    assert predict(exported_model, tmp_path / "p", "any") == 1
    assert f"cannot reach Label Studio at {url}" in one_error_line(capsys)
    assert solarpipe(["labelstudio", "next"]) == 1
    assert f"cannot reach Label Studio at {url}" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "status", "expected"),
    [
        (["--model", "{model}", "--run-id", "a b"], 2, "--run-id 'a b'"),
        (["--model", "{tmp}/nothing/model.pt"], 1, "no such model file"),
        (["--model", "{model}", "--set", "labelstudio.page_size=0"], 2, "labelstudio.page_size"),
        (["--model", "{model}", "--set", "labelstudio.priority=best"], 2, "labelstudio.priority"),
    ],
)
def test_bad_options_are_one_line_and_leave_no_record(
    argv: list[str],
    status: int,
    expected: str,
    exported_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    arguments = [part.format(model=exported_model, tmp=tmp_path) for part in argv]
    assert solarpipe(["labelstudio", "predict", *arguments]) == status
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("unset", ["LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"])
def test_missing_server_settings_are_usage_errors(
    unset: str,
    exported_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    monkeypatch.delenv(unset)
    assert solarpipe(["labelstudio", "predict", "--model", str(exported_model)]) == 2
    assert f"set {unset}" in one_error_line(capsys)
    assert solarpipe(["labelstudio", "next", "--top", "3"]) == 2
    assert f"set {unset}" in one_error_line(capsys)
    assert solarpipe(["labelstudio", "next", "--top", "0"]) == 2
    assert "--top must be at least 1" in one_error_line(capsys)
