"""Label Studio export objects: build them as Label Studio writes them, and parse both formats.

An S3 export storage gets one JSON object per annotation (default; key ``<prefix>/<annotation
id>``, the task nested under ``task``) or, with ``FUTURE_SAVE_TASK_TO_STORAGE``, one per task
(key ``<prefix>/<task id>.json``, the annotations listed under ``annotations``). Region
coordinates are percentages of the image size; ``rotation`` is in degrees, clockwise, about the
rectangle's top-left corner, applied in pixel units.

Annotations made from a model's pre-annotation name it in ``parent_prediction``; the labeling UI
marks each region's ``origin`` (``prediction``: taken as proposed, ``prediction-changed``: moved
or resized, ``manual``: drawn), and the per-task format also carries the prediction itself (when
it is of the project's model version). :func:`annotation_origin` reads these. Predictions on
their own are never annotations: they are ignored here.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from components.core import uri as uri_io
from components.core.annotations import AnnotationOrigin
from components.core.errors import SolarpipeError

ExportFormat = Literal["annotation", "task"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("annotation", "task")

# Control and object tag names of the project's label config (<RectangleLabels name="label"
# toName="image">, <Image name="image" value="$image">).
FROM_NAME = "label"
TO_NAME = "image"
IMAGE_DATA_KEY = "image"

RECTANGLE_TYPE = "rectanglelabels"
POLYGON_TYPE = "polygonlabels"

# What the stand-in annotator writes as the author and time of its annotations: fixed, so the
# same input gives the same bytes (and a human's later edit is always the newer annotation).
ANNOTATOR = {"id": 1, "first_name": "", "last_name": "", "email": "annotate-from-truth@solarpipe"}
ANNOTATOR_TIMESTAMP = "2000-01-01T00:00:00.000000Z"
_UNIQUE_ID_NAMESPACE = uuid.UUID("8a6b3c1e-3f0d-4d5e-9b8a-5f1c2d3e4a5b")
_OLDEST = datetime.min.replace(tzinfo=UTC)
# Percent units: the labeling UI re-serialises a region it did not change with float noise.
REGION_TOLERANCE = 1e-3


class MalformedObjectError(SolarpipeError):
    """An export object (or one of its results) that does not have Label Studio's shape."""


class UnsupportedResultError(SolarpipeError):
    """A result of a type that carries no box (choices, text, keypoints, ...)."""

    def __init__(self, result_type: str) -> None:
        super().__init__(f"result type {result_type!r} carries no box")
        self.result_type = result_type


@dataclass(frozen=True)
class PixelBox:
    """An axis-aligned box in image pixels: ``[xmin, ymin, xmax, ymax]``."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    def clipped(self, width: float, height: float) -> PixelBox:
        return PixelBox(
            min(max(self.xmin, 0.0), width),
            min(max(self.ymin, 0.0), height),
            min(max(self.xmax, 0.0), width),
            min(max(self.ymax, 0.0), height),
        )

    def as_list(self, digits: int = 3) -> tuple[float, float, float, float]:
        return (
            round(self.xmin, digits),
            round(self.ymin, digits),
            round(self.xmax, digits),
            round(self.ymax, digits),
        )


@dataclass(frozen=True)
class Region:
    """One labelled region of an annotation, as the axis-aligned box that encloses it."""

    label: str
    box: PixelBox  # not clipped to the image


@dataclass(frozen=True)
class ExportedAnnotation:
    """One annotation of a task, as read from an export object."""

    annotation_id: int
    task_id: int
    was_cancelled: bool
    created_at: str | None
    updated_at: str | None
    results: tuple[dict[str, Any], ...]
    source_key: str
    parent_prediction: int | None = None
    # The parent prediction's results when the object carries them (per-task format), else None.
    prediction_results: tuple[dict[str, Any], ...] | None = None

    def recency(self) -> tuple[datetime, int]:
        """Sort key: the later ``updated_at`` (else ``created_at``) wins, then the higher id."""
        return _parse_timestamp(self.updated_at or self.created_at), self.annotation_id


@dataclass(frozen=True)
class ExportedTask:
    """One task with the annotations an export object carries for it (none: unlabeled)."""

    task_id: int
    image: str
    annotations: tuple[ExportedAnnotation, ...]
    source_key: str


# --- parsing -------------------------------------------------------------------------------


def _parse_timestamp(text: str | None) -> datetime:
    if not text:
        return _OLDEST
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return _OLDEST
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _require_int(container: dict[str, Any], name: str, what: str) -> int:
    value = container.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedObjectError(f"{what} has no integer {name!r}")
    return value


def _task_image(task: dict[str, Any]) -> str:
    data = task.get("data")
    image = data.get(IMAGE_DATA_KEY) if isinstance(data, dict) else None
    if not isinstance(image, str) or not image:
        raise MalformedObjectError(f"task has no data.{IMAGE_DATA_KEY}")
    return image


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parent_prediction_results(
    raw: dict[str, Any], parent_prediction: int | None
) -> tuple[dict[str, Any], ...] | None:
    """The ``prediction`` the per-task format embeds, when it is the annotation's parent."""
    prediction = raw.get("prediction")
    if parent_prediction is None or not isinstance(prediction, dict):
        return None
    results = prediction.get("result")
    if prediction.get("id") != parent_prediction or not isinstance(results, list):
        return None
    return tuple(item for item in results if isinstance(item, dict))


