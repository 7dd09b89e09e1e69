"""The detect stage: windows over the whole raster, the exported model, seam merging, GeoJSON in
the raster's CRS; plus the window ownership and seam-merge rules on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine

from components.cli import main as solarpipe_main
from components.core import uri as uri_io
from components.detect.__main__ import main as detect_main
from components.ml.scripted import load_scripted_model
from components.raster.geojson import box_ring
from components.raster.windows import plan_grid
from components.shards.seams import merge_at_seams
from tests.detector_fixture import IMAGE_SIZE, cached_export
from tests.mosaics import cut_into_files
from tests.rasters import write_geotiff

GROUND, PANEL = 10, 250


@pytest.fixture(scope="module")
def exported_at_10cm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose checkpoint records its 0.1 m pixels."""
    return cached_export(tmp_path_factory.getbasetemp(), pixel_size_m=0.1)


def run_detect(raster: str, model: str, out: str, *overrides: str) -> int:
    argv = ["--raster", raster, "--model", model, "--out", out]
    for override in overrides:
        argv += ["--set", override]
    return detect_main(argv)


def panel_raster(path: Path, height: int, width: int, **geotiff: Any) -> Path:
    """Dark ground with a few bright panels, EPSG:2056 at 0.1 m unless ``geotiff`` says
    otherwise (tests/rasters.py)."""
    pixels = np.full((3, height, width), GROUND, dtype=np.uint8)
    for row, col in ((20, 30), (70, 150), (height - 50, width - 60)):
        pixels[:, row : row + 30, col : col + 40] = PANEL
    return write_geotiff(path, pixels, **geotiff)


def model_boxes_on_windows(
    model: Path, raster: Path, columns: list[int], edge: int
) -> tuple[list[torch.Tensor], list[float], Affine]:
    """The model's boxes (raster pixels) and scores on ``edge``-px windows of the first rows
    at ``columns``, as detect should gather them without overlap or merging."""
    with rasterio.open(raster) as dataset:
        pixels = np.ascontiguousarray(dataset.read().transpose(1, 2, 0))
        transform = dataset.transform
    windows = [torch.from_numpy(pixels[:edge, col : col + edge].copy()) for col in columns]
    with torch.inference_mode():
        outputs = load_scripted_model(str(model))(windows, 0.3)
    boxes = [
        box + torch.tensor([col, 0, col, 0])
        for col, output in zip(columns, outputs, strict=True)
        for box in output["boxes"].double()
    ]
    return boxes, torch.cat([output["scores"] for output in outputs]).tolist(), transform


def test_each_windows_boxes_land_at_their_place_in_map_coordinates(
    exported: Path, tmp_path: Path
) -> None:
    """Two side-by-side windows, no overlap, no merging: the output is exactly the model's
    boxes on each window, shifted by the window's offset and mapped by the geotransform."""
    raster = panel_raster(tmp_path / "scene.tif", IMAGE_SIZE, 2 * IMAGE_SIZE)
    out = tmp_path / "panels.geojson"

    assert (
        run_detect(str(raster), str(exported), str(out), "detect.overlap=0", "detect.nms_iou=1")
        == 0
    )

    shifted, expected_scores, transform = model_boxes_on_windows(
        exported, raster, [0, IMAGE_SIZE], IMAGE_SIZE
    )
    collection = uri_io.read_json(str(out))
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::2056"
    assert_features_are(collection, shifted, expected_scores, transform)


def assert_features_are(
    collection: dict, boxes: list[torch.Tensor], scores: list[float], transform: Affine
) -> None:
    assert len(collection["features"]) == len(boxes) > 0
    expected_rings = sorted(box_ring(tuple(box.tolist()), transform) for box in boxes)
    rings = sorted(f["geometry"]["coordinates"][0] for f in collection["features"])
    np.testing.assert_allclose(np.array(rings), np.array(expected_rings), atol=1e-6)
    found_scores = [f["properties"]["score"] for f in collection["features"]]
    assert sorted(found_scores) == pytest.approx(sorted(scores), abs=1e-4)


