"""``solarpipe labelstudio annotate-from-truth`` on the embedded S3: the objects it writes look
like Label Studio's, and preprocess turns them back into the truth boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.manifest import (
    Manifest,
    TileRecord,
    TileWindow,
    load_manifest,
    save_manifest,
)
from components.preprocess.__main__ import main as preprocess_main

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"
ORIGIN_X, ORIGIN_Y, RESOLUTION = 2_600_000.0, 1_200_000.0, 0.1
TILE = 64

# Panels in raster pixels (x right, y down) as polygons.
SQUARE = [(10, 10), (30, 10), (30, 20), (10, 20)]
ACROSS_TILES = [(50, 30), (80, 30), (80, 40), (50, 40)]
DIAMOND = [(96, 86), (106, 96), (96, 106), (86, 96)]  # a square turned 45°
EDGE_SLIVER = [(62.5, 70), (70, 70), (70, 80), (62.5, 80)]  # 1.5 px visible in tile (0, 64)

# What each tile (manifest order: row by row) should hold, in tile pixels.
EXPECTED_BOXES = {
    "scene_0_0.png": [(10, 10, 30, 20), (50, 30, 64, 40)],
    "scene_64_0.png": [(0, 30, 16, 40)],
    "scene_0_64.png": [],
    "scene_64_64.png": [(0, 6, 6, 16), (22, 22, 42, 42)],
}


def to_map(x: float, y: float) -> list[float]:
    return [ORIGIN_X + x * RESOLUTION, ORIGIN_Y - y * RESOLUTION]


def write_inputs(bucket: str) -> tuple[str, str, str]:
    tiles_prefix = f"s3://{bucket}/tiles"
    tiles = []
    for row_off in (0, TILE):
        for col_off in (0, TILE):
            key = f"scene_{col_off}_{row_off}.png"
            tiles.append(
                TileRecord(
                    key=key,
                    uri=uri_io.join(tiles_prefix, key),
                    window=TileWindow(col_off=col_off, row_off=row_off, width=TILE, height=TILE),
                    width=TILE,
                    height=TILE,
                    sha256="0" * 64,
                    bytes=1,
                    transform=(
                        RESOLUTION,
                        0.0,
                        ORIGIN_X + col_off * RESOLUTION,
                        0.0,
                        -RESOLUTION,
                        ORIGIN_Y - row_off * RESOLUTION,
                    ),
                )
            )
    manifest = Manifest(
        raster=f"s3://{bucket}/scene.tif",
        scene="scene",
        crs="EPSG:2056",
        raster_width=2 * TILE,
        raster_height=2 * TILE,
        tile_size=TILE,
        overlap=0,
        tiles_prefix=tiles_prefix,
        tiles=tiles,
    )
    manifest_uri = f"s3://{bucket}/manifest.json"
    save_manifest(manifest_uri, manifest)
    features = [
        {
            "type": "Feature",
            "properties": {"label": "solar_panel"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[to_map(*p) for p in [*ring, ring[0]]]],
            },
        }
        for ring in (SQUARE, ACROSS_TILES, DIAMOND, EDGE_SLIVER)
    ]
    truth_uri = f"s3://{bucket}/scene.geojson"
    uri_io.write_json(truth_uri, {"type": "FeatureCollection", "features": features})
    return manifest_uri, truth_uri, f"s3://{bucket}/annotations"


def annotate(manifest: str, truth: str, prefix: str, *extra: str) -> int:
    argv = ["labelstudio", "annotate-from-truth", "--manifest", manifest, "--truth", truth]
    return solarpipe([*argv, "--annotations", prefix, *extra])


def object_keys(prefix: str) -> list[str]:
    return sorted(info.uri.removeprefix(prefix + "/") for info in uri_io.list_objects(prefix))


@pytest.mark.parametrize(
    ("export_format", "keys"),
    [("annotation", ["1", "2", "3", "4"]), ("task", ["1.json", "2.json", "3.json", "4.json"])],
)
def test_round_trip_through_preprocess_recovers_the_truth_boxes(
    bucket: str, tmp_path: Path, export_format: str, keys: list[str], capsys
) -> None:
    manifest, truth, prefix = write_inputs(bucket)
    assert annotate(manifest, truth, prefix, "--format", export_format) == 0
    assert (
        "4 export objects (4 written, 0 unchanged), 5 boxes, 1 tiles without panels, 1 slivers"
        in (capsys.readouterr().out)
    )
    assert object_keys(prefix) == keys
    out = tmp_path / "annotations.json"
    code = preprocess_main(["--annotations", prefix, "--manifest", manifest, "--out", str(out)])
    assert code == 0
    images = {uri_io.basename(image.image): image for image in load_annotations(str(out)).images}
    assert {name: image.boxes for name, image in images.items()} == EXPECTED_BOXES
    assert all(image.labels == ["solar_panel"] * len(image.boxes) for image in images.values())
    assert images["scene_64_64.png"].task_id == 4


def test_objects_look_like_label_studio_wrote_them(bucket: str) -> None:
    manifest, truth, prefix = write_inputs(bucket)
    assert annotate(manifest, truth, prefix) == 0
    written = uri_io.read_json(f"{prefix}/1")
    fixture = json.loads((FIXTURES / "annotation-format-example.json").read_text())
    assert written.keys() == fixture.keys() and written["task"].keys() == fixture["task"].keys()
    assert (written["id"], written["task"]["id"]) == (1, 1)
    assert written["task"]["data"] == {"image": f"s3://{bucket}/tiles/scene_0_0.png"}
    first = written["result"][0]
    assert set(fixture["result"][0]) <= set(first)
    assert (first["original_width"], first["original_height"]) == (TILE, TILE)
    assert first["value"]["rectanglelabels"] == ["solar_panel"]
    assert [first["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
        [10 / 64 * 100, 10 / 64 * 100, 20 / 64 * 100, 10 / 64 * 100]
    )
    assert uri_io.read_json(f"{prefix}/3")["result"] == []  # no panels: an empty result


def test_rerun_uploads_nothing(bucket: str, capsys) -> None:
    manifest, truth, prefix = write_inputs(bucket)
    assert annotate(manifest, truth, prefix) == 0
    etags = {info.uri: info.etag for info in uri_io.list_objects(prefix)}
    capsys.readouterr()
    assert annotate(manifest, truth, prefix) == 0
    assert "(0 written, 4 unchanged)" in capsys.readouterr().out
    assert {info.uri: info.etag for info in uri_io.list_objects(prefix)} == etags


def test_missing_or_bad_inputs_fail_with_one_line(bucket: str, capsys) -> None:
    manifest, truth, prefix = write_inputs(bucket)
    assert annotate(manifest, f"s3://{bucket}/missing.geojson", prefix) == 1
    assert f"s3://{bucket}/missing.geojson" in capsys.readouterr().err
    uri_io.write_json(f"s3://{bucket}/list.geojson", [1, 2])
    assert annotate(manifest, f"s3://{bucket}/list.geojson", prefix) == 1
    assert "not a GeoJSON FeatureCollection" in capsys.readouterr().err
    assert annotate(f"s3://{bucket}/nope.json", truth, prefix) == 1
    assert f"s3://{bucket}/nope.json" in capsys.readouterr().err
    assert annotate(manifest, truth, prefix, "--set", "labelstudio.export_format=csv") == 2
    assert "labelstudio.export_format" in capsys.readouterr().err
    assert object_keys(prefix) == []


def test_synthetic_scene_through_prepare_annotate_preprocess_and_preview(
    bucket: str, tmp_path: Path
) -> None:
    """The real upstream: synth writes the scene and truth, prepare cuts the tiles."""
    from components.prepare.__main__ import main as prepare_main
    from components.preview.__main__ import main as preview_main
    from components.synth.geotiff import write_scene

    scene = write_scene(f"s3://{bucket}/scene.tif", size=512, seed=3)
    manifest, prefix = f"s3://{bucket}/manifest.json", f"s3://{bucket}/annotations"
    tiles = f"s3://{bucket}/tiles"
    argv = ["--raster", scene.raster_uri, "--tiles", tiles, "--manifest", manifest]
    assert prepare_main([*argv, "--set", "prepare.tile_size=128"]) == 0
    assert annotate(manifest, scene.truth_uri, prefix) == 0
    out = tmp_path / "annotations.json"
    argv = ["--annotations", prefix, "--manifest", manifest, "--out", str(out)]
    assert preprocess_main([*argv, "--set", "preprocess.max_empty_fraction=null"]) == 0
    images = load_annotations(str(out)).images
    assert len(images) == 16
    # Every panel that lies inside one tile comes back as its enclosing box in that tile.
    tiles_of = {t.uri: t for t in load_manifest(manifest).tiles}
    top_left = next(t for t in tiles_of.values() if t.window.col_off == t.window.row_off == 0)
    origin = top_left.transform[2], top_left.transform[5]  # raster corner in map coordinates
    boxes_by_tile = {
        (tiles_of[i.image].window.col_off, tiles_of[i.image].window.row_off): i.boxes
        for i in images
    }
    inside = 0
    for feature in uri_io.read_json(scene.truth_uri)["features"]:
        ring = feature["geometry"]["coordinates"][0]
        xs = [(east - origin[0]) / RESOLUTION for east, _ in ring]
        ys = [(origin[1] - north) / RESOLUTION for _, north in ring]
        col, row = int(min(xs) // 128) * 128, int(min(ys) // 128) * 128
        if max(xs) > col + 128 or max(ys) > row + 128:
            continue
        inside += 1
        expected = (min(xs) - col, min(ys) - row, max(xs) - col, max(ys) - row)
        assert any(box == pytest.approx(expected, abs=0.02) for box in boxes_by_tile[(col, row)])
    assert inside >= 3, "the scene should hold panels inside single tiles"
    assert sum(len(i.boxes) for i in images) >= scene.panel_count
    assert preview_main(["--annotations", str(out), "--out", str(tmp_path / "preview")]) == 0
    assert (tmp_path / "preview" / "index.html").exists()
