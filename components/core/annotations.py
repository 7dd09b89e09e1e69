"""The ground-truth file ``annotations.json``: one record per labelled tile, with its split.

Written by preprocess; read by preview, train and evaluate. Boxes are ``[xmin, ymin, xmax,
ymax]`` in tile pixels; ``labels[i]`` names ``boxes[i]``'s class, one of the file's ``classes``
(class index for torchvision detectors = position in ``classes`` + 1; 0 is background).
``pixel_size_m`` is the tiles' ground sample distance (metres per pixel) from the prepare
manifest; ``null`` in files written before it was recorded.
``origin`` says who made a tile's boxes: a person drew them, or accepted or corrected a model's
pre-annotation; every one of them is a human annotation (predictions alone never get here).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.core import uri as uri_io
from components.core.errors import SolarpipeError

ANNOTATIONS_VERSION = 1
Split = Literal["train", "val", "test"]
AnnotationOrigin = Literal["manual", "prediction", "prediction-changed"]


class AnnotatedImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str  # URI of the tile (s3:// or local)
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]
    labels: list[str]
    split: Split
    task_id: int | None = None
    origin: AnnotationOrigin | None = None  # None: written before origins were recorded


class AnnotationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = ANNOTATIONS_VERSION
    classes: list[str]
    images: list[AnnotatedImage]
    pixel_size_m: float | None = Field(None, gt=0)

    def split(self, name: Split) -> list[AnnotatedImage]:
        return [image for image in self.images if image.split == name]

    def input_pixel_size(self, image_size: int) -> float | None:
        """Ground size of one pixel of a detector input of ``image_size`` px made from these
        tiles (every tile is resized to it): the tiles' pixel size times the typical tile edge
        over ``image_size``; None when the tiles' pixel size is not recorded."""
        if self.pixel_size_m is None or not self.images:
            return None
        edges = sorted(max(image.width, image.height) for image in self.images)
        return self.pixel_size_m * edges[len(edges) // 2] / image_size


def load_annotations(annotations_uri: str) -> AnnotationsFile:
    try:
        return AnnotationsFile.model_validate(uri_io.read_json(annotations_uri))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SolarpipeError(
            f"not an annotations file: {annotations_uri} ({where}: {first['msg']})"
        ) from exc


def save_annotations(annotations_uri: str, annotations: AnnotationsFile) -> None:
    uri_io.write_json(annotations_uri, annotations.model_dump(mode="json"))