def _annotation(raw: Any, task_id: int, source_key: str) -> ExportedAnnotation:
    if not isinstance(raw, dict):
        raise MalformedObjectError("an annotation is not a JSON object")
    if "result" not in raw:
        raise MalformedObjectError("annotation lacks 'result'")
    results = raw["result"]
    if results is None:
        results = []
    if not isinstance(results, list) or not all(isinstance(item, dict) for item in results):
        raise MalformedObjectError("annotation 'result' is not a list of objects")
    return ExportedAnnotation(
        annotation_id=_require_int(raw, "id", "annotation"),
        task_id=task_id,
        was_cancelled=bool(raw.get("was_cancelled", False)),
        created_at=raw.get("created_at"),
        updated_at=raw.get("updated_at"),
        results=tuple(results),
        source_key=source_key,
        parent_prediction=_optional_int(raw.get("parent_prediction")),
        prediction_results=_parent_prediction_results(
            raw, _optional_int(raw.get("parent_prediction"))
        ),
    )


def parse_export_object(payload: Any, source_key: str) -> ExportedTask:
    """Read one decoded export object of either format; predictions and drafts are ignored."""
    if not isinstance(payload, dict):
        raise MalformedObjectError("not a JSON object")
    if isinstance(payload.get("annotations"), list) and "data" in payload:  # per-task format
        task_id = _require_int(payload, "id", "task")
        annotations = tuple(_annotation(raw, task_id, source_key) for raw in payload["annotations"])
        return ExportedTask(task_id, _task_image(payload), annotations, source_key)
    task = payload.get("task")
    if not isinstance(task, dict):
        if "result" in payload or "task" in payload:
            raise MalformedObjectError("annotation has no nested 'task' object")
        raise MalformedObjectError("neither an annotation nor a task export object")
    task_id = _require_int(task, "id", "task")
    annotation = _annotation(payload, task_id, source_key)
    return ExportedTask(task_id, _task_image(task), (annotation,), source_key)


def parse_export_bytes(data: bytes, source_key: str) -> ExportedTask:
    """Decode and read one export object; bad JSON is a :class:`MalformedObjectError`."""
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedObjectError(f"not JSON ({exc.__class__.__name__}: {exc})") from exc
    return parse_export_object(payload, source_key)


def _number(value: dict[str, Any], name: str) -> float:
    number = value.get(name, 0.0 if name == "rotation" else None)
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise MalformedObjectError(f"region value has no number {name!r}")
    return float(number)


def _rectangle_box(value: dict[str, Any], width: float, height: float) -> PixelBox:
    x = _number(value, "x") / 100.0 * width
    y = _number(value, "y") / 100.0 * height
    box_width = _number(value, "width") / 100.0 * width
    box_height = _number(value, "height") / 100.0 * height
    angle = math.radians(_number(value, "rotation"))
    if angle == 0.0:
        return PixelBox(x, y, x + box_width, y + box_height)
    cos, sin = math.cos(angle), math.sin(angle)
    # Clockwise on screen (y points down) about the top-left corner (x, y).
    corners = [(0.0, 0.0), (box_width, 0.0), (box_width, box_height), (0.0, box_height)]
    xs = [x + dx * cos - dy * sin for dx, dy in corners]
    ys = [y + dx * sin + dy * cos for dx, dy in corners]
    return PixelBox(min(xs), min(ys), max(xs), max(ys))


def _polygon_box(value: dict[str, Any], width: float, height: float) -> PixelBox:
    points = value.get("points")
    if not isinstance(points, list) or not points:
        raise MalformedObjectError("polygon has no 'points'")
    try:
        xs = [float(point[0]) / 100.0 * width for point in points]
        ys = [float(point[1]) / 100.0 * height for point in points]
    except (TypeError, ValueError, IndexError) as exc:
        raise MalformedObjectError("polygon 'points' are not [x, y] pairs") from exc
    return PixelBox(min(xs), min(ys), max(xs), max(ys))


