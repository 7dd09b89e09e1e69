"""The preprocess stage's work: list, fetch and parse the export objects, cap, split, write."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, AnnotationsFile, save_annotations
from components.core.errors import NotFoundError, SolarpipeError
from components.core.logs import get_logger
from components.core.manifest import Manifest, load_manifest
from components.core.params import Params
from components.preprocess.fetch import fetch_all, list_export_objects
from components.preprocess.parse import ParseReport, labelled_tiles, read_object
from components.preprocess.split import SPLITS, assign_splits, cap_empty_tiles

log = get_logger(__name__)
ANNOTATIONS_FILE = "annotations.json"
LISTED_MISSING_IMAGES = 5


@dataclass
class PreprocessSummary:
    """The stage's outcome, printed at the end."""

    output_uri: str
    report: ParseReport
    tasks_kept: int = 0
    empty_tiles: int = 0
    boxes: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    origins: Counter[str] = field(default_factory=Counter)  # of the written tiles' annotations

    def lines(self) -> list[str]:
        report = self.report
        splits = ", ".join(f"{name} {self.per_split.get(name, 0)}" for name in SPLITS)
        lines = [
            f"preprocess: {report.objects_read} objects read, {report.tasks_seen} tasks, "
            f"{self.tasks_kept} kept ({self.empty_tiles} without panels), {self.boxes} boxes; "
            f"{splits}; wrote {self.output_uri}"
        ]
        skipped = dict(report.skipped)
        if report.malformed:
            skipped["malformed (object or result)"] = len(report.malformed)
        if skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
            lines.append(f"skipped: {reasons}")
        origins = self.origins
        lines.append(
            f"annotations: {origins['manual']} drawn by hand, {origins['prediction']} from "
            f"accepted predictions, {origins['prediction-changed']} from corrected predictions "
            "(all human-approved; predictions alone are never ground truth)"
        )
        if report.keys_normalised:
            lines.append(f"{report.keys_normalised} keys with repeated slashes normalised")
        if report.not_in_manifest:
            shown = ", ".join(report.not_in_manifest[:LISTED_MISSING_IMAGES])
            more = len(report.not_in_manifest) - LISTED_MISSING_IMAGES
            lines.append(
                f"images not in the manifest: {shown}" + (f" and {more} more" if more > 0 else "")
            )
        return lines

    def markdown(self) -> str:
        """The summary as a page: counts per split, and what was left out and why."""
        report = self.report
        rows = ["| split | tiles |", "|---|---:|"]
        rows += [f"| {name} | {self.per_split.get(name, 0)} |" for name in SPLITS]
        dropped = dict(report.skipped)
        if report.malformed:
            dropped["malformed (object or result)"] = len(report.malformed)
        if report.not_in_manifest:
            dropped["image not in the manifest"] = len(report.not_in_manifest)
        left_out = [f"| {reason} | {count} |" for reason, count in sorted(dropped.items())]
        return "\n".join(
            [
                "# Ground truth",
                "",
                f"`{self.output_uri}`: {self.tasks_kept} tiles ({self.empty_tiles} without panels),"
                f" {self.boxes} boxes, from {report.objects_read} export objects of"
                f" {report.tasks_seen} tasks.",
                "",
                *rows,
                "",
                "## Left out",
                "",
                *(["| reason | count |", "|---|---:|", *left_out] if left_out else ["nothing"]),
                "",
            ]
        )


def output_file_uri(out_uri: str) -> str:
    """``--out`` names the JSON file, or a folder that gets ``annotations.json``."""
    return out_uri if out_uri.endswith(".json") else uri_io.join(out_uri, ANNOTATIONS_FILE)


def read_manifest(manifest_uri: str) -> Manifest:
    if not uri_io.exists(manifest_uri):
        raise NotFoundError(f"manifest not found: {manifest_uri} (run the prepare stage first)")
    return load_manifest(manifest_uri)


def preprocess(
    annotations_prefix: str, manifest_uri: str, out_uri: str, params: Params
) -> PreprocessSummary:
    """Build ``annotations.json`` from the export objects under ``annotations_prefix``."""
    settings = params.preprocess
    classes = list(params.labelstudio.labels)
    manifest = read_manifest(manifest_uri)
    if manifest.pixel_size_m is None:
        log.warning(
            "%s records no pixel size (prepared before pixel sizes were recorded): neither will "
            "the annotations nor the model trained on them; rerun prepare to record it",
            manifest_uri,
        )
    object_uris = list_export_objects(annotations_prefix)
    log.info("%d export objects under %s", len(object_uris), annotations_prefix)
    readings = fetch_all(object_uris, read_object, settings.workers, desc="preprocess")
    tiles, report = labelled_tiles(
        readings, manifest, classes, settings.min_box_size, settings.strict
    )
    if not tiles:
        raise SolarpipeError(
            f"none of the {report.objects_read} export objects under {annotations_prefix} "
            f"labels a tile of the manifest {manifest_uri} (skipped: {dict(report.skipped)}, "
            f"malformed: {len(report.malformed)})"
        )
    tiles, capped = cap_empty_tiles(tiles, settings.max_empty_fraction, settings.seed)
    if capped:
        report.skipped["empty tile over preprocess.max_empty_fraction"] += capped
    assignment = assign_splits(tiles, settings.split, settings.seed)
    images = [
        AnnotatedImage(
            image=tile.image,
            width=tile.width,
            height=tile.height,
            boxes=list(tile.boxes),
            labels=list(tile.labels),
            split=assignment[tile.image],
            task_id=tile.task_id,
            origin=tile.origin,
        )
        for tile in tiles
    ]
    output_uri = output_file_uri(out_uri)
    save_annotations(
        output_uri,
        AnnotationsFile(classes=classes, images=images, pixel_size_m=manifest.pixel_size_m),
    )
    return PreprocessSummary(
        output_uri=output_uri,
        report=report,
        tasks_kept=len(images),
        empty_tiles=sum(1 for image in images if not image.boxes),
        boxes=sum(len(image.boxes) for image in images),
        per_split={name: sum(1 for i in images if i.split == name) for name in SPLITS},
        origins=Counter(image.origin for image in images),
    )
