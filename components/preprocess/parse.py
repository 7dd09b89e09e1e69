"""Turn fetched export objects into labelled tiles: one winning annotation per task, boxes in pixels.

Rules: the latest non-cancelled annotation of a task wins (``updated_at``, then id); a task whose
annotations are all cancelled (skipped) is left out, as is a task without annotations
(unlabeled); an empty result means "no panels" and is kept; predictions and drafts are ignored;
only tiles of the manifest are kept. An annotation made from a model's prediction is a human
annotation like any other (the person accepted or corrected it); each tile records its origin.
Rotated rectangles and polygons become the axis-aligned box that encloses them, clipped to the
tile; boxes narrower than ``min_box_size`` are dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from components.core.annotations import AnnotationOrigin
from components.core.errors import SolarpipeError
from components.core.logs import get_logger
from components.core.manifest import Manifest, TileRecord
from components.labelstudio.export_objects import (
    ExportedAnnotation,
    ExportedTask,
    MalformedObjectError,
    UnsupportedResultError,
    annotation_origin,
    normalise_key,
    parse_export_bytes,
    region_from_result,
)

log = get_logger(__name__)
LOGGED_PROBLEMS = 20


@dataclass(frozen=True)
class ObjectReading:
    """One fetched object: its normalised key and either the task it carries or why not."""

    key: str
    key_normalised: bool = False  # the listed key had repeated slashes
    task: ExportedTask | None = None
    problem: str | None = None  # malformed: why
    vanished: bool = False  # deleted between listing and fetching


@dataclass(frozen=True)
class LabelledTile:
    """A manifest tile with the boxes of its winning annotation (none: no panels)."""

    image: str
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[str, ...]
    task_id: int
    recency: tuple[datetime, int]
    origin: AnnotationOrigin = "manual"

    @property
    def has_panels(self) -> bool:
        return bool(self.boxes)


@dataclass
class ParseReport:
    """What happened to every object, task and result, for the stage's summary."""

    objects_read: int = 0
    keys_normalised: int = 0
    malformed: list[tuple[str, str]] = field(default_factory=list)
    tasks_seen: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    not_in_manifest: list[str] = field(default_factory=list)


def read_object(object_uri: str, data: bytes | None) -> ObjectReading:
    """Decode one fetched object (runs on the fetch threads)."""
    key = normalise_key(object_uri)
    normalised = key != object_uri
    if data is None:
        return ObjectReading(key, normalised, vanished=True)
    try:
        return ObjectReading(key, normalised, task=parse_export_bytes(data, key))
    except MalformedObjectError as exc:
        return ObjectReading(key, normalised, problem=str(exc))


def _malformed(report: ParseReport, key: str, problem: str, strict: bool) -> None:
    if strict:
        raise SolarpipeError(f"malformed export object {key}: {problem} (preprocess.strict: true)")
    report.malformed.append((key, problem))
    if len(report.malformed) <= LOGGED_PROBLEMS:
        log.warning("skipped malformed export object %s: %s", key, problem)
    elif len(report.malformed) == LOGGED_PROBLEMS + 1:
        log.warning("more malformed export objects: counted, not listed")


def merge_tasks(
    readings: Iterable[ObjectReading], report: ParseReport, strict: bool
) -> dict[tuple[int, str], dict[int, ExportedAnnotation]]:
    """(task id, image) → its annotations by id, over all objects (a duplicate keeps the latest)."""
    tasks: dict[tuple[int, str], dict[int, ExportedAnnotation]] = {}
    for reading in readings:
        report.objects_read += 1
        if reading.vanished:
            report.skipped["object deleted while reading"] += 1
            continue
        if reading.task is None:
            _malformed(report, reading.key, reading.problem or "unreadable", strict)
            continue
        task = reading.task
        annotations = tasks.setdefault((task.task_id, task.image), {})
        for annotation in task.annotations:
            known = annotations.get(annotation.annotation_id)
            if known is None or annotation.recency() > known.recency():
                annotations[annotation.annotation_id] = annotation
    report.tasks_seen = len(tasks)
    return tasks


def winning_annotation(
    annotations: Iterable[ExportedAnnotation], report: ParseReport
) -> ExportedAnnotation | None:
    """The latest non-cancelled annotation; None (counted) for cancelled or unlabeled tasks."""
    candidates = list(annotations)
    if not candidates:
        report.skipped["unlabeled task"] += 1
        return None
    completed = [a for a in candidates if not a.was_cancelled]
    if not completed:
        report.skipped["cancelled (skipped) task"] += 1
        return None
    return max(completed, key=ExportedAnnotation.recency)


def tile_boxes(
    annotation: ExportedAnnotation,
    tile: TileRecord,
    classes: list[str],
    min_box_size: float,
    report: ParseReport,
    strict: bool,
) -> tuple[list[tuple[float, float, float, float]], list[str]]:
    """The annotation's regions as clipped pixel boxes with their labels."""
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[str] = []
    for result in annotation.results:
        try:
            region = region_from_result(result, tile.width, tile.height)
        except UnsupportedResultError as exc:
            report.skipped[f"result of type {exc.result_type}"] += 1
            continue
        except MalformedObjectError as exc:
            _malformed(report, annotation.source_key, f"a result: {exc}", strict)
            continue
        if region.label not in classes:
            report.skipped[f"label {region.label!r} not in labelstudio.labels"] += 1
            continue
        clipped = region.box.clipped(tile.width, tile.height)
        if clipped.width < min_box_size or clipped.height < min_box_size:
            report.skipped["degenerate box (< preprocess.min_box_size)"] += 1
            continue
        boxes.append(clipped.as_list())
        labels.append(region.label)
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i], labels[i]))
    return [boxes[i] for i in order], [labels[i] for i in order]


def labelled_tiles(
    readings: Iterable[ObjectReading],
    manifest: Manifest,
    classes: list[str],
    min_box_size: float,
    strict: bool,
) -> tuple[list[LabelledTile], ParseReport]:
    """Every manifest tile with a winning annotation, sorted by image URI; and the report."""
    report = ParseReport()
    readings = list(readings)
    report.keys_normalised = sum(reading.key_normalised for reading in readings)
    tiles_by_uri = {normalise_key(tile.uri): tile for tile in manifest.tiles}
    by_image: dict[str, LabelledTile] = {}
    tasks = merge_tasks(readings, report, strict)
    for task_id, image in sorted(tasks):
        winner = winning_annotation(tasks[(task_id, image)].values(), report)
        if winner is None:
            continue
        tile = tiles_by_uri.get(normalise_key(image))
        if tile is None:
            report.skipped["image not in the manifest"] += 1
            report.not_in_manifest.append(image)
            continue
        boxes, labels = tile_boxes(winner, tile, classes, min_box_size, report, strict)
        labelled = LabelledTile(
            tile.uri,
            tile.width,
            tile.height,
            tuple(boxes),
            tuple(labels),
            task_id,
            winner.recency(),
            annotation_origin(winner),
        )
        earlier = by_image.get(tile.uri)
        if earlier is not None:
            report.skipped["older task of the same image"] += 1
            if earlier.recency >= labelled.recency:
                continue
        by_image[tile.uri] = labelled
    return [by_image[image] for image in sorted(by_image)], report