def region_from_result(
    result: dict[str, Any], width: float | None = None, height: float | None = None
) -> Region:
    """One result → its label and enclosing pixel box (percent of ``width`` × ``height``).

    Without ``width``/``height`` the result's ``original_width``/``original_height`` are used.
    Rectangles (rotated or not) and polygons give boxes; any other type raises
    :class:`UnsupportedResultError`.
    """
    result_type = str(result.get("type", ""))
    if result_type not in (RECTANGLE_TYPE, POLYGON_TYPE):
        raise UnsupportedResultError(result_type or "(none)")
    value = result.get("value")
    if not isinstance(value, dict):
        raise MalformedObjectError("result has no 'value' object")
    labels = value.get(result_type)
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise MalformedObjectError(f"result has no label in value.{result_type}")
    image_width = width if width is not None else result.get("original_width")
    image_height = height if height is not None else result.get("original_height")
    if not isinstance(image_width, int | float) or not isinstance(image_height, int | float):
        raise MalformedObjectError("result has no original_width/original_height")
    if result_type == RECTANGLE_TYPE:
        box = _rectangle_box(value, float(image_width), float(image_height))
    else:
        box = _polygon_box(value, float(image_width), float(image_height))
    return Region(labels[0], box)


def _region_signature(result: dict[str, Any]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """What a region says, without its id, score or origin: kind, labels and numbers."""
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    words: list[str] = [str(result.get("type")), str(result.get("from_name"))]
    numbers: list[float] = []
    pending: list[Any] = [value[name] for name in sorted(value)]
    while pending:
        item = pending.pop(0)
        if isinstance(item, str):
            words.append(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            numbers.append(float(item))
        elif isinstance(item, list):
            pending[:0] = item
    return tuple(words), tuple(numbers)


def same_regions(first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]) -> bool:
    """Whether two results hold the same regions, in any order, up to float noise."""
    if len(first) != len(second):
        return False
    signatures = [sorted(map(_region_signature, side)) for side in (first, second)]
    for (words_a, numbers_a), (words_b, numbers_b) in zip(*signatures, strict=True):
        if words_a != words_b or len(numbers_a) != len(numbers_b):
            return False
        if any(abs(a - b) > REGION_TOLERANCE for a, b in zip(numbers_a, numbers_b, strict=True)):
            return False
    return True


def annotation_origin(annotation: ExportedAnnotation) -> AnnotationOrigin:
    """Whether a person drew the annotation, accepted a prediction as is, or corrected one.

    The prediction's own results decide when the object carries them (per-task format);
    otherwise the regions' ``origin`` marks do. A proposed region the person deleted leaves no
    trace in the per-annotation format: such an annotation counts as accepted there.
    """
    origins = {result.get("origin") for result in annotation.results}
    from_prediction = annotation.parent_prediction is not None or bool(
        origins & {"prediction", "prediction-changed"}
    )
    if not from_prediction:
        return "manual"
    if annotation.prediction_results is not None:
        unchanged = same_regions(annotation.results, annotation.prediction_results)
    else:
        unchanged = origins <= {"prediction"}
    return "prediction" if unchanged else "prediction-changed"


# --- building ------------------------------------------------------------------------------


def rectangle_result(
    box: PixelBox,
    width: int,
    height: int,
    label: str,
    *,
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
) -> dict[str, Any]:
    """A ``rectanglelabels`` result for a pixel box, in percent of the image, as LS writes it."""
    return {
        "from_name": from_name,
        "to_name": to_name,
        "type": RECTANGLE_TYPE,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": box.xmin / width * 100.0,
            "y": box.ymin / height * 100.0,
            "width": box.width / width * 100.0,
            "height": box.height / height * 100.0,
            "rotation": 0,
            RECTANGLE_TYPE: [label],
        },
    }


def _unique_id(image_uri: str, annotation_id: int) -> str:
    return str(uuid.uuid5(_UNIQUE_ID_NAMESPACE, f"{image_uri}#{annotation_id}"))


