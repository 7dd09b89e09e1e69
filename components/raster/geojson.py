"""Pixel boxes → GeoJSON polygons in the raster's CRS, via its affine geotransform."""

from __future__ import annotations

from typing import Any

from affine import Affine


def crs_member(crs: str) -> dict[str, Any]:
    """The GeoJSON ``crs`` member (named CRS, as GDAL reads it): an EPSG URN where possible."""
    if crs.upper().startswith("EPSG:"):
        return {
            "type": "name",
            "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs.split(':')[1]}"},
        }
    return {"type": "name", "properties": {"name": crs}}


def box_ring(box: tuple[float, float, float, float], transform: Affine) -> list[list[float]]:
    """The closed, counter-clockwise (RFC 7946) ring of a pixel box in map coordinates."""
    x1, y1, x2, y2 = box
    ring = [transform * corner for corner in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
    signed_area = sum(
        ax * by - bx * ay for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1], strict=True)
    )
    if signed_area < 0:
        ring.reverse()
    return [[float(x), float(y)] for x, y in [*ring, ring[0]]]


def feature_collection(
    boxes: list[tuple[float, float, float, float]],
    scores: list[float],
    labels: list[str],
    transform: Affine,
    crs: str,
) -> dict[str, Any]:
    """One Polygon feature per box, with ``score`` and ``label`` properties."""
    features = [
        {
            "type": "Feature",
            "id": index,
            "geometry": {"type": "Polygon", "coordinates": [box_ring(box, transform)]},
            "properties": {"score": round(float(score), 4), "label": label},
        }
        for index, (box, score, label) in enumerate(zip(boxes, scores, labels, strict=True))
    ]
    return {"type": "FeatureCollection", "crs": crs_member(crs), "features": features}
