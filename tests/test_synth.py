"""Synthetic scene: deterministic GeoTIFF + GeoJSON truth, georeferencing, and panels a
detector can see (darker than their roofs, inside the raster, in sane numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from components.core.errors import UsageError
from components.synth import (
    SceneInfo,
    generate_mosaic,
    generate_scene,
    truth_uri_for,
    write_scene,
)

SIZE = 512
SEED = 8  # a 512-px scene with a dozen panels, two of them partly under trees


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SceneInfo:
    return write_scene(str(tmp_path_factory.mktemp("scene") / "town.tif"), size=SIZE, seed=SEED)


def read_truth(info: SceneInfo) -> dict:
    return json.loads(Path(info.truth_uri).read_text())


def panel_rings(info: SceneInfo) -> list[np.ndarray]:
    return [np.array(f["geometry"]["coordinates"][0]) for f in read_truth(info)["features"]]


def test_same_seed_gives_identical_bytes(scene: SceneInfo, tmp_path: Path) -> None:
    again = write_scene(str(tmp_path / "town.tif"), size=SIZE, seed=SEED)
    assert Path(again.raster_uri).read_bytes() == Path(scene.raster_uri).read_bytes()
    assert Path(again.truth_uri).read_bytes() == Path(scene.truth_uri).read_bytes()


def test_different_seed_gives_a_different_scene(scene: SceneInfo) -> None:
    other = generate_scene(SIZE, SEED + 1)
    with rasterio.open(scene.raster_uri) as dataset:
        pixels = np.moveaxis(dataset.read(), 0, -1)
    assert not np.array_equal(other.image, pixels)


def test_geotiff_is_tiled_compressed_rgb_in_lv95_at_10_cm(scene: SceneInfo) -> None:
    with rasterio.open(scene.raster_uri) as dataset:
        assert dataset.crs.to_epsg() == 2056
        assert dataset.res == pytest.approx((0.1, 0.1))
        assert (dataset.width, dataset.height, dataset.count) == (SIZE, SIZE, 3)
        assert dataset.dtypes == ("uint8", "uint8", "uint8")
        assert dataset.profile["tiled"]
        assert dataset.block_shapes == [(256, 256)] * 3
        assert dataset.compression is not None
        assert dataset.compression.name.lower() in {"deflate", "lzw"}
        assert [c.name for c in dataset.colorinterp] == ["red", "green", "blue"]
        east, north = dataset.transform.c, dataset.transform.f
    assert 2_480_000 < east < 2_840_000 and 1_070_000 < north < 1_300_000  # in Switzerland


def test_scene_info_describes_what_was_written(scene: SceneInfo) -> None:
    assert scene.truth_uri == truth_uri_for(scene.raster_uri)
    assert (scene.width, scene.height) == (SIZE, SIZE)
    assert scene.panel_count == len(read_truth(scene)["features"]) > 0


def test_truth_sits_next_to_the_raster_with_the_same_stem() -> None:
    assert truth_uri_for("s3://bucket/runs/1/scene.tif") == "s3://bucket/runs/1/scene.geojson"
    assert truth_uri_for("/data/synth/town.tiff") == "/data/synth/town.geojson"


def test_truth_is_a_feature_collection_of_closed_anticlockwise_rectangles(scene: SceneInfo) -> None:
    truth = read_truth(scene)
    assert truth["type"] == "FeatureCollection"
    assert truth["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::2056"
    ids = [feature["properties"]["id"] for feature in truth["features"]]
    assert ids == list(range(1, len(ids) + 1))
    for feature in truth["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and np.array_equal(ring[0], ring[-1])
        east, north = (ring - ring[0]).T  # relative, so the shoelace does not lose precision
        signed_area = np.sum(east[:-1] * north[1:] - east[1:] * north[:-1]) / 2
        props = feature["properties"]
        assert signed_area == pytest.approx(props["width_m"] * props["height_m"], rel=5e-3)
        assert isinstance(props["occluded"], bool)
        assert props["occluded"] == (props["occluded_fraction"] > 0)


def test_every_panel_lies_inside_the_raster(scene: SceneInfo) -> None:
    with rasterio.open(scene.raster_uri) as dataset:
        bounds = dataset.bounds
    for ring in panel_rings(scene):
        assert np.all((ring[:, 0] > bounds.left) & (ring[:, 0] < bounds.right))
        assert np.all((ring[:, 1] > bounds.bottom) & (ring[:, 1] < bounds.top))


def test_panel_arrays_measure_1_to_10_metres(scene: SceneInfo) -> None:
    for feature in read_truth(scene)["features"]:
        sides = sorted([feature["properties"]["width_m"], feature["properties"]["height_m"]])
        assert 0.9 <= sides[0] <= 6.0
        assert 1.5 <= sides[1] <= 10.0


def test_some_panels_are_partly_hidden_by_trees(scene: SceneInfo) -> None:
    fractions = [f["properties"]["occluded_fraction"] for f in read_truth(scene)["features"]]
    assert any(0 < fraction < 1 for fraction in fractions)


def luminance_inside_and_around(pixels: np.ndarray, corners: np.ndarray) -> tuple[float, float]:
    """Mean luminance inside a panel (1 px in from its edge) and in a ring 2-5 px outside."""
    centre = corners[:4].mean(axis=0)
    axis_u = (corners[1] - corners[0]) / np.linalg.norm(corners[1] - corners[0])
    axis_v = np.array([-axis_u[1], axis_u[0]])
    half_u = np.linalg.norm(corners[1] - corners[0]) / 2
    half_v = np.linalg.norm(corners[2] - corners[1]) / 2
    rows, cols = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    offset_x, offset_y = cols + 0.5 - centre[0], rows + 0.5 - centre[1]
    u = np.abs(offset_x * axis_u[0] + offset_y * axis_u[1]) - half_u
    v = np.abs(offset_x * axis_v[0] + offset_y * axis_v[1]) - half_v
    edge_distance = np.maximum(u, v)  # < 0 inside
    gray = pixels @ np.array([0.299, 0.587, 0.114])
    inside = gray[edge_distance < -1]
    ring = gray[(edge_distance > 2) & (edge_distance < 5)]
    return float(inside.mean()), float(ring.mean())


def test_visible_panels_are_darker_than_the_roof_around_them(scene: SceneInfo) -> None:
    with rasterio.open(scene.raster_uri) as dataset:
        pixels = np.moveaxis(dataset.read(), 0, -1).astype(np.float64)
        to_pixel = ~dataset.transform
    features = read_truth(scene)["features"]
    visible = [f for f in features if not f["properties"]["occluded"]]
    assert len(visible) >= 5
    for feature in visible:
        ring = np.array(feature["geometry"]["coordinates"][0])
        corners = np.array([to_pixel * (east, north) for east, north in ring])
        inside, around = luminance_inside_and_around(pixels, corners)
        assert inside < 0.85 * around, feature["properties"]["id"]


def test_panel_count_is_about_one_per_one_or_two_roofs() -> None:
    scene = generate_scene(1024, seed=0)  # a quarter of the default 2048-px scene
    assert 12 <= len(scene.panel_corners) <= 60


def test_size_need_not_be_a_multiple_of_256(tmp_path: Path) -> None:
    info = write_scene(str(tmp_path / "odd.tif"), size=300, seed=1)
    with rasterio.open(info.raster_uri) as dataset:
        assert (dataset.width, dataset.height) == (300, 300)
        assert dataset.block_shapes == [(256, 256)] * 3
        assert dataset.read().shape == (3, 300, 300)
    assert Path(info.truth_uri).exists()


def test_too_small_a_scene_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least 64"):
        write_scene(str(tmp_path / "tiny.tif"), size=32)
    assert not list(tmp_path.iterdir())


def test_a_negative_seed_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="negative"):
        write_scene(str(tmp_path / "scene.tif"), size=64, seed=-1)


def test_a_geojson_raster_name_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.geojson"):
        write_scene(str(tmp_path / "scene.geojson"), size=64)


def test_mosaic_sets_towns_of_their_own_seeds_side_by_side() -> None:
    mosaic = generate_mosaic(512, seed=1, parts=2)
    offset = 0
    for index, (top, left) in enumerate(((0, 0), (0, 256), (256, 0), (256, 256))):
        town = generate_scene(256, seed=4 + index)  # seeds seed * parts**2 onwards
        assert np.array_equal(mosaic.image[top : top + 256, left : left + 256], town.image)
        count = len(town.panel_corners)
        np.testing.assert_array_equal(
            mosaic.panel_corners[offset : offset + count],
            town.panel_corners + np.array([left, top]),
        )
        offset += count
    assert offset == len(mosaic.panel_corners) == len(mosaic.occluded_fraction) > 0
    assert np.array_equal(generate_mosaic(256, seed=3, parts=1).image, generate_scene(256, 3).image)


def test_parts_that_do_not_cut_the_scene_evenly_are_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be cut into 3x3 equal parts"):
        write_scene(str(tmp_path / "scene.tif"), size=512, parts=3)
    assert not list(tmp_path.iterdir())
