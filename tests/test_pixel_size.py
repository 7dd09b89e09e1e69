"""Pixel sizes of rasters on the ground (projected, in feet, geographic), the resampling plan
against a model's pixel size with its range, and the resampled copies the benchmarks write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from components.core.errors import SolarpipeError
from components.raster.pixel_size import (
    PixelSize,
    metres_per_degree,
    plan_resampling,
    raster_pixel_size,
)
from components.raster.resample import write_resampled
from tests.rasters import ORIGIN, write_geotiff


def size_of(crs: str, transform: Affine, width: int = 100, height: int = 100) -> PixelSize:
    return raster_pixel_size(CRS.from_string(crs), transform, width, height, "r.tif")


def test_projected_pixel_size_is_the_geotransforms_edge_in_metres() -> None:
    size = size_of("EPSG:2056", Affine(0.1, 0, 2_600_000, 0, -0.1, 1_200_000))
    assert size == PixelSize(pytest.approx(0.1), pytest.approx(0.1), geographic=False)
    assert size.describe() == "0.1 m"


def test_pixel_size_in_feet_is_converted_to_metres() -> None:
    size = size_of("EPSG:2229", Affine(1.0, 0, 6_500_000, 0, -1.0, 1_800_000))  # US survey feet
    assert size.x_m == pytest.approx(0.3048006, rel=1e-6) == size.y_m


def test_rotated_grid_gives_the_length_of_its_pixel_edges() -> None:
    rotated = Affine(0.1, 0, 2_600_000, 0, -0.1, 1_200_000) * Affine.rotation(30)
    size = size_of("EPSG:2056", rotated)
    assert (size.x_m, size.y_m) == (pytest.approx(0.1), pytest.approx(0.1))


def test_geographic_pixel_size_is_metres_at_the_centre_latitude() -> None:
    degrees = 1e-6
    size = size_of("EPSG:4326", Affine(degrees, 0, 7.4, 0, -degrees, 47.0 + 50 * degrees))
    east, north = metres_per_degree(47.0)
    assert size.geographic
    assert (size.x_m, size.y_m) == (pytest.approx(east * degrees), pytest.approx(north * degrees))
    # WGS84 at 47° N: 76.0 km per degree of longitude, 111.2 km per degree of latitude
    assert east == pytest.approx(76_055, rel=1e-3) and north == pytest.approx(111_196, rel=1e-3)
    assert "geographic" in size.describe()


def test_raster_without_a_geotransform_has_no_pixel_size() -> None:
    with pytest.raises(SolarpipeError, match=r"no geotransform.*pixel size is unknown: r\.tif"):
        size_of("EPSG:2056", Affine.identity())


def test_raster_without_a_crs_is_refused() -> None:
    with pytest.raises(SolarpipeError, match=r"no CRS: r\.tif"):
        raster_pixel_size(None, Affine(0.1, 0, 0, 0, -0.1, 0), 10, 10, "r.tif")


@pytest.mark.parametrize(
    ("raster_m", "columns_per_model_pixel"),
    [(0.1, 1.0), (0.2, 0.5), (0.05, 2.0), (0.4, 0.25), (0.025, 4.0)],
)
def test_resampling_within_four_times_either_way(
    raster_m: float, columns_per_model_pixel: float
) -> None:
    plan = plan_resampling(PixelSize(raster_m, raster_m), 0.1, "auto", "r.tif")
    assert plan.columns_per_model_pixel == pytest.approx(columns_per_model_pixel)
    assert plan.active == (raster_m != 0.1)
    expected_window = round(256 * columns_per_model_pixel)
    assert plan.raster_pixels(256) == (expected_window, expected_window)


def test_landsat_pixels_are_refused_naming_both_pixel_sizes() -> None:
    with pytest.raises(SolarpipeError) as refused:
        plan_resampling(PixelSize(30.0, 30.0), 0.1, "auto", "RGB.byte.tif")
    message = str(refused.value)
    assert "(30 m) is 300x coarser than the model's (0.1 m)" in message
    assert "RGB.byte.tif" in message and "detect.resample=force" in message
    assert "\n" not in message


def test_much_finer_pixels_are_refused_and_force_or_never_runs_anyway() -> None:
    with pytest.raises(SolarpipeError, match=r"\(0.01 m\) is 10x finer than the model's"):
        plan_resampling(PixelSize(0.01, 0.01), 0.1, "auto", "r.tif")
    assert plan_resampling(PixelSize(0.01, 0.01), 0.1, "force", "r.tif").raster_pixels(10) == (
        100,
        100,
    )
    assert not plan_resampling(PixelSize(0.01, 0.01), 0.1, "never", "r.tif").active


def test_non_square_ground_pixels_give_non_square_windows() -> None:
    plan = plan_resampling(PixelSize(0.08, 0.11), 0.1, "auto", "r.tif")
    assert plan.raster_pixels(256) == (320, 233)


def test_resampled_copy_keeps_crs_and_footprint_at_the_new_pixel_size(tmp_path: Path) -> None:
    pixels = np.zeros((3, 200, 300), dtype=np.uint8)
    pixels[:, 50:70, 100:140] = 200
    source = write_geotiff(tmp_path / "fine.tif", pixels)

    assert write_resampled(str(source), str(tmp_path / "coarse.tif"), 0.2) == (150, 100)

    with rasterio.open(tmp_path / "coarse.tif") as coarse:
        assert coarse.crs == CRS.from_epsg(2056)
        assert coarse.transform == Affine(0.2, 0, ORIGIN[0], 0, -0.2, ORIGIN[1])
        bright = np.argwhere(coarse.read(1) > 100)
    # the 20 x 40 px panel at 0.1 m is 10 x 20 px at 0.2 m, in the same place
    assert bright.min(axis=0).tolist() == [25, 50] and bright.max(axis=0).tolist() == [34, 69]
