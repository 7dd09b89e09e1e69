"""Label Studio export objects: parsing the objects a real Label Studio 1.23.2 wrote, building
objects with the same shape, and the coordinate rules (percent, rotation, polygons)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from components.labelstudio.export_objects import (
    MalformedObjectError,
    PixelBox,
    UnsupportedResultError,
    annotation_origin,
    build_export_object,
    encode_export_object,
    export_object_uri,
    normalise_key,
    parse_export_bytes,
    rectangle_result,
    region_from_result,
)

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"  # written by Label Studio 1.23.2
ANNOTATION_FIXTURE = FIXTURES / "annotation-format-example.json"
TASK_FIXTURE = FIXTURES / "task-format-example.json"
FIXTURE_IMAGE = "s3://tiles/prepared/images/tile_0.png"


def rectangle(x: float, y: float, w: float, h: float, rotation: float = 0.0) -> dict:
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "value": {
            "x": x,
            "y": y,
            "width": w,
            "height": h,
            "rotation": rotation,
            "rectanglelabels": ["solar_panel"],
        },
    }


@pytest.mark.parametrize("fixture", [ANNOTATION_FIXTURE, TASK_FIXTURE], ids=["annotation", "task"])
def test_fixture_object_parses_to_its_task_and_box(fixture: Path) -> None:
    task = parse_export_bytes(fixture.read_bytes(), "s3://bucket/annotations/1")
    assert (task.task_id, task.image) == (1, FIXTURE_IMAGE)
    [annotation] = task.annotations
    assert annotation.annotation_id == 1 and not annotation.was_cancelled
    [result] = annotation.results
    region = region_from_result(result)  # 64 x 64 from original_width / original_height
    assert region.label == "solar_panel"
    assert region.box.as_list() == pytest.approx((6.4, 12.8, 25.6, 28.8))


def test_task_format_predictions_and_drafts_are_not_annotations() -> None:
    payload = json.loads(TASK_FIXTURE.read_text())
    payload["predictions"] = [{"id": 7, "result": [rectangle(0, 0, 50, 50)]}]
    payload["drafts"] = [{"id": 8, "result": [rectangle(0, 0, 50, 50)]}]
    task = parse_export_bytes(json.dumps(payload).encode(), "k")
    assert [a.annotation_id for a in task.annotations] == [1]


def test_task_without_annotations_parses_as_unlabeled() -> None:
    payload = json.loads(TASK_FIXTURE.read_text())
    payload["annotations"] = []
    assert parse_export_bytes(json.dumps(payload).encode(), "k").annotations == ()


@pytest.mark.parametrize("export_format", ["annotation", "task"])
def test_built_object_has_the_keys_label_studio_writes(export_format: str) -> None:
    fixture = json.loads(
        (ANNOTATION_FIXTURE if export_format == "annotation" else TASK_FIXTURE).read_text()
    )
    result = rectangle_result(PixelBox(6.4, 12.8, 25.6, 28.8), 64, 64, "solar_panel")
    built = build_export_object(
        export_format, annotation_id=1, task_id=1, image_uri=FIXTURE_IMAGE, results=[result]
    )
    assert built.keys() == fixture.keys()
    if export_format == "annotation":
        assert built["task"].keys() == fixture["task"].keys()
        fixture_result = fixture["result"][0]
    else:
        assert built["annotations"][0].keys() == fixture["annotations"][0].keys()
        fixture_result = fixture["annotations"][0]["result"][0]
    assert set(fixture_result) <= set(result)
    assert result["value"].keys() == fixture_result["value"].keys()
    for name in ("x", "y", "width", "height", "rotation"):
        assert result["value"][name] == pytest.approx(fixture_result["value"][name])
    assert result["value"]["rectanglelabels"] == fixture_result["value"]["rectanglelabels"]


@pytest.mark.parametrize("fixture", [ANNOTATION_FIXTURE, TASK_FIXTURE], ids=["annotation", "task"])
def test_encoding_matches_label_studio_bytes(fixture: Path) -> None:
    export_format = "annotation" if fixture == ANNOTATION_FIXTURE else "task"
    raw = fixture.read_bytes()
    assert encode_export_object(json.loads(raw), export_format) == raw.rstrip(b"\n")


@pytest.mark.parametrize("export_format", ["annotation", "task"])
def test_built_object_round_trips_through_the_parser(export_format: str) -> None:
    box = PixelBox(10.0, 20.0, 50.5, 33.25)
    built = build_export_object(
        export_format,
        annotation_id=9,
        task_id=4,
        image_uri="s3://b/t/x.png",
        results=[rectangle_result(box, 128, 64, "solar_panel")],
    )
    task = parse_export_bytes(encode_export_object(built, export_format), "k")
    assert (task.task_id, task.image, task.annotations[0].annotation_id) == (4, "s3://b/t/x.png", 9)
    region = region_from_result(task.annotations[0].results[0])
    assert region.box.as_list() == pytest.approx(box.as_list())


def test_object_keys_follow_label_studio() -> None:
    assert export_object_uri("s3://b/ann/", "annotation", 3, 17) == "s3://b/ann/17"
    assert export_object_uri("s3://b/ann", "task", 3, 17) == "s3://b/ann/3.json"


def test_percent_coordinates_scale_by_image_width_and_height() -> None:
    region = region_from_result(rectangle(10, 20, 30, 40))
    assert region.box.as_list() == pytest.approx((20, 20, 80, 60))
    assert region_from_result(rectangle(10, 20, 30, 40), 400, 50).box.as_list() == pytest.approx(
        (40, 10, 160, 30)
    )


def test_rotation_is_clockwise_about_the_top_left_corner_in_pixels() -> None:
    # 200 x 100 image: a 40 x 20 px rectangle at (100, 50), turned 90° clockwise, hangs down and
    # to the left of its top-left corner: x in [80, 100], y in [50, 90].
    turned = region_from_result(rectangle(50, 50, 20, 20, rotation=90))
    assert turned.box.as_list() == pytest.approx((80, 50, 100, 90), abs=1e-9)
    # A 20 px square at (100, 50) turned 45°: its diagonal points straight down.
    half_diagonal = 20 / math.sqrt(2)
    square = region_from_result(rectangle(50, 50, 10, 20, rotation=45))
    assert square.box.as_list(6) == pytest.approx(
        (100 - half_diagonal, 50, 100 + half_diagonal, 50 + 20 * math.sqrt(2)), abs=1e-6
    )


def test_polygon_becomes_its_bounding_box() -> None:
    polygon = {
        "type": "polygonlabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"points": [[10, 10], [30, 5], [25, 40]], "polygonlabels": ["solar_panel"]},
    }
    assert region_from_result(polygon).box.as_list() == pytest.approx((20, 5, 60, 40))


def test_other_result_types_are_unsupported() -> None:
    with pytest.raises(UnsupportedResultError) as caught:
        region_from_result({"type": "choices", "value": {"choices": ["roof"]}})
    assert caught.value.result_type == "choices"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            json.dumps({"id": 1, "task": {"id": 1, "data": {"image": "s3://b/x.png"}}}).encode(),
            "lacks 'result'",
        ),
        (json.dumps({"id": 1, "result": []}).encode(), "no nested 'task'"),
        (json.dumps({"id": 1, "result": [], "task": {"id": 1, "data": {}}}).encode(), "data.image"),
        (
            json.dumps({"id": 1, "data": {"image": "x"}, "annotations": [{"id": 2}]}).encode(),
            "lacks 'result'",
        ),
        (json.dumps({"hello": "world"}).encode(), "neither"),
    ],
)
def test_malformed_objects_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedObjectError, match=reason):
        parse_export_bytes(payload, "k")


def test_rectangle_without_numbers_is_malformed() -> None:
    broken = rectangle(10, 10, 10, 10)
    del broken["value"]["width"]
    with pytest.raises(MalformedObjectError, match="width"):
        region_from_result(broken)


def test_repeated_slashes_in_keys_are_collapsed() -> None:
    assert normalise_key("s3://bucket/prefix//12") == "s3://bucket/prefix/12"
    assert normalise_key("s3://bucket/prefix/12") == "s3://bucket/prefix/12"
    assert normalise_key("/data//ann///3.json") == "/data/ann/3.json"


# --- annotations made from predictions --------------------------------------------------------


@pytest.mark.parametrize("export_format", ["annotation", "task"])
@pytest.mark.parametrize(
    ("case", "origin"), [("accepted", "prediction"), ("corrected", "prediction-changed")]
)
def test_label_studio_objects_say_an_annotation_came_from_a_prediction(
    export_format: str, case: str, origin: str
) -> None:
    raw = (FIXTURES / f"{export_format}-format-{case}-prediction.json").read_bytes()
    [annotation] = parse_export_bytes(raw, "k").annotations
    assert annotation.parent_prediction is not None
    assert annotation_origin(annotation) == origin
    # Only the per-task format carries the prediction itself (of the project's model version).
    assert (annotation.prediction_results is not None) == (export_format == "task")


def test_annotation_without_a_parent_prediction_is_manual() -> None:
    [annotation] = parse_export_bytes(ANNOTATION_FIXTURE.read_bytes(), "k").annotations
    assert annotation.parent_prediction is None
    assert annotation_origin(annotation) == "manual"


def prediction(results: list[dict], prediction_id: int = 7) -> dict:
    return {"id": prediction_id, "result": results, "model_version": "m:1@r", "score": 0.4}


@pytest.mark.parametrize("export_format", ["annotation", "task"])
def test_built_objects_carry_the_parent_prediction(export_format: str) -> None:
    proposed = [dict(rectangle(10, 10, 20, 20), id="p0", score=0.9)]
    accepted = [dict(proposed[0], origin="prediction")]
    built = build_export_object(
        export_format,
        annotation_id=3,
        task_id=4,
        image_uri="s3://b/t.png",
        results=accepted,
        parent_prediction=prediction(proposed),
    )
    [annotation] = parse_export_bytes(encode_export_object(built, export_format), "k").annotations
    assert annotation.parent_prediction == 7
    assert annotation_origin(annotation) == "prediction"


def test_the_task_format_sees_a_deleted_proposal_the_annotation_format_cannot() -> None:
    proposed = [dict(rectangle(10, 10, 20, 20), id="p0"), dict(rectangle(50, 50, 9, 9), id="p1")]
    kept = [dict(proposed[0], origin="prediction")]  # p1 deleted: it leaves no region behind
    origins = {}
    for export_format in ("annotation", "task"):
        built = build_export_object(
            export_format,
            annotation_id=1,
            task_id=1,
            image_uri="s3://b/t.png",
            results=kept,
            parent_prediction=prediction(proposed),
        )
        encoded = encode_export_object(built, export_format)
        [annotation] = parse_export_bytes(encoded, "k").annotations
        origins[export_format] = annotation_origin(annotation)
    assert origins == {"annotation": "prediction", "task": "prediction-changed"}


def test_float_noise_is_no_correction_but_a_moved_box_is() -> None:
    proposed = [rectangle(10, 10, 20, 20)]
    noisy = [rectangle(10.0000001, 10, 20, 20)]
    moved = [rectangle(10.5, 10, 20, 20)]
    for results, origin in ((noisy, "prediction"), (moved, "prediction-changed")):
        built = build_export_object(
            "task",
            annotation_id=1,
            task_id=1,
            image_uri="s3://b/t.png",
            results=results,  # no origin marks: the embedded prediction decides
            parent_prediction=prediction(proposed),
        )
        [annotation] = parse_export_bytes(encode_export_object(built, "task"), "k").annotations
        assert annotation_origin(annotation) == origin


def test_a_prediction_of_another_version_than_the_parent_is_not_compared() -> None:
    proposed = [rectangle(10, 10, 20, 20)]
    built = build_export_object(
        "task",
        annotation_id=1,
        task_id=1,
        image_uri="s3://b/t.png",
        results=[dict(proposed[0], origin="prediction")],
        parent_prediction=prediction(proposed),
    )
    built["annotations"][0]["prediction"]["id"] = 99  # the project's version, not the parent
    [annotation] = parse_export_bytes(encode_export_object(built, "task"), "k").annotations
    assert annotation.prediction_results is None
    assert annotation_origin(annotation) == "prediction"