def test_coarser_raster_is_read_in_windows_covering_the_models_ground(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0.2 m raster and a 0.1 m model: each window spans 64 raster pixels (the ground of
    the model's 128), the model enlarges it to its input, and the boxes come back in raster
    pixels, mapped by the raster's own geotransform."""
    half = IMAGE_SIZE // 2
    raster = panel_raster(tmp_path / "coarse.tif", half, 2 * half, resolution=0.2)
    out = tmp_path / "panels.geojson"

    status = run_detect(
        str(raster), str(exported_at_10cm), str(out), "detect.overlap=0", "detect.nms_iou=1"
    )

    assert status == 0
    printed = capsys.readouterr()
    assert "in 2 windows of 64x64 px (raster 0.2 m resampled to the model's 0.1 m" in printed.out
    assert "records no pixel size" not in printed.err
    boxes, scores, transform = model_boxes_on_windows(exported_at_10cm, raster, [0, half], half)
    assert_features_are(uri_io.read_json(str(out)), boxes, scores, transform)


def test_landsat_pixels_are_refused_in_one_line_naming_both_pixel_sizes(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like rasterio's RGB.byte.tif: Landsat RGB in UTM 18 N at 30 m."""
    raster = panel_raster(tmp_path / "landsat.tif", 64, 64, crs="EPSG:32618", resolution=30.0)
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported_at_10cm), str(out)) == 1

    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"components.detect: error: the raster's pixel size (30 m) is 300x coarser than the "
        f"model's (0.1 m), outside the 0.25x-4x that detect resamples: {raster} "
        "(--set detect.resample=force to run anyway)"
    ]
    assert not out.exists()


def test_forced_resampling_runs_outside_the_range(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = panel_raster(tmp_path / "metre.tif", 40, 40, resolution=1.0)
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported_at_10cm), str(out)) == 1
    assert "10x coarser" in capsys.readouterr().err
    assert run_detect(str(raster), str(exported_at_10cm), str(out), "detect.resample=force") == 0
    assert "windows of 13x13 px (raster 1 m resampled" in capsys.readouterr().out
    assert uri_io.read_json(str(out))["type"] == "FeatureCollection"


def test_resampling_never_reads_the_rasters_own_pixels_with_a_warning(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = panel_raster(tmp_path / "coarse.tif", 64, 64, resolution=0.2)
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported_at_10cm), str(out), "detect.resample=never") == 0

    printed = capsys.readouterr()
    assert "windows of 128x128 px (raster 0.2 m, model 0.1 m" in printed.out
    assert "detect.resample=never: the raster's 0.2 m pixels are read as the model's" in printed.err


def test_geographic_raster_is_resampled_by_its_metres_and_mapped_in_degrees(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """EPSG:4326 pixels of 1e-6 degrees at 47° N are 0.0761 m across and 0.111 m down: the
    windows cover the model's 12.8 m square, so more columns than rows."""
    pixels = np.full((3, 150, 200), GROUND, dtype=np.uint8)
    pixels[:, 40:60, 50:80] = PANEL
    degree = 1e-6
    raster = tmp_path / "wgs84.tif"
    with rasterio.open(
        raster, "w", driver="GTiff", width=200, height=150, count=3, dtype="uint8",
        crs="EPSG:4326", transform=Affine(degree, 0, 7.44, 0, -degree, 47.0),
    ) as dataset:  # fmt: skip
        dataset.write(pixels)
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported_at_10cm), str(out)) == 0

    printed = capsys.readouterr().out
    assert "windows of 168x115 px (raster 0.0761 x 0.111 m (geographic CRS, at its centre)" in (
        printed
    )
    collection = uri_io.read_json(str(out))
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326"
    for feature in collection["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert ring[:, 0].min() >= 7.44 and ring[:, 0].max() <= 7.44 + 200 * degree
        assert ring[:, 1].min() >= 47.0 - 150 * degree and ring[:, 1].max() <= 47.0


def test_raster_without_a_geotransform_is_refused(
    exported_at_10cm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = tmp_path / "plain.tif"
    with rasterio.open(
        raster, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
        crs="EPSG:2056",
    ) as dataset:  # fmt: skip
        dataset.write(np.zeros((3, 64, 64), dtype=np.uint8))
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported_at_10cm), str(out)) == 1

    assert capsys.readouterr().err.strip() == (
        f"components.detect: error: raster has no geotransform, so its pixel size is unknown: "
        f"{raster} (georeference it first)"
    )


