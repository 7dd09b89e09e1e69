"""Synthetic georeferenced town scenes with solar panels and their ground truth.

`write_scene` writes the GeoTIFF and its GeoJSON truth; `generate_scene` only renders arrays.
"""

from components.synth.geotiff import SceneInfo, truth_uri_for, write_scene
from components.synth.scene import Scene, generate_mosaic, generate_scene

__all__ = [
    "Scene",
    "SceneInfo",
    "generate_mosaic",
    "generate_scene",
    "truth_uri_for",
    "write_scene",
]
