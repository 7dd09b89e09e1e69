"""The pieces of ``labelstudio predict`` that need no server: the priority rules, the prediction
payload, the model version, the project's label control, the resume record, task listings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.core import uri as uri_io
from components.core.errors import SolarpipeError, UsageError
from components.labelstudio.export_objects import region_from_result
from components.labelstudio.predict_record import (
    PredictRecord,
    load_record,
    record_uri,
    save_record,
)
from components.labelstudio.predictions import (
    LabelTarget,
    TileDetections,
    check_run_id,
    export_identity,
    model_version,
    prediction_payload,
)
from components.labelstudio.priority import (
    box_doubt,
    priority_of_task_score,
    task_score,
    tile_priority,
)
from components.labelstudio.project import check_model_labels, label_target
from components.labelstudio.setup import label_config
from components.labelstudio.task_pages import model_versions, unlabeled_query

TARGET = LabelTarget(from_name="label", to_name="image", data_key="image", labels=("solar_panel",))


# --- priority rules -------------------------------------------------------------------------


def test_doubt_peaks_at_the_threshold_and_vanishes_at_zero_and_one() -> None:
    assert box_doubt(0.3, 0.3) == 1.0
    assert box_doubt(0.0, 0.3) == 0.0 and box_doubt(1.0, 0.3) == 0.0
    assert box_doubt(0.15, 0.3) == pytest.approx(0.5)
    assert box_doubt(0.65, 0.3) == pytest.approx(0.5)


def test_margin_puts_a_borderline_box_before_confident_ones() -> None:
    confident = tile_priority([0.98, 0.97, 0.01], "margin", 0.3)
    borderline = tile_priority([0.98, 0.31], "margin", 0.3)
    assert borderline > confident
    assert borderline == pytest.approx(box_doubt(0.31, 0.3))


def test_middling_grows_with_every_middling_box() -> None:
    one = tile_priority([0.5], "middling", 0.3)
    three = tile_priority([0.5, 0.5, 0.5], "middling", 0.3)
    assert 0 < one < three < 1
    assert tile_priority([0.5, 0.5, 0.5], "margin", 0.3) == pytest.approx(one)


def test_a_tile_without_candidate_boxes_comes_last() -> None:
    assert tile_priority([], "margin", 0.3) == tile_priority([], "middling", 0.3) == 0.0


def test_random_priority_depends_on_the_seed_and_the_task_only() -> None:
    first = [tile_priority([0.5], "random", 0.3, task_id=task, seed=1) for task in range(20)]
    again = [tile_priority([], "random", 0.9, task_id=task, seed=1) for task in range(20)]
    other = [tile_priority([0.5], "random", 0.3, task_id=task, seed=2) for task in range(20)]
    assert first == again != other
    assert len(set(first)) == 20 and all(0 <= value < 1 for value in first)


def test_label_studio_task_score_is_one_minus_the_priority() -> None:
    assert task_score(0.8) == pytest.approx(0.2)
    assert priority_of_task_score(task_score(0.123456)) == pytest.approx(0.123456)


# --- payload and model version --------------------------------------------------------------


def test_payload_is_in_percent_of_the_tiles_real_size_with_scores() -> None:
    tile = TileDetections(
        task_id=12,
        image="s3://b/t.png",
        width=96,
        height=64,
        boxes=[(9.6, 6.4, 48.0, 32.0), (0.0, 0.0, 10.0, 10.0)],
        scores=[0.8712345, 0.1],
        labels=["solar_panel", "solar_panel"],
    )
    payload = prediction_payload(tile, TARGET, 0.3, priority=0.25, version="m:1@run")
    assert (payload["task"], payload["score"], payload["model_version"]) == (12, 0.75, "m:1@run")
    [result] = payload["result"]  # the 0.1 box is a candidate for the priority only
    assert result["value"]["x"] == pytest.approx(10.0) and result["value"]["y"] == pytest.approx(10)
    assert result["value"]["width"] == pytest.approx(40.0)
    assert result["value"]["height"] == pytest.approx(40.0)
    assert (result["original_width"], result["original_height"]) == (96, 64)
    assert result["score"] == 0.8712
    region = region_from_result(result)
    assert region.box.as_list() == pytest.approx((9.6, 6.4, 48.0, 32.0))
    assert (result["from_name"], result["to_name"], region.label) == (
        "label",
        "image",
        "solar_panel",
    )


def test_model_version_is_the_exports_tag_and_the_run_id(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    uri_io.write_json(str(tmp_path / "export.json"), {"bento_tag": "solar_panel_detector:abc"})
    assert (
        model_version(export_identity(str(tmp_path)), "run-7") == "solar_panel_detector:abc@run-7"
    )


def test_model_version_without_export_json_hashes_the_model_file(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    identity = export_identity(str(tmp_path / "model.pt"))
    assert identity.startswith("model:") and len(identity) == len("model:") + 12
    (tmp_path / "model.pt").write_bytes(b"other weights")
    assert export_identity(str(tmp_path)) != identity


@pytest.mark.parametrize("run_id", ["", "a b", "a,b", "x" * 101, "-lead"])
def test_bad_run_id_is_a_usage_error(run_id: str) -> None:
    with pytest.raises(UsageError, match="--run-id"):
        check_run_id(run_id)


# --- the project's label control ------------------------------------------------------------


def test_label_target_reads_the_projects_rectangle_labels() -> None:
    target = label_target(label_config(["solar_panel", "solar_thermal"]), "p")
    assert target == LabelTarget("label", "image", "image", ("solar_panel", "solar_thermal"))


def test_a_model_class_missing_from_the_project_is_a_usage_error() -> None:
    check_model_labels(["solar_panel"], TARGET, "m.pt")
    with pytest.raises(UsageError, match=r"\['solar_thermal'\] not among them"):
        check_model_labels(["solar_panel", "solar_thermal"], TARGET, "m.pt")


def test_a_config_without_rectangle_labels_is_named() -> None:
    config = '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    with pytest.raises(UsageError, match="0 RectangleLabels controls"):
        label_target(config, "p")


# --- the resume record and task listings ----------------------------------------------------


def record(**fields: object) -> PredictRecord:
    base = dict(
        model_version="m:1@r",
        model="m.pt",
        project_id=3,
        project_url="http://ls/projects/3/data",
        priority="margin",
        score_threshold=0.3,
    )
    return PredictRecord(**{**base, **fields})


def test_a_record_resumes_only_its_own_unfinished_run(tmp_path: Path) -> None:
    assert record(status="failed").resumes("m:1@r", 3)
    assert record(status="running").resumes("m:1@r", 3)
    assert not record(status="done").resumes("m:1@r", 3)
    assert not record(status="failed").resumes("m:2@r", 3)
    assert not record(status="failed").resumes("m:1@r", 4)
    save_record(str(tmp_path), record(after_task_id=17))
    loaded = load_record(str(tmp_path))
    assert loaded is not None and loaded.after_task_id == 17 and loaded.updated_at


def test_an_unreadable_record_is_named(tmp_path: Path) -> None:
    assert load_record(str(tmp_path)) is None
    uri_io.write_json(record_uri(str(tmp_path)), {"model_version": 3})
    with pytest.raises(SolarpipeError, match=r"not a predict record: .*predict\.json"):
        load_record(str(tmp_path))


def test_model_versions_are_read_from_either_database() -> None:
    assert model_versions("m:1@a,m:2@b") == {"m:1@a", "m:2@b"}  # SQLite: one joined string
    assert model_versions(["m:1@a", None]) == {"m:1@a"}  # PostgreSQL: an array
    assert model_versions(None) == model_versions("") == frozenset()


def test_page_query_lists_unlabeled_tasks_after_the_cursor_by_id() -> None:
    query = json.loads(unlabeled_query(41))
    assert query["ordering"] == ["tasks:id"]
    filters = {
        (item["filter"], item["operator"], item["value"]) for item in query["filters"]["items"]
    }
    assert filters == {
        ("filter:tasks:id", "greater", 41),
        ("filter:tasks:total_annotations", "equal", 0),
    }