def test_model_without_a_pixel_size_is_taken_as_10_cm_with_a_warning(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = panel_raster(tmp_path / "coarse.tif", 64, 64, resolution=0.2)
    out = tmp_path / "panels.geojson"

    assert run_detect(str(raster), str(exported), str(out)) == 0

    printed = capsys.readouterr()
    assert "records no pixel size (exported before pixel sizes were recorded): assuming 0.1 m" in (
        printed.err
    )
    assert "windows of 64x64 px (raster 0.2 m resampled to the model's 0.1 m" in printed.out


def test_s3_raster_with_many_windows_gives_geojson_gdal_reads(
    exported: Path, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 200, 300)
    uri_io.upload_file(raster, f"s3://{bucket}/rasters/scene.tif")
    uri_io.upload_file(exported / "model.pt", f"s3://{bucket}/export/model.pt")
    out = f"s3://{bucket}/detect/panels.geojson"

    status = run_detect(
        f"s3://{bucket}/rasters/scene.tif",
        f"s3://{bucket}/export",
        out,
        "detect.overlap=32",
        "detect.batch_size=4",
    )

    assert status == 0
    assert "in 6 windows of 128x128 px" in capsys.readouterr().out  # 3 columns x 2 rows
    local = tmp_path / "panels.geojson"
    uri_io.download_file(out, local)
    info = pyogrio.read_info(local)
    assert info["crs"] == "EPSG:2056" and info["geometry_type"] == "Polygon"
    collection = uri_io.read_json(str(local))
    assert info["features"] == len(collection["features"]) > 0
    x_min, y_max = Affine(0.1, 0, 2_600_000.0, 0, -0.1, 1_200_000.0) * (0, 0)
    x_max, y_min = Affine(0.1, 0, 2_600_000.0, 0, -0.1, 1_200_000.0) * (300, 200)
    for feature in collection["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert x_min <= ring[:, 0].min() and ring[:, 0].max() <= x_max
        assert y_min <= ring[:, 1].min() and ring[:, 1].max() <= y_max
        assert feature["properties"]["score"] >= 0.3


def test_every_pixel_is_owned_by_exactly_one_window() -> None:
    grid = plan_grid(width=300, height=200, window=128, overlap=32)
    assert grid.column_offsets == [0, 96, 192] and grid.row_offsets == [0, 96]
    assert grid.column_cuts == [112.0, 208.0]  # the middle of each overlap
    owners = np.zeros((200, 300), dtype=int)
    centres_y, centres_x = np.mgrid[0:200, 0:300] + 0.5
    for row_index, column_index, window in grid.windows():
        x0, y0, x1, y1 = grid.owned_area(row_index, column_index)
        owned = (centres_x >= x0) & (centres_x < x1) & (centres_y >= y0) & (centres_y < y1)
        inside = (
            (centres_x >= window.col_off)
            & (centres_x < window.col_off + window.width)
            & (centres_y >= window.row_off)
            & (centres_y < window.row_off + window.height)
        )
        assert not (owned & ~inside).any()  # a window owns only pixels it sees
        owners += owned
    assert (owners == 1).all()


def test_seam_twins_are_merged_and_boxes_away_from_seams_left_alone() -> None:
    boxes = np.array(
        [
            [100.0, 10, 124, 30],  # crosses the cut at x=112 ...
            [101.0, 11, 125, 31],  # ... and its twin from the neighbouring window: merged
            [100.0, 50, 124, 70],  # crosses the cut, but another class than its twin
            [101.0, 50, 125, 70],
            [10.0, 10, 30, 30],  # far from any cut: overlapping boxes are the detector's call
            [12.0, 10, 32, 30],
        ]
    )
    scores = np.array([0.9, 0.8, 0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 1, 1, 2, 1, 1])
    kept = merge_at_seams(boxes, scores, labels, [112.0], [], iou_threshold=0.5)
    assert kept.tolist() == [0, 2, 3, 4, 5]


def test_bad_overlap_is_a_usage_error(exported: Path, tmp_path: Path, capsys) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 64, 64)
    out = tmp_path / "panels.geojson"
    assert run_detect(str(raster), str(exported), str(out), "detect.overlap=128") == 2
    assert "detect.overlap" in capsys.readouterr().err
    assert not out.exists()


def test_missing_raster_is_named(exported: Path, bucket: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "panels.geojson"
    assert run_detect(f"s3://{bucket}/none.tif", str(exported), str(out)) == 1
    assert f"s3://{bucket}/none.tif" in capsys.readouterr().err
    assert not out.exists()


def test_model_that_is_not_torchscript_is_refused(tmp_path: Path, capsys) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 64, 64)
    not_a_model = tmp_path / "export" / "model.pt"
    not_a_model.parent.mkdir()
    not_a_model.write_bytes(b"\x80\x04not TorchScript")
    out = tmp_path / "panels.geojson"
    out.write_text("previous")

    assert run_detect(str(raster), str(tmp_path / "export"), str(out)) == 1

    assert "not a TorchScript model" in capsys.readouterr().err
    assert out.read_text() == "previous"


def test_cuda_requested_without_cuda_is_an_error(
    exported: Path, tmp_path: Path, capsys, without_cuda
) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 64, 64)
    out = tmp_path / "panels.geojson"
    assert run_detect(str(raster), str(exported), str(out), "detect.device=cuda") == 1
    assert "detect.device=cuda but CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_shards_of_a_mosaic_merge_into_the_bytes_of_one_run_on_the_raster(
    exported: Path, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 300, 400)
    with rasterio.open(raster) as dataset:
        pixels = dataset.read()
    for path in cut_into_files(tmp_path / "cut", pixels, col_cuts=[150], row_cuts=[170]):
        uri_io.upload_file(path, f"s3://{bucket}/mosaic/{path.name}")
    whole = tmp_path / "whole.geojson"
    assert run_detect(str(raster), str(exported), str(whole), "detect.overlap=32") == 0
    parts = f"s3://{bucket}/run/detect/"
    for index in (2, 0, 1):
        argv = ["--raster", f"s3://{bucket}/mosaic/", "--model", str(exported), "--out", parts]
        assert detect_main([*argv, "--shard", f"{index}/3", "--set", "detect.overlap=32"]) == 0
    assert "detect shard 1/3: " in capsys.readouterr().out
    merged = tmp_path / "merged.geojson"
    assert (
        solarpipe_main(["shards", "merge-detections", "--parts", parts, "--out", str(merged)]) == 0
    )
    assert merged.read_bytes() == whole.read_bytes()
    assert uri_io.read_json(str(merged))["features"]


