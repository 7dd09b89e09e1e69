"""The stand-in annotator: write, for every tile of a manifest, the export object Label Studio
would write for an annotation that boxes the tile's ground-truth panels.

Truth polygons (map coordinates of the raster's CRS) are cut to each tile's footprint, moved
into tile pixels with the tile's geotransform, and boxed axis-aligned; slivers are dropped and
tiles without panels get an annotation with an empty result ("no panels"). Task and annotation
ids are the tile's 1-based position in the manifest, so reruns write the same bytes; objects
whose bytes are already there are not uploaded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from shapely import STRtree
from shapely.affinity import affine_transform
from shapely.geometry import Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from components.core import uri as uri_io
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.core.manifest import Manifest, TileRecord, load_manifest
from components.core.progress import progress_bar
from components.labelstudio.export_objects import (
    ExportFormat,
    PixelBox,
    build_export_object,
    encode_export_object,
    export_object_uri,
    rectangle_result,
)

log = get_logger(__name__)


@dataclass
class AnnotateSummary:
    """Counts reported at the end of a run."""

    objects: int = 0
    uploaded: int = 0
    unchanged: int = 0
    boxes: int = 0
    empty_tiles: int = 0
    slivers_dropped: int = 0


def read_truth_polygons(truth_uri: str) -> list[BaseGeometry]:
    """The polygons of a GeoJSON FeatureCollection (other geometry types are ignored)."""
    collection = uri_io.read_json(truth_uri)
    features = collection.get("features") if isinstance(collection, dict) else None
    if not isinstance(features, list):
        raise SolarpipeError(f"not a GeoJSON FeatureCollection: {truth_uri}")
    polygons: list[BaseGeometry] = []
    for number, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not geometry:
            continue
        try:
            parsed = shape(geometry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SolarpipeError(
                f"{truth_uri}: feature {number} has a bad geometry ({exc})"
            ) from exc
        if parsed.geom_type in ("Polygon", "MultiPolygon") and not parsed.is_empty:
            polygons.append(parsed)
    return polygons


def tile_footprint(tile: TileRecord) -> Polygon:
    """The tile's outline in map coordinates."""
    a, b, c, d, e, f = tile.transform
    corners = [(0, 0), (tile.width, 0), (tile.width, tile.height), (0, tile.height)]
    return Polygon([(a * col + b * row + c, d * col + e * row + f) for col, row in corners])


def map_to_pixel_matrix(tile: TileRecord) -> list[float]:
    """shapely ``affine_transform`` matrix taking map coordinates to the tile's pixels."""
    a, b, c, d, e, f = tile.transform
    determinant = a * e - b * d
    if determinant == 0:
        raise SolarpipeError(f"tile {tile.key} has a degenerate transform {tile.transform}")
    inv_a, inv_b = e / determinant, -b / determinant
    inv_d, inv_e = -d / determinant, a / determinant
    return [inv_a, inv_b, inv_d, inv_e, -(inv_a * c + inv_b * f), -(inv_d * c + inv_e * f)]


def visible_boxes(
    tile: TileRecord, polygons: list[BaseGeometry], tree: STRtree, min_size: float
) -> tuple[list[PixelBox], int]:
    """Axis-aligned pixel boxes of the truth visible in a tile, and how many slivers were dropped."""
    matrix = map_to_pixel_matrix(tile)
    frame = box(0, 0, tile.width, tile.height)
    boxes: list[PixelBox] = []
    slivers = 0
    for index in tree.query(tile_footprint(tile), predicate="intersects"):
        visible = affine_transform(polygons[int(index)], matrix).intersection(frame)
        if visible.is_empty:
            continue
        xmin, ymin, xmax, ymax = visible.bounds
        if xmax - xmin < min_size or ymax - ymin < min_size:
            slivers += 1
            continue
        boxes.append(PixelBox(xmin, ymin, xmax, ymax))
    boxes.sort(key=lambda b: (b.ymin, b.xmin, b.ymax, b.xmax))
    return boxes, slivers


def build_objects(
    manifest: Manifest,
    polygons: list[BaseGeometry],
    annotations_prefix: str,
    export_format: ExportFormat,
    label: str,
    min_size: float,
    summary: AnnotateSummary,
) -> dict[str, bytes]:
    """Object URI → bytes of every tile's export object."""
    tree = STRtree(polygons)
    objects: dict[str, bytes] = {}
    for task_id, tile in enumerate(manifest.tiles, start=1):
        boxes, slivers = visible_boxes(tile, polygons, tree, min_size)
        summary.slivers_dropped += slivers
        summary.boxes += len(boxes)
        summary.empty_tiles += not boxes
        results = [rectangle_result(b, tile.width, tile.height, label) for b in boxes]
        export_object: dict[str, Any] = build_export_object(
            export_format,
            annotation_id=task_id,
            task_id=task_id,
            image_uri=tile.uri,
            results=results,
        )
        object_uri = export_object_uri(annotations_prefix, export_format, task_id, task_id)
        objects[object_uri] = encode_export_object(export_object, export_format)
    return objects


def publish_objects(objects: Mapping[str, bytes], workers: int, desc: str) -> tuple[int, int]:
    """Upload objects concurrently, skipping those already there with the same bytes.

    Returns ``(uploaded, unchanged)``.
    """
    if not objects:
        return 0, 0
    prefixes = {uri_io.parent(object_uri) for object_uri in objects}
    existing = {info.uri: info.etag for p in prefixes for info in uri_io.list_objects(p)}
    changed = {
        object_uri: data
        for object_uri, data in objects.items()
        if existing.get(object_uri) != hashlib.md5(data).hexdigest()
    }
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress_bar(total=len(changed), desc=desc, unit="obj") as bar,
    ):
        futures = [
            pool.submit(uri_io.write_bytes, object_uri, data, content_type="application/json")
            for object_uri, data in changed.items()
        ]
        for future in as_completed(futures):
            future.result()
            bar.update(1)
    return len(changed), len(objects) - len(changed)


def annotate_from_truth(
    manifest_uri: str,
    truth_uri: str,
    annotations_prefix: str,
    export_format: ExportFormat,
    label: str,
    min_size: float,
    workers: int,
) -> AnnotateSummary:
    """Write one export object per manifest tile under ``annotations_prefix``."""
    manifest = load_manifest(manifest_uri)
    if not manifest.tiles:
        raise SolarpipeError(f"the manifest lists no tiles: {manifest_uri}")
    polygons = read_truth_polygons(truth_uri)
    log.info("%d truth polygons, %d tiles", len(polygons), len(manifest.tiles))
    summary = AnnotateSummary()
    objects = build_objects(
        manifest, polygons, annotations_prefix, export_format, label, min_size, summary
    )
    summary.objects = len(objects)
    summary.uploaded, summary.unchanged = publish_objects(objects, workers, "annotate")
    return summary
