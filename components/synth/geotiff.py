"""Write a synthetic scene as a georeferenced GeoTIFF plus its panel ground truth as GeoJSON.

The raster is EPSG:2056 (Swiss LV95) at 0.1 m, RGB uint8, 256 x 256 tiles, DEFLATE; the truth
is a FeatureCollection of panel polygons in the same map coordinates, stored next to the raster
as ``<stem>.geojson``. Both go through the core URI I/O, so local paths and ``s3://`` work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.core.errors import UsageError
from components.core.uri import dump_json, with_suffix, write_bytes
from components.synth.scene import MIN_SIZE, PIXEL_SIZE_M, Scene, generate_mosaic

CRS_EPSG = 2056
CRS_URN = "urn:ogc:def:crs:EPSG::2056"
BLOCK_SIZE = 256
TRUTH_SUFFIX = ".geojson"


@dataclass(frozen=True)
class SceneInfo:
    """Where a scene was written and what it holds."""

    raster_uri: str
    truth_uri: str
    width: int
    height: int
    panel_count: int


def truth_uri_for(raster_uri: str) -> str:
    """The ground-truth GeoJSON next to a raster: ``s3://b/scene.tif`` → ``s3://b/scene.geojson``."""
    return with_suffix(raster_uri, TRUTH_SUFFIX)


def scene_origin(seed: int) -> tuple[float, float]:
    """Map coordinates (east, north) of the raster's top-left corner: on the Swiss Plateau
    near Bern, moved in whole kilometres by the seed so different seeds do not overlap."""
    step = seed % 10_000
    return 2_600_000.0 + 1000.0 * (step % 100), 1_200_000.0 + 1000.0 * (step // 100 % 80)


def pixel_to_map(points: np.ndarray, origin: tuple[float, float]) -> np.ndarray:
    """Pixel (x right, y down; pixel edges on integers) to map (east, north) coordinates."""
    east = origin[0] + points[..., 0] * PIXEL_SIZE_M
    north = origin[1] - points[..., 1] * PIXEL_SIZE_M
    return np.stack([east, north], axis=-1)


def geotiff_bytes(scene: Scene, origin: tuple[float, float]) -> bytes:
    """The scene as a tiled, DEFLATE-compressed RGB GeoTIFF in EPSG:2056."""
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    size = scene.size
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS.from_epsg(CRS_EPSG),
        "transform": from_origin(origin[0], origin[1], PIXEL_SIZE_M, PIXEL_SIZE_M),
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": "deflate",
        "predictor": 2,
        "photometric": "RGB",
        "interleave": "pixel",
    }
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(np.moveaxis(scene.image, -1, 0))
            for band, colour in enumerate(("red", "green", "blue"), start=1):
                dataset.set_band_description(band, colour)
        return bytes(memory.read())


def truth_feature_collection(scene: Scene, origin: tuple[float, float]) -> dict:
    """GeoJSON FeatureCollection of the panels' rotated rectangles in map coordinates.

    Each ring is closed and counter-clockwise (east/north axes). Properties: ``id``,
    ``occluded`` (any part under tree canopy), ``occluded_fraction``, ``width_m`` and
    ``height_m`` (array sides), ``angle_deg`` (first side's bearing from east, anticlockwise)
    and ``modules`` (counts along both sides).
    """
    features = []
    map_corners = pixel_to_map(scene.panel_corners, origin)
    for index, corners in enumerate(map_corners):
        ring = corners[::-1]  # y flips between pixel and map axes: restore anticlockwise order
        first_side, second_side = ring[1] - ring[0], ring[2] - ring[1]
        fraction = float(scene.occluded_fraction[index])
        modules = scene.panel_modules[index]
        features.append(
            {
                "type": "Feature",
                "id": index + 1,
                "properties": {
                    "id": index + 1,
                    "occluded": fraction > 0.0,
                    "occluded_fraction": round(fraction, 3),
                    "width_m": round(float(np.hypot(*first_side)), 3),
                    "height_m": round(float(np.hypot(*second_side)), 3),
                    "angle_deg": round(
                        float(np.degrees(np.arctan2(first_side[1], first_side[0]))), 2
                    ),
                    "modules": [modules[0], modules[1]],
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[round(float(e), 3), round(float(n), 3)] for e, n in [*ring, ring[0]]]
                    ],
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "name": "solar_panels",
        "crs": {"type": "name", "properties": {"name": CRS_URN}},
        "features": features,
    }


def truth_bytes(scene: Scene, origin: tuple[float, float]) -> bytes:
    return dump_json(truth_feature_collection(scene, origin))


def write_scene(out_uri: str, size: int = 2048, seed: int = 0, parts: int = 1) -> SceneInfo:
    """Generate a scene (``parts`` x ``parts`` towns, see `generate_mosaic`) and write its
    GeoTIFF to `out_uri` and its truth next to it.

    Same arguments, same bytes. Raises UsageError for a size under 64 px, a negative seed,
    parts that do not divide the size into parts of 64 px or more, or an `out_uri` whose truth
    sibling would be itself (a ``.geojson`` name).
    """
    if size < MIN_SIZE:
        raise UsageError(f"scene size must be at least {MIN_SIZE} pixels, got {size}")
    if seed < 0:
        raise UsageError(f"scene seed must not be negative, got {seed}")
    truth_uri = truth_uri_for(out_uri)
    if truth_uri == out_uri:
        raise UsageError(f"the raster URI must not end in {TRUTH_SUFFIX}: {out_uri}")
    try:
        scene = generate_mosaic(size, seed, parts)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    origin = scene_origin(seed)
    write_bytes(out_uri, geotiff_bytes(scene, origin), content_type="image/tiff")
    write_bytes(truth_uri, truth_bytes(scene, origin), content_type="application/geo+json")
    return SceneInfo(out_uri, truth_uri, size, size, len(scene.panel_corners))
