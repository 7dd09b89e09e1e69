"""The stages of the pipeline as data: the one place that names them and says what each does.

For every stage: its image family (``light`` without torch, ``torch``), whether it needs a GPU and
is retried on the cluster, its default resources, its input and output options (and where the
orchestrator points them), and the params it reads. Everything else derives from this list or is
checked against it: the per-stage params schema (:func:`components.core.params.stage_params`),
the stage command line (:mod:`components.core.stage`), the image build targets and
``solarpipe images`` / ``run-stage``, the tasks of ``pipeline.py``; a test holds the hand-written
``dvc.yaml`` to it. A new stage is one entry here plus its folder ``components/<name>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ImageFamily = Literal["light", "torch"]


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of a stage's pod."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class Option:
    """One I/O option of a stage (``--<name> URI``) and where an orchestrator points it.

    ``source`` is a ``data.*`` params key (``data.raster``: the run's input, or a shared location
    such as ``data.tiles``), the name of an upstream stage (the URI that stage hands down), or a
    path under the stage's own output folder of the run (``./manifest.json``; ``.`` is the folder).
    """

    name: str
    source: str
    help: str

    @property
    def from_params(self) -> bool:
        return self.source.startswith("data.")

    @property
    def in_run_folder(self) -> bool:
        return self.source == "." or self.source.startswith("./")


@dataclass(frozen=True)
class Flag:
    """An on/off option of a stage (``--<name>``)."""

    name: str
    help: str


@dataclass(frozen=True)
class Report:
    """A page for people a stage writes when asked (``--report NAME PATH``); Kubeflow shows it."""

    name: str
    kind: Literal["HTML", "Markdown"]
    help: str


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    image: ImageFamily
    gpu: bool
    retried: bool
    resources: Resources
    inputs: tuple[Option, ...]  # what the stage reads
    outputs: tuple[Option, ...]  # what it writes
    hands_down: str  # the run-folder path downstream stages read ("." = the whole folder)
    params: tuple[str, ...]  # params sections ("train") or keys ("prepare.nodata") it reads
    # False when an input changes under the same URI (an orchestrator must not reuse a result)
    cacheable: bool = True
    reports: tuple[Report, ...] = ()
    flags: tuple[Flag, ...] = ()
    # The `solarpipe shards` action that joins its parts when it runs as `--shard I/N`
    # (disjoint parts of the work, one per pod); empty: the stage does not shard
    merge: str = ""

    @property
    def shardable(self) -> bool:
        return bool(self.merge)

    @property
    def module(self) -> str:
        return f"components.{self.name}"

    @property
    def options(self) -> tuple[Option, ...]:
        return self.inputs + self.outputs

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(option.source for option in self.inputs if option.source in STAGE_NAMES)

    @property
    def params_sections(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key.split(".", 1)[0] for key in self.params))


FOLDER = "output folder URI (local path or s3://)"

STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare",
        summary="cut a GeoTIFF/VRT into PNG tiles and write their manifest",
        image="light",
        gpu=False,
        retried=True,
        resources=Resources("1", "4", "2Gi", "8Gi"),
        inputs=(
            Option("raster", "data.raster", "GeoTIFF/VRT URI, or a prefix/ of GeoTIFFs (a mosaic)"),
        ),
        outputs=(
            Option("tiles", "data.tiles", "URI prefix the PNG tiles go to"),
            Option(
                "manifest", "./manifest.json", "URI of the manifest JSON (a prefix/ with --shard)"
            ),
        ),
        hands_down="manifest.json",
        params=("prepare",),
        merge="merge-manifests",
    ),
    Stage(
        name="preprocess",
        summary="turn Label Studio's export objects into one split annotations.json",
        image="light",
        gpu=False,
        retried=True,
        resources=Resources("500m", "2", "1Gi", "4Gi"),
        inputs=(
            Option(
                "annotations", "data.annotations", "URI prefix of the Label Studio export objects"
            ),
            Option("manifest", "prepare", "prepare manifest URI"),
        ),
        outputs=(
            Option(
                "out",
                "./annotations.json",
                "annotations JSON URI to write (a URI not ending in .json is a folder that gets "
                "annotations.json)",
            ),
        ),
        hands_down="annotations.json",
        params=("preprocess", "labelstudio.labels"),
        cacheable=False,  # the annotations prefix changes whenever someone labels a tile
        reports=(
            Report(
                "summary",
                "Markdown",
                "tiles, boxes, split sizes, empty tiles, what was dropped and why",
            ),
        ),
    ),
    Stage(
        name="preview",
        summary="draw the ground truth on sample tiles: PNGs, an HTML gallery, a summary",
        image="light",
        gpu=False,
        retried=True,
        resources=Resources("500m", "2", "1Gi", "4Gi"),
        inputs=(Option("annotations", "preprocess", "annotations.json URI (preprocess)"),),
        outputs=(Option("out", ".", FOLDER),),
        hands_down=".",
        params=("preview",),
        reports=(Report("gallery", "HTML", "the sampled tiles with their boxes, images inline"),),
    ),
    Stage(
        name="train",
        summary="train a torchvision detector with Lightning, streaming tiles from S3",
        image="torch",
        gpu=True,
        retried=True,  # a preempted node: the retry resumes from <out>/last.ckpt
        resources=Resources("4", "8", "16Gi", "32Gi"),
        inputs=(Option("annotations", "preprocess", "annotations.json (preprocess output)"),),
        outputs=(
            Option(
                "out", ".", "output folder: model.ckpt, last.ckpt, metrics.json, params.yaml, logs/"
            ),
        ),
        hands_down="model.ckpt",
        params=("train",),
        reports=(Report("curve", "Markdown", "validation mAP and training loss, epoch by epoch"),),
        flags=(Flag("resume", "continue from <out>/last.ckpt when it exists"),),
    ),
    Stage(
        name="export",
        summary="script the detector to TorchScript and package a BentoML model",
        image="torch",
        gpu=False,
        retried=True,
        resources=Resources("1", "4", "4Gi", "8Gi"),
        inputs=(Option("checkpoint", "train", "model.ckpt URI from the train stage"),),
        outputs=(Option("out", ".", FOLDER),),
        hands_down=".",
        params=("export",),
    ),
    Stage(
        name="evaluate",
        summary="score the exported model on the test split: mAP, P/R/F1, PR curve, overlays",
        image="torch",
        gpu=True,
        retried=True,
        resources=Resources("2", "4", "8Gi", "16Gi"),
        inputs=(
            Option("annotations", "preprocess", "annotations.json URI"),
            Option("model", "export", "export folder/prefix URI, or the model.pt in it"),
        ),
        outputs=(Option("out", ".", FOLDER),),
        hands_down=".",
        params=("evaluate",),
        reports=(
            Report("overlays", "HTML", "metrics and the best and worst tiles, images inline"),
        ),
    ),
    Stage(
        name="detect",
        summary="detect panels over a whole raster and write them as GeoJSON",
        image="torch",
        gpu=True,
        retried=True,
        resources=Resources("2", "4", "8Gi", "16Gi"),
        inputs=(
            Option("raster", "data.raster", "GeoTIFF/VRT URI, or a prefix/ of GeoTIFFs (a mosaic)"),
            Option("model", "export", "export folder/prefix URI, or the model.pt in it"),
        ),
        outputs=(
            Option(
                "out",
                "./detections.geojson",
                "GeoJSON URI to write (with --shard: the part's URI or prefix/)",
            ),
        ),
        hands_down="detections.geojson",
        params=("detect", "prepare.nodata", "prepare.uint16_max"),
        merge="merge-detections",
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    """The declared stage ``name``; a ``KeyError`` naming the stages otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None


def stage_edges() -> set[tuple[str, str]]:
    """(upstream, downstream) pairs of the graph."""
    return {(up, declared.name) for declared in STAGES for up in declared.upstream}