def test_shards_of_a_resampled_raster_merge_into_the_bytes_of_one_run(
    exported_at_10cm: Path, tmp_path: Path
) -> None:
    """At 0.2 m the 128-px windows and 32-px overlap of the 0.1 m model are 64 and 16 raster
    px: the parts record them so, and the merge lays out the same grid."""
    from components.shards.detections import load_part

    raster = panel_raster(tmp_path / "coarse.tif", 150, 200, resolution=0.2)
    model = str(exported_at_10cm)
    whole = tmp_path / "whole.geojson"
    assert run_detect(str(raster), model, str(whole), "detect.overlap=32") == 0
    parts = tmp_path / "parts"
    for index in (1, 0):
        argv = ["--raster", str(raster), "--model", model, "--out", f"{parts}/"]
        assert detect_main([*argv, "--shard", f"{index}/2", "--set", "detect.overlap=32"]) == 0
    part = load_part(str(next(parts.iterdir())))
    assert (part.meta["window"], part.meta["overlap"]) == ([64, 64], [16, 16])
    merged = tmp_path / "merged.geojson"
    argv = ["shards", "merge-detections", "--parts", f"{parts}/", "--out", str(merged)]
    assert solarpipe_main(argv) == 0
    assert merged.read_bytes() == whole.read_bytes()


def test_bad_shard_for_detect_is_a_usage_error(exported: Path, tmp_path: Path, capsys) -> None:
    raster = panel_raster(tmp_path / "scene.tif", 64, 64)
    out = tmp_path / "parts"
    argv = ["--raster", str(raster), "--model", str(exported), "--out", f"{out}/"]
    assert detect_main([*argv, "--shard", "3/2"]) == 2
    assert "must be in 0..1" in capsys.readouterr().err
    assert not out.exists()
