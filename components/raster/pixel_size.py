"""Ground sample distance (metres per pixel) of a raster, and how to bring it to a model's.

Projected CRS: the geotransform's pixel edges times the CRS's metres per unit (feet count).
Geographic CRS (degrees): the local metres per degree of the WGS84 ellipsoid at the raster's
centre (meridian and parallel radii of curvature), so pixels of 0.000001° become about
0.11 m x 0.08 m at 47° N; the scale is the centre's for the whole raster (over 1° of
latitude it drifts by under 2 % at mid latitudes).

Resampling keeps to a range: a raster whose pixels are more than :data:`RESAMPLE_RANGE` times
finer or coarser than the model's is refused unless forced (``detect.resample=force``), since
panels of 10-90 px at 0.1 m become 2-22 px at 0.4 m and vanish below that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.core.errors import SolarpipeError

if TYPE_CHECKING:  # evaluate imports this module for its constants; its image has no rasterio
    from affine import Affine

# Pixel sizes within this factor of the model's are resampled to it (0.25x-4x).
RESAMPLE_RANGE = 4.0
# Below this relative difference the raster is read at its own pixels (no resampling).
SAME_PIXEL_SIZE_TOLERANCE = 0.01
WGS84_SEMI_MAJOR_M = 6_378_137.0
WGS84_FLATTENING = 1 / 298.257223563


@dataclass(frozen=True)
class PixelSize:
    """A raster's pixel edges on the ground, in metres (``x``: columns, ``y``: rows)."""

    x_m: float
    y_m: float
    geographic: bool = False

    @property
    def mean_m(self) -> float:
        """One figure for the pixel size: the geometric mean of both edges."""
        return math.sqrt(self.x_m * self.y_m)

    def describe(self) -> str:
        if abs(self.x_m - self.y_m) <= SAME_PIXEL_SIZE_TOLERANCE * self.mean_m:
            text = f"{format_metres(self.mean_m)} m"
        else:
            text = f"{format_metres(self.x_m)} x {format_metres(self.y_m)} m"
        return text + (" (geographic CRS, at its centre)" if self.geographic else "")


def format_metres(value: float) -> str:
    """``0.1``, ``0.25``, ``30``, ``0.0125``: three significant digits, no trailing zeros."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def metres_per_degree(latitude_deg: float) -> tuple[float, float]:
    """(east-west, north-south) metres per degree on the WGS84 ellipsoid at a latitude."""
    phi = math.radians(latitude_deg)
    e2 = WGS84_FLATTENING * (2 - WGS84_FLATTENING)
    w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
    prime_vertical = WGS84_SEMI_MAJOR_M / w
    meridian = WGS84_SEMI_MAJOR_M * (1 - e2) / w**3
    return math.radians(1) * prime_vertical * math.cos(phi), math.radians(1) * meridian


def raster_pixel_size(
    crs, transform: Affine, width: int, height: int, raster_uri: str
) -> PixelSize:
    """The pixel size of a raster (rasterio ``crs`` and ``transform``); an error naming
    ``raster_uri`` when it has no CRS or no geotransform."""
    if crs is None:
        raise SolarpipeError(f"raster has no CRS: {raster_uri} (georeference it first)")
    if transform.is_identity:
        raise SolarpipeError(
            f"raster has no geotransform, so its pixel size is unknown: {raster_uri} "
            "(georeference it first)"
        )
    if crs.is_geographic:
        _, centre_latitude = transform * (width / 2, height / 2)
        east_m, north_m = metres_per_degree(max(-89.9, min(89.9, centre_latitude)))
        return PixelSize(
            math.hypot(transform.a * east_m, transform.d * north_m),
            math.hypot(transform.b * east_m, transform.e * north_m),
            geographic=True,
        )
    from rasterio.errors import CRSError

    # Ground edges of one pixel along columns and rows (rotated grids included).
    column_edge = math.hypot(transform.a, transform.d)
    row_edge = math.hypot(transform.b, transform.e)
    try:
        _, metres_per_unit = crs.linear_units_factor
    except CRSError as exc:
        raise SolarpipeError(
            f"cannot tell the pixel size of {raster_uri}: its CRS has no linear unit ({exc})"
        ) from exc
    return PixelSize(column_edge * metres_per_unit, row_edge * metres_per_unit)


@dataclass(frozen=True)
class Resampling:
    """How a raster is read for a model: raster pixels per model pixel along each axis."""

    columns_per_model_pixel: float
    rows_per_model_pixel: float

    @property
    def active(self) -> bool:
        return (
            abs(self.columns_per_model_pixel - 1) > SAME_PIXEL_SIZE_TOLERANCE
            or abs(self.rows_per_model_pixel - 1) > SAME_PIXEL_SIZE_TOLERANCE
        )

    def raster_pixels(self, model_pixels: int) -> tuple[int, int]:
        """(columns, rows) of raster pixels spanning ``model_pixels`` model pixels."""
        if not self.active:
            return model_pixels, model_pixels
        return (
            round(model_pixels * self.columns_per_model_pixel),
            round(model_pixels * self.rows_per_model_pixel),
        )


NO_RESAMPLING = Resampling(1.0, 1.0)


def plan_resampling(
    raster: PixelSize, model_pixel_size_m: float, mode: str, raster_uri: str
) -> Resampling:
    """Raster pixels per model pixel for ``mode`` (``auto``, ``force``, ``never``).

    ``auto`` resamples within :data:`RESAMPLE_RANGE` and refuses outside it, naming both pixel
    sizes; ``force`` resamples whatever the ratio; ``never`` reads the raster's own pixels.
    """
    if mode == "never":
        return NO_RESAMPLING
    ratio = model_pixel_size_m / raster.mean_m  # > 1: the raster is finer than the model
    if mode == "auto" and not 1 / RESAMPLE_RANGE <= ratio <= RESAMPLE_RANGE:
        raise SolarpipeError(
            f"the raster's pixel size ({raster.describe()}) is {_factor_words(ratio)} the "
            f"model's ({format_metres(model_pixel_size_m)} m), outside the "
            f"{1 / RESAMPLE_RANGE:g}x-{RESAMPLE_RANGE:g}x that detect resamples: {raster_uri} "
            "(--set detect.resample=force to run anyway)"
        )
    return Resampling(model_pixel_size_m / raster.x_m, model_pixel_size_m / raster.y_m)


def _factor_words(ratio: float) -> str:
    """``ratio`` = model / raster pixel size, as words about the raster."""
    if ratio < 1:
        return f"{1 / ratio:.3g}x coarser than"
    return f"{ratio:.3g}x finer than"
