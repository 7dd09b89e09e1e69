"""The preprocess stage: parsing rules on every export-object case, the empty cap and the split,
and the whole stage against the embedded S3 server (stable bytes, summary, bad input)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.errors import SolarpipeError, UsageError
from components.core.manifest import Manifest, TileRecord, TileWindow, save_manifest
from components.core.params import SplitParams
from components.labelstudio.annotate import publish_objects
from components.labelstudio.export_objects import (
    PixelBox,
    build_export_object,
    encode_export_object,
    export_object_uri,
    rectangle_result,
)
from components.preprocess.__main__ import main as preprocess_main
from components.preprocess.parse import LabelledTile, ParseReport, labelled_tiles, read_object
from components.preprocess.split import assign_splits, cap_empty_tiles

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"
TILE = 64
CLASSES = ["solar_panel"]


def tile_uri(index: int) -> str:
    return f"s3://tiles/scene/t_{index:04d}.png"


def manifest_of(count: int, pixel_size_m: float | None = 0.1) -> Manifest:
    tiles = [
        TileRecord(
            key=uri_io.basename(tile_uri(i)),
            uri=tile_uri(i),
            window=TileWindow(col_off=i * TILE, row_off=0, width=TILE, height=TILE),
            width=TILE,
            height=TILE,
            sha256="0" * 64,
            bytes=1,
            transform=(0.1, 0.0, 2_600_000.0 + i * 6.4, 0.0, -0.1, 1_200_000.0),
        )
        for i in range(count)
    ]
    return Manifest(
        raster="scene.tif",
        scene="scene",
        crs="EPSG:2056",
        raster_width=TILE * count,
        raster_height=TILE,
        tile_size=TILE,
        overlap=0,
        tiles_prefix="s3://tiles/scene",
        tiles=tiles,
        pixel_size_m=pixel_size_m,
    )


def panel(xmin: float, ymin: float, xmax: float, ymax: float) -> dict[str, Any]:
    return rectangle_result(PixelBox(xmin, ymin, xmax, ymax), TILE, TILE, "solar_panel")


def export_object(
    task_id: int,
    results: list[dict[str, Any]],
    *,
    annotation_id: int | None = None,
    image: str | None = None,
    cancelled: bool = False,
    updated_at: str | None = None,
    export_format: str = "annotation",
) -> dict[str, Any]:
    built = build_export_object(
        export_format,
        annotation_id=annotation_id or task_id,
        task_id=task_id,
        image_uri=image or tile_uri(task_id),
        results=results,
    )
    annotation = built if export_format == "annotation" else built["annotations"][0]
    annotation["was_cancelled"] = cancelled
    if updated_at:
        annotation["updated_at"] = updated_at
    return built


def reading(export: dict[str, Any] | bytes, key: str = "s3://b/ann/1", fmt: str = "annotation"):
    data = export if isinstance(export, bytes) else encode_export_object(export, fmt)
    return read_object(key, data)


def parse(
    readings: list, tiles: int = 8, strict: bool = False
) -> tuple[list[LabelledTile], ParseReport]:
    return labelled_tiles(readings, manifest_of(tiles), CLASSES, 2.0, strict)


# --- parsing rules -------------------------------------------------------------------------


def test_fixture_objects_of_both_formats_give_the_same_tile() -> None:
    manifest = manifest_of(1).model_copy(deep=True)
    manifest.tiles[0].uri = "s3://tiles/prepared/images/tile_0.png"
    for name in ("annotation-format-example.json", "task-format-example.json"):
        readings = [read_object(f"s3://b/ann/{name}", (FIXTURES / name).read_bytes())]
        [tile], report = labelled_tiles(readings, manifest, CLASSES, 2.0, False)
        assert tile.boxes == ((6.4, 12.8, 25.6, 28.8),)
        assert (tile.labels, tile.task_id, report.objects_read) == (("solar_panel",), 1, 1)


def test_rotated_box_becomes_its_axis_aligned_enclosing_box() -> None:
    rotated = panel(20, 10, 40, 20)
    rotated["value"]["rotation"] = 90  # 20 x 10 px turned clockwise about (20, 10)
    [tile], _ = parse([reading(export_object(1, [rotated]))])
    assert tile.boxes == ((10, 10, 20, 30),)


def test_boxes_are_clipped_to_the_tile_and_degenerate_ones_dropped() -> None:
    overhanging = panel(50, -10, 80, 20)
    sliver = panel(10, 10, 11, 30)  # 1 px wide < preprocess.min_box_size
    outside = panel(70, 70, 90, 90)  # entirely past the edge: clipped to nothing
    [tile], report = parse([reading(export_object(1, [overhanging, sliver, outside]))])
    assert tile.boxes == ((50, 0, 64, 20),)
    assert report.skipped["degenerate box (< preprocess.min_box_size)"] == 2


def test_cancelled_task_is_left_out() -> None:
    tiles, report = parse([reading(export_object(1, [panel(1, 1, 9, 9)], cancelled=True))])
    assert tiles == [] and report.skipped["cancelled (skipped) task"] == 1


def test_latest_non_cancelled_annotation_wins() -> None:
    first = export_object(
        1, [panel(1, 1, 9, 9)], annotation_id=10, updated_at="2026-01-01T00:00:00Z"
    )
    updated = export_object(
        1, [panel(20, 20, 30, 30)], annotation_id=11, updated_at="2026-01-02T00:00:00Z"
    )
    cancelled_later = export_object(
        1, [], annotation_id=12, cancelled=True, updated_at="2026-01-03T00:00:00Z"
    )
    readings = [reading(o, f"s3://b/ann/{o['id']}") for o in (updated, cancelled_later, first)]
    [tile], _ = parse(readings)
    assert tile.boxes == ((20, 20, 30, 30),)


def test_same_timestamp_the_higher_annotation_id_wins() -> None:
    older = export_object(1, [panel(1, 1, 9, 9)], annotation_id=21)
    newer = export_object(1, [panel(2, 2, 9, 9)], annotation_id=22)
    [tile], _ = parse([reading(newer, "s3://b/a/22"), reading(older, "s3://b/a/21")])
    assert tile.boxes == ((2, 2, 9, 9),)


def test_updated_object_of_one_annotation_replaces_the_older_copy() -> None:
    copy_before = export_object(1, [panel(1, 1, 9, 9)], updated_at="2026-01-01T00:00:00Z")
    copy_after = export_object(1, [], updated_at="2026-01-05T00:00:00Z")
    per_task = reading(copy_before, "s3://b/ann/1.json")
    [tile], _ = parse([reading(copy_after, "s3://b/ann/1"), per_task])
    assert tile.boxes == ()


def test_empty_result_is_kept_as_no_panels() -> None:
    [tile], report = parse([reading(export_object(3, []))])
    assert (tile.image, tile.boxes, tile.has_panels) == (tile_uri(3), (), False)
    assert not report.skipped


def test_unlabeled_task_is_left_out_and_predictions_are_ignored() -> None:
    unlabeled = json.loads((FIXTURES / "task-format-example.json").read_text())
    unlabeled.update(id=2, annotations=[], data={"image": tile_uri(2)})
    unlabeled["predictions"] = [{"id": 5, "result": [panel(1, 1, 30, 30)], "score": 0.9}]
    labelled = export_object(3, [panel(5, 5, 15, 15)], export_format="task")
    labelled["predictions"] = [{"id": 6, "result": [panel(40, 40, 60, 60)]}]
    tiles, report = parse(
        [
            reading(unlabeled, "s3://b/ann/2.json", "task"),
            reading(labelled, "s3://b/ann/3.json", "task"),
        ]
    )
    assert [(t.image, t.boxes) for t in tiles] == [(tile_uri(3), ((5, 5, 15, 15),))]
    assert report.skipped["unlabeled task"] == 1


def test_polygon_gives_its_bounding_box_and_other_types_are_counted() -> None:
    polygon = {
        "type": "polygonlabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": TILE,
        "original_height": TILE,
        "value": {"points": [[25, 25], [50, 12.5], [37.5, 50]], "polygonlabels": ["solar_panel"]},
    }
    choice = {"type": "choices", "from_name": "quality", "value": {"choices": ["blurry"]}}
    keypoint = {"type": "keypointlabels", "value": {"x": 1, "y": 1, "keypointlabels": ["x"]}}
    [tile], report = parse([reading(export_object(1, [polygon, choice, keypoint]))])
    assert tile.boxes == ((16, 8, 32, 32),)
    assert report.skipped["result of type choices"] == 1
    assert report.skipped["result of type keypointlabels"] == 1


def test_label_outside_the_configured_classes_is_skipped() -> None:
    other = panel(1, 1, 20, 20)
    other["value"]["rectanglelabels"] = ["chimney"]
    [tile], report = parse([reading(export_object(1, [other, panel(30, 30, 40, 40)]))])
    assert tile.boxes == ((30, 30, 40, 40),)
    assert report.skipped["label 'chimney' not in labelstudio.labels"] == 1


def test_images_not_in_the_manifest_are_reported() -> None:
    stray = export_object(1, [panel(1, 1, 9, 9)], image="s3://elsewhere/other.png")
    tiles, report = parse([reading(stray), reading(export_object(2, []), "s3://b/ann/2")])
    assert [t.image for t in tiles] == [tile_uri(2)]
    assert report.not_in_manifest == ["s3://elsewhere/other.png"]


def test_double_slash_keys_are_normalised_and_counted_once() -> None:
    export = export_object(12, [panel(1, 1, 9, 9)])
    readings = [reading(export, "s3://b/ann//12"), reading(export, "s3://b/ann/12")]
    [tile], report = parse(readings, tiles=13)
    assert readings[0].key == "s3://b/ann/12"
    assert (report.keys_normalised, report.objects_read, tile.task_id) == (1, 2, 12)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<html>not json</html>", "not JSON"),
        (
            json.dumps({"id": 4, "task": {"id": 4, "data": {"image": tile_uri(4)}}}).encode(),
            "result",
        ),
    ],
    ids=["not-json", "missing-result"],
)
def test_malformed_object_is_reported_by_key_and_skipped(payload: bytes, reason: str) -> None:
    good = reading(export_object(1, [panel(1, 1, 9, 9)]))
    tiles, report = parse([read_object("s3://b/ann//4", payload), good])
    assert [t.task_id for t in tiles] == [1]
    [(key, problem)] = report.malformed
    assert key == "s3://b/ann/4" and reason in problem


def test_strict_mode_makes_a_malformed_object_fatal() -> None:
    with pytest.raises(SolarpipeError, match=r"s3://b/ann/4: not JSON"):
        parse([read_object("s3://b/ann/4", b"{"), reading(export_object(1, []))], strict=True)
    broken = panel(1, 1, 9, 9)
    del broken["value"]["x"]
    with pytest.raises(SolarpipeError, match="s3://b/ann/1: a result"):
        parse([reading(export_object(1, [broken]))], strict=True)


# --- empty cap and split -------------------------------------------------------------------


def tiles_with(panels: int, empty: int) -> list[LabelledTile]:
    stamp = (datetime(2026, 1, 1, tzinfo=UTC), 0)
    boxes = ((1.0, 1.0, 9.0, 9.0),)
    return [
        LabelledTile(
            tile_uri(i),
            TILE,
            TILE,
            boxes if i < panels else (),
            ("solar_panel",) * (i < panels),
            i,
            stamp,
        )
        for i in range(panels + empty)
    ]


def test_empty_tiles_are_capped_by_a_seeded_choice() -> None:
    tiles = tiles_with(panels=10, empty=30)
    kept, dropped = cap_empty_tiles(tiles, 0.5, seed=1)
    assert (sum(not t.has_panels for t in kept), dropped) == (10, 20)
    assert cap_empty_tiles(tiles, 0.5, seed=1)[0] == kept
    assert cap_empty_tiles(tiles, 0.5, seed=2)[0] != kept
    assert cap_empty_tiles(tiles, 0.2, seed=1)[1] == 28  # 2 empty per 8 with panels
    assert cap_empty_tiles(tiles, None, seed=1) == (tiles, 0)


def test_split_is_stratified_and_follows_the_fractions() -> None:
    tiles = tiles_with(panels=20, empty=20)
    assignment = assign_splits(tiles, SplitParams(train=0.7, val=0.15, test=0.15), seed=3)
    for name, expected in (("train", 14), ("val", 3), ("test", 3)):
        members = [t for t in tiles if assignment[t.image] == name]
        assert sum(t.has_panels for t in members) == expected
        assert sum(not t.has_panels for t in members) == expected


def test_split_gives_val_and_test_tiles_with_panels_even_when_few() -> None:
    tiles = tiles_with(panels=3, empty=40)
    assignment = assign_splits(tiles, SplitParams(train=0.9, val=0.05, test=0.05), seed=0)
    with_panels = sorted(assignment[t.image] for t in tiles if t.has_panels)
    assert with_panels == ["test", "train", "val"]


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    tiles = tiles_with(panels=15, empty=15)
    split = SplitParams()
    first = assign_splits(tiles, split, seed=5)
    assert assign_splits(list(reversed(tiles)), split, seed=5) == first
    assert assign_splits(tiles, split, seed=6) != first


def test_split_that_leaves_val_or_test_empty_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"preprocess\.split\.test"):
        assign_splits(tiles_with(10, 0), SplitParams(train=0.8, val=0.2, test=0.0), seed=0)
    with pytest.raises(UsageError, match=r"only 2 tiles with panels: preprocess\.split"):
        assign_splits(tiles_with(2, 10), SplitParams(), seed=0)


# --- the stage on the embedded S3 ----------------------------------------------------------


def write_scenario(
    bucket: str, export_format: str = "annotation", pixel_size_m: float | None = 0.1
) -> tuple[str, str]:
    """Eight tiles: six with panels, one empty, one cancelled; plus one malformed object."""
    manifest_uri = f"s3://{bucket}/manifest.json"
    save_manifest(manifest_uri, manifest_of(8, pixel_size_m))
    prefix = f"s3://{bucket}/annotations"
    objects = {}
    for task_id in range(6):
        export = export_object(
            task_id, [panel(task_id, 2, task_id + 10, 12)], export_format=export_format
        )
        objects[export_object_uri(prefix, export_format, task_id, task_id)] = encode_export_object(
            export, export_format
        )
    objects[f"{prefix}/6"] = encode_export_object(export_object(6, []), "annotation")
    objects[f"{prefix}/7"] = encode_export_object(
        export_object(7, [], cancelled=True), "annotation"
    )
    objects[f"{prefix}/99"] = b"not json"
    publish_objects(objects, workers=8, desc="test")
    return prefix, manifest_uri


def run_preprocess(prefix: str, manifest: str, out: str, *overrides: str) -> int:
    argv = ["--annotations", prefix, "--manifest", manifest, "--out", out]
    for override in overrides:
        argv += ["--set", override]
    return preprocess_main(argv)


@pytest.mark.parametrize("export_format", ["annotation", "task"])
def test_stage_writes_annotations_and_prints_the_summary(
    bucket: str, export_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix, manifest = write_scenario(bucket, export_format)
    out = f"s3://{bucket}/out/annotations.json"
    assert run_preprocess(prefix, manifest, out, "preprocess.max_empty_fraction=null") == 0
    annotations = load_annotations(out)
    assert [i.image for i in annotations.images] == [tile_uri(i) for i in range(7)]
    assert annotations.images[2].boxes == [(2, 2, 12, 12)]
    assert annotations.images[6].boxes == []
    assert {i.split for i in annotations.images if i.boxes} == {"train", "val", "test"}
    assert annotations.pixel_size_m == 0.1
    printed = capsys.readouterr()
    assert "9 objects read, 8 tasks, 7 kept (1 without panels), 6 boxes" in printed.out
    assert "1 cancelled (skipped) task, 1 malformed (object or result)" in printed.out
    assert f"{prefix}/99" in printed.err


def test_same_input_gives_the_same_bytes(bucket: str, tmp_path: Path) -> None:
    prefix, manifest = write_scenario(bucket)
    first, second = tmp_path / "a" / "annotations.json", tmp_path / "b"
    assert run_preprocess(prefix, manifest, str(first)) == 0
    assert run_preprocess(prefix, manifest, str(second)) == 0  # a folder gets annotations.json
    assert first.read_bytes() == (second / "annotations.json").read_bytes()


def test_manifest_from_before_pixel_sizes_gives_annotations_without_one(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix, manifest = write_scenario(bucket, pixel_size_m=None)
    out = tmp_path / "annotations.json"

    assert run_preprocess(prefix, manifest, str(out)) == 0

    assert load_annotations(str(out)).pixel_size_m is None
    assert "records no pixel size (prepared before pixel sizes were recorded)" in (
        capsys.readouterr().err
    )


def test_listing_follows_pagination(bucket: str, tmp_path: Path) -> None:
    manifest_uri = f"s3://{bucket}/manifest.json"
    save_manifest(manifest_uri, manifest_of(1100))
    prefix = f"s3://{bucket}/many"
    objects = {
        f"{prefix}/{i}": encode_export_object(
            export_object(i, [panel(1, 1, 9, 9)] if i % 2 else []), "annotation"
        )
        for i in range(1100)
    }
    publish_objects(objects, workers=16, desc="test")
    out = tmp_path / "annotations.json"
    assert run_preprocess(prefix, manifest_uri, str(out)) == 0
    assert len(load_annotations(str(out)).images) == 1100


def test_empty_prefix_fails_with_a_hint(bucket: str, tmp_path: Path, capsys) -> None:
    save_manifest(f"s3://{bucket}/manifest.json", manifest_of(2))
    out = tmp_path / "annotations.json"
    code = run_preprocess(f"s3://{bucket}/nothing", f"s3://{bucket}/manifest.json", str(out))
    error = capsys.readouterr().err
    assert code == 1 and "solarpipe labelstudio setup" in error and "annotate-from-truth" in error
    assert not out.exists()


def test_missing_manifest_is_named(bucket: str, tmp_path: Path, capsys) -> None:
    prefix, _ = write_scenario(bucket)
    code = run_preprocess(prefix, f"s3://{bucket}/nope.json", str(tmp_path / "a.json"))
    assert code == 1
    assert f"manifest not found: s3://{bucket}/nope.json" in capsys.readouterr().err


def test_failures_leave_the_previous_output_whole(bucket: str, tmp_path: Path, capsys) -> None:
    prefix, manifest = write_scenario(bucket)
    out = tmp_path / "annotations.json"
    assert run_preprocess(prefix, manifest, str(out)) == 0
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    assert run_preprocess(prefix, manifest, str(out), "preprocess.strict=true") == 1
    assert "malformed export object" in capsys.readouterr().err
    code = run_preprocess(
        prefix, manifest, str(out), "preprocess.split.val=0", "preprocess.split.train=0.85"
    )
    assert code == 2 and "preprocess.split.val" in capsys.readouterr().err
    assert run_preprocess(prefix, manifest, str(out), "preprocess.seed=oops") == 2
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.json"]


@pytest.mark.parametrize("export_format", ["annotation", "task"])
def test_annotations_from_predictions_are_kept_and_counted(
    bucket: str, export_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accepted and corrected predictions are human annotations; a prediction alone is not."""
    manifest_uri = f"s3://{bucket}/manifest.json"
    save_manifest(manifest_uri, manifest_of(4))
    prefix = f"s3://{bucket}/annotations"
    proposed = [dict(panel(4, 4, 20, 20), id="p0", score=0.8)]
    model_prediction = {"id": 50, "result": proposed, "model_version": "m:1@r", "score": 0.3}
    accepted = [dict(proposed[0], origin="prediction")]
    corrected = [dict(panel(6, 4, 22, 20), id="p0", origin="prediction-changed")]
    cases = {0: ([panel(1, 1, 9, 9)], None), 1: (accepted, model_prediction)}
    cases[2] = (corrected, {**model_prediction, "id": 51})
    objects = {}
    for task_id, (results, parent) in cases.items():
        export = build_export_object(
            export_format,
            annotation_id=task_id + 1,
            task_id=task_id,
            image_uri=tile_uri(task_id),
            results=results,
            parent_prediction=parent,
        )
        key = export_object_uri(prefix, export_format, task_id, task_id + 1)
        objects[key] = encode_export_object(export, export_format)
    if export_format == "task":  # a task with a prediction and no annotation: not ground truth
        unlabeled = json.loads((FIXTURES / "task-format-example.json").read_text())
        unlabeled.update(id=3, annotations=[], data={"image": tile_uri(3)}, predictions=[52])
        objects[f"{prefix}/3.json"] = encode_export_object(unlabeled, "task")
    publish_objects(objects, workers=4, desc="test")
    out = f"s3://{bucket}/out/annotations.json"
    assert run_preprocess(prefix, manifest_uri, out, "preprocess.max_empty_fraction=null") == 0
    images = {image.image: image for image in load_annotations(out).images}
    assert sorted(images) == [tile_uri(0), tile_uri(1), tile_uri(2)]
    origins = [images[tile_uri(i)].origin for i in range(3)]
    assert origins == ["manual", "prediction", "prediction-changed"]
    assert images[tile_uri(1)].boxes == [(4, 4, 20, 20)]
    assert images[tile_uri(2)].boxes == [(6, 4, 22, 20)]
    printed = capsys.readouterr().out
    assert (
        "annotations: 1 drawn by hand, 1 from accepted predictions, 1 from corrected predictions"
        in printed
    )