def annotation_export_object(
    *,
    annotation_id: int,
    task_id: int,
    image_uri: str,
    results: Sequence[dict[str, Any]],
    project: int = 1,
    parent_prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object Label Studio writes per annotation (the default export format).

    ``parent_prediction`` (a prediction as the API returns it) is the one the annotation was
    made from: this format names only its id.
    """
    stamp = ANNOTATOR_TIMESTAMP
    return {
        "id": annotation_id,
        "result": list(results),
        "created_username": f" {ANNOTATOR['email']}, {ANNOTATOR['id']}",
        "created_ago": "0\u00a0minutes",
        "completed_by": dict(ANNOTATOR),
        "task": {
            "id": task_id,
            "data": {IMAGE_DATA_KEY: image_uri},
            "meta": {},
            "created_at": stamp,
            "updated_at": stamp,
            "is_labeled": True,
            "allow_skip": True,
            "overlap": 1,
            "inner_id": task_id,
            "total_annotations": 1,
            "cancelled_annotations": 0,
            "total_predictions": 1 if parent_prediction else 0,
            "precomputed_agreement": None,
            "comment_count": 0,
            "unresolved_comment_count": 0,
            "last_comment_updated_at": None,
            "project": project,
            "updated_by": ANNOTATOR["id"],
            "file_upload": None,
            "comment_authors": [],
        },
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": stamp,
        "updated_at": stamp,
        "draft_created_at": None,
        "lead_time": 0.0,
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "project": project,
        "updated_by": ANNOTATOR["id"],
        "parent_prediction": parent_prediction["id"] if parent_prediction else None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def task_export_object(
    *,
    annotation_id: int,
    task_id: int,
    image_uri: str,
    results: Sequence[dict[str, Any]],
    project: int = 1,
    parent_prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object Label Studio writes per task (``FUTURE_SAVE_TASK_TO_STORAGE``).

    ``parent_prediction`` is embedded whole, as Label Studio does when it is of the project's
    model version; the task lists its predictions by id.
    """
    stamp = ANNOTATOR_TIMESTAMP
    annotation = {
        "id": annotation_id,
        "completed_by": {key: ANNOTATOR[key] for key in ("id", "email", "first_name", "last_name")},
        "result": list(results),
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": stamp,
        "updated_at": stamp,
        "draft_created_at": None,
        "lead_time": None,
        "prediction": dict(parent_prediction) if parent_prediction else {},
        "result_count": len(results),
        "unique_id": _unique_id(image_uri, annotation_id),
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "task": task_id,
        "project": project,
        "updated_by": ANNOTATOR["id"],
        "parent_prediction": parent_prediction["id"] if parent_prediction else None,
        "parent_annotation": None,
        "last_created_by": None,
    }
    return {
        "id": task_id,
        "annotations": [annotation],
        "drafts": [],
        "predictions": [parent_prediction["id"]] if parent_prediction else [],
        "data": {IMAGE_DATA_KEY: image_uri},
        "meta": {},
        "created_at": stamp,
        "updated_at": stamp,
        "allow_skip": True,
        "inner_id": task_id,
        "total_annotations": 1,
        "cancelled_annotations": 0,
        "total_predictions": 1 if parent_prediction else 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": project,
        "updated_by": None,
        "comment_authors": [],
    }


def build_export_object(
    export_format: ExportFormat,
    *,
    annotation_id: int,
    task_id: int,
    image_uri: str,
    results: Sequence[dict[str, Any]],
    project: int = 1,
    parent_prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    build = annotation_export_object if export_format == "annotation" else task_export_object
    return build(
        annotation_id=annotation_id,
        task_id=task_id,
        image_uri=image_uri,
        results=results,
        project=project,
        parent_prediction=parent_prediction,
    )


def encode_export_object(export_object: dict[str, Any], export_format: ExportFormat) -> bytes:
    """Serialise like Label Studio: compact per annotation, indented per task, no newline."""
    if export_format == "annotation":
        return json.dumps(export_object).encode("utf-8")
    return json.dumps(export_object, indent=2).encode("utf-8")


def export_object_uri(
    prefix: str, export_format: ExportFormat, task_id: int, annotation_id: int
) -> str:
    """Where Label Studio puts the object: ``<prefix>/<annotation id>`` or ``<prefix>/<task id>.json``."""
    if export_format == "annotation":
        return uri_io.join(prefix, str(annotation_id))
    return uri_io.join(prefix, f"{task_id}.json")


def normalise_key(object_uri: str) -> str:
    """Collapse repeated slashes in an object's key: ``s3://b/prefix//12`` → ``s3://b/prefix/12``."""
    scheme, separator, rest = object_uri.partition("://")
    if not separator:
        scheme, rest = "", object_uri
    while "//" in rest:
        rest = rest.replace("//", "/")
    return f"{scheme}://{rest}" if separator else rest
