"""Pixel boxes → GeoJSON polygons in the raster's CRS, via its affine geotransform."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    return box_rings(np.asarray([box], dtype=np.float64), transform)[0].tolist()


def box_rings(boxes: np.ndarray, transform: Affine) -> np.ndarray:
    """``n x 5 x 2`` closed counter-clockwise rings of ``n x 4`` pixel boxes, all at once
    (per box through ``Affine.__mul__``: 50 us each, measured; hours for a country's panels)."""
    x1, y1, x2, y2 = (boxes[:, [k]] for k in range(4))
    columns = np.hstack([x1, x2, x2, x1, x1])
    rows = np.hstack([y1, y1, y2, y2, y1])
    a, b, c, d, e, f = tuple(transform)[:6]
    rings = np.stack([columns * a + rows * b + c, columns * d + rows * e + f], axis=-1)
    # The pixel ring turns clockwise on the map when the transform flips orientation
    # (a north-up raster's negative e): reverse it then.
    return rings[:, ::-1] if a * e - b * d < 0 else rings


def feature_collection(
    boxes: list[tuple[float, float, float, float]],
    scores: list[float],
    labels: list[str],
    transform: Affine,
    crs: str,
) -> dict[str, Any]:
    """One Polygon feature per box, with ``score`` and ``label`` properties."""
    rings = box_rings(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), transform).tolist()
    features = [
        {
            "type": "Feature",
            "id": index,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"score": round(float(score), 4), "label": label},
        }
        for index, (ring, score, label) in enumerate(zip(rings, scores, labels, strict=True))
    ]
    return {"type": "FeatureCollection", "crs": crs_member(crs), "features": features}
