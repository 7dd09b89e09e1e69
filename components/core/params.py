"""Typed params: every tunable of every stage, loaded from a params document plus ``--set``.

The document is ``params.yaml`` for ``dvc repro``, or any URI (a Kubeflow run's stages read
``s3://<bucket>/runs/<run id>/params.yaml``). Unknown keys and wrong types are usage errors that
name the key (``train.epochs: Input should be a valid integer``). Defaults here equal the shipped
``params.yaml``. A stage sees only the params its declaration lists (:func:`stage_params`): the
per-stage schema, whose digest tells whether two runs gave a stage the same values.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from components.core import uri as uri_io
from components.core.errors import NotFoundError, UsageError
from components.core.stages import STAGE_NAMES, STAGES, stage

DEFAULT_PARAMS_FILE = "params.yaml"
# Named sets of changes over params.yaml (profiles/gpu.yaml: the GPU pool), in the source tree.
PROFILES = Path(__file__).resolve().parents[2] / "profiles"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataParams(Section):
    """Where the pipeline's data lives when ``dvc repro`` runs it (Kubeflow passes its own)."""

    bucket: str = Field("solarpipe", description="bucket the quickstart creates and uses")
    raster: str = Field("s3://solarpipe/scenes/synthetic.tif", description="source GeoTIFF/VRT URI")
    tiles: str = Field("s3://solarpipe/tiles", description="URI prefix of the PNG tiles")
    annotations: str = Field(
        "s3://solarpipe/annotations", description="Label Studio export storage prefix"
    )


class PrepareParams(Section):
    tile_size: int = Field(256, gt=0, description="tile edge in pixels")
    overlap: int = Field(0, ge=0, description="pixels shared by neighbouring tiles")
    edge: Literal["pad", "drop"] = Field("pad", description="edge tiles: pad with nodata or drop")
    skip_nodata: bool = Field(True, description="skip tiles that are entirely nodata")
    nodata: int | None = Field(None, description="nodata value when the raster declares none")
    aoi: str = Field("", description="optional boundary file (GeoJSON/GPKG URI) to crop to")
    uint16_max: int = Field(
        65535, gt=0, description="uint16 rasters are scaled to 8 bit as value*255/uint16_max"
    )
    workers: int = Field(
        0, ge=0, description="tile worker processes; 0 = the CPUs this process may use"
    )
    scene: str = Field("", description="scene name in tile keys; empty = raster file stem")


class SplitParams(Section):
    train: float = Field(0.7, ge=0, le=1, description="share of tiles for training")
    val: float = Field(
        0.15, ge=0, le=1, description="share of tiles for validation (best checkpoint)"
    )
    test: float = Field(0.15, ge=0, le=1, description="share of tiles for evaluate")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class LabelStudioParams(Section):
    title: str = Field("solarpipe solar panels", description="project title (finds the project)")
    labels: list[str] = Field(
        default_factory=lambda: ["solar_panel"], description="RectangleLabels; the classes"
    )
    regex_filter: str = Field(r".*\.png$", description="tiles the import storage picks up")
    use_blob_urls: bool = Field(True, description="one task per image object")
    presign: bool | Literal["auto"] = Field(
        "auto",
        description="tiles reach the annotator's browser by presigned S3 URLs (true) or through "
        "the Label Studio server (false); auto: presigned for AWS S3 only (an in-cluster or "
        "loopback endpoint is not the browser's)",
    )
    export_format: Literal["annotation", "task"] = Field(
        "annotation",
        description="annotate-from-truth writes one object per annotation (Label Studio's "
        "default) or per task (FUTURE_SAVE_TASK_TO_STORAGE)",
    )
    s3_endpoint: str = Field(
        "", description="S3 endpoint as the Label Studio server sees it; empty = the pipeline's"
    )
    sync_timeout_s: float = Field(600, gt=0, description="wait this long for a storage sync")
    priority: Literal["margin", "middling", "random"] = Field(
        "margin",
        description="which unlabeled tiles come first: margin = a box score nearest "
        "score_threshold; middling = the most boxes with middling scores; random = seeded shuffle",
    )
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="predict uploads boxes from this score; the priority's decision threshold; "
        "null = the model's own",
    )
    candidate_score: float = Field(
        0.05, ge=0, le=1, description="boxes from this score count for the priority (not uploaded)"
    )
    seed: int = Field(0, description="seed of the random priority")
    page_size: int = Field(
        100, gt=0, le=1000, description="tasks listed, predicted and uploaded per batch"
    )
    batch_size: int = Field(8, gt=0, description="tiles per forward pass of predict")
    workers: int = Field(8, gt=0, description="concurrent tile downloads of predict")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where predict runs the model; auto = CUDA when present"
    )
    on_missing_tile: Literal["fail", "skip"] = Field(
        "fail", description="a task whose tile is gone from S3 stops predict or is skipped"
    )
    uncertainty_sampling: bool = Field(
        True,
        description="predict sets the project to uncertainty sampling: Label All Tasks serves the "
        "lowest task score (most useful tile) first",
    )
    view_title: str = Field(
        "solarpipe: uncertain first",
        description="Data Manager tab predict keeps: unlabeled tasks, most useful first",
    )


class PreprocessParams(Section):
    strict: bool = Field(False, description="a malformed export object is fatal, not skipped")
    max_empty_fraction: float | None = Field(
        0.5, ge=0, le=1, description="cap on the share of tiles without panels; null = no cap"
    )
    split: SplitParams = Field(default_factory=SplitParams)
    seed: int = Field(42, description="seed of the empty-tile cap and of the split")
    min_box_size: float = Field(2.0, ge=0, description="boxes narrower than this (px) are dropped")
    workers: int = Field(16, gt=0, description="concurrent object fetches")


class PreviewParams(Section):
    samples: int = Field(8, ge=0, description="tiles drawn per split")
    line_width: int = Field(2, gt=0, description="box outline in pixels")
    seed: int = Field(0, description="seed of the tile choice")


# The torchvision detectors train can build (components/ml/detector.py maps each to a model).
Architecture = Literal[
    "ssdlite320_mobilenet_v3_large",
    "ssdlite_mobilenet_v3_large_stride8",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
]


class TrainParams(Section):
    arch: Architecture = Field(
        "ssdlite_mobilenet_v3_large_stride8",
        description="detector: ssdlite with a stride-8 map (panels of 10-30 px) on CPU, "
        "fasterrcnn_resnet50_fpn_v2 on a GPU",
    )
    anchor_ratios: list[Annotated[float, Field(gt=1)]] = Field(
        default_factory=lambda: [2.0, 3.0],
        min_length=1,
        description="ssdlite: anchor aspect ratios besides 1:1, each landscape and portrait",
    )
    pretrained: Literal["none", "coco", "imagenet"] = Field(
        "none", description="initial weights; coco/imagenet download them (network needed)"
    )
    epochs: int = Field(30, gt=0, description="passes over the train split")
    max_minutes: float | None = Field(
        7.5, gt=0, description="stop training after this long (the schedule fits it); null = no cap"
    )
    batch_size: int = Field(8, gt=0, description="tiles per step (per device)")
    lr: float = Field(0.003, gt=0, description="peak learning rate")
    optimizer: Literal["sgd", "adamw"] = Field("adamw", description="optimizer")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay")
    scheduler: Literal["none", "cosine", "onecycle", "step"] = Field(
        "cosine", description="learning-rate schedule after the warm-up"
    )
    image_size: int = Field(256, gt=0, description="model input edge in px (tiles are resized)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    cpu_threads: int = Field(
        0,
        ge=0,
        description="torch threads of the training process; 0 = the cores it may use (affinity, "
        "cgroup CPU limit); 1 is several times faster when other work shares the cores",
    )
    persistent_workers: bool = Field(
        True, description="keep the DataLoader worker processes between epochs"
    )
    prefetch: int = Field(8, ge=0, description="concurrent S3 GETs ahead of the sampler per worker")
    cache_dir: str = Field("", description="local tile cache; empty = off")
    early_stopping_patience: int = Field(
        0, ge=0, description="epochs without a better val mAP before stopping; 0 = off"
    )
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = Field(
        "auto", description="auto: bf16-mixed (or 16-mixed) on CUDA, 32-true on CPU"
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = Field(
        "auto", description="where to train; gpu without CUDA fails unless fallback_to_cpu"
    )
    devices: int | str = Field("auto", description="devices to use (several GPUs: DDP)")
    seed: int = Field(0, description="seed of initialisation, sampling and augmentation")
    limit_train_batches: float | int | None = Field(
        None, description="cap batches per epoch (int) or share of them (float); tests"
    )
    on_missing_image: Literal["fail", "skip"] = Field(
        "fail", description="a tile missing on S3 fails the run or is skipped with a count"
    )
    fetch_attempts: int = Field(
        0, ge=0, description="tries per tile GET; 0 = SOLARPIPE_S3_MAX_ATTEMPTS (default 5)"
    )
    augment: bool = Field(True, description="random flips, 90° turns and colour jitter")
    color_jitter: float = Field(0.0, ge=0, le=1, description="colour jitter strength; 0 = off")
    coarsen_max: float = Field(
        1.0,
        ge=1,
        description="augmentation: half the tiles get pixels up to this many times coarser "
        "(shrunk, enlarged back), like imagery of larger pixels resampled; 1 = off",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="share of the budget (epochs or time) for linear warm-up"
    )
    fallback_to_cpu: bool = Field(
        False, description="train on CPU when train.accelerator asks for a GPU that is absent"
    )
    bn_recalibration_batches: int = Field(
        2, ge=0, description="recent train batches that re-estimate BatchNorm stats; 0 = off"
    )


class ExportParams(Section):
    name: str = Field("solar_panel_detector", description="BentoML model name")
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="default score threshold inside the scripted model; null = the one with "
        "the best F1 on the val split (recorded by train)",
    )
    parity_atol: float = Field(1e-3, gt=0, description="eager vs TorchScript tolerance (px, score)")
    parity_samples: int = Field(4, gt=0, description="sample images of the parity check")
    archive: Literal["tar.gz", "bentomodel"] = Field(
        "tar.gz",
        description="BentoML model archive: tar.gz (fast) or bentomodel (xz: ~25x slower, ~2% smaller)",
    )


class EvaluateParams(Section):
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="precision/recall/F1 count detections above this score; null = the model's",
    )
    iou_threshold: float = Field(0.5, gt=0, le=1, description="IoU that makes a detection a hit")
    overlays: int = Field(4, ge=0, description="best and worst tiles drawn")
    split: Literal["train", "val", "test"] = Field("test", description="split to score")
    batch_size: int = Field(8, gt=0, description="tiles per forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present")


class DetectParams(Section):
    window: int = Field(
        0,
        ge=0,
        description="window edge in pixels at the model's pixel size; 0 = the model's image_size",
    )
    overlap: int = Field(
        64, ge=0, description="pixels (at the model's pixel size) shared by neighbouring windows"
    )
    batch_size: int = Field(4, gt=0, description="windows per forward pass")
    score_threshold: float | None = Field(
        None, ge=0, le=1, description="detections kept above this score; null = the model's own"
    )
    nms_iou: float = Field(0.5, gt=0, le=1, description="IoU above which seam duplicates merge")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present")
    resample: Literal["auto", "force", "never"] = Field(
        "auto",
        description="read a raster of another pixel size at the model's: auto = within "
        "0.25x-4x of it (refused outside), force = at any ratio, never = at the raster's own pixels",
    )


StageName = Literal[STAGE_NAMES]  # type: ignore[valid-type]
CPU_QUANTITY = r"^([0-9]*[.])?[0-9]+m?$"
MEMORY_QUANTITY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


def _number_as_text(value: Any) -> Any:
    """``--set kubeflow.resources.train.cpu_limit=8`` parses 8 as a number; quantities are text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


CpuQuantity = Annotated[str, BeforeValidator(_number_as_text), Field(pattern=CPU_QUANTITY)]
MemoryQuantity = Annotated[str, BeforeValidator(_number_as_text), Field(pattern=MEMORY_QUANTITY)]


class TolerationParams(Section):
    key: str = Field("", description="taint key; empty with operator Exists tolerates every taint")
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str = Field("", description="taint value (operator Equal only)")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


def _default_tolerations() -> list[TolerationParams]:
    return [
        TolerationParams(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
        TolerationParams(
            key="solarpipe.io/pool", operator="Equal", value="gpu", effect="NoSchedule"
        ),
    ]


class GpuParams(Section):
    stages: list[StageName] = Field(
        default_factory=lambda: [stage.name for stage in STAGES if stage.gpu],
        description="tasks that request accelerators and go to the GPU node pool",
    )
    accelerator_type: str = Field("nvidia.com/gpu", description="resource name of the accelerator")
    accelerator_limit: int = Field(1, ge=0, description="accelerators per GPU task; 0 = none")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"solarpipe.io/pool": "gpu"},
        description="node labels of the GPU node pool",
    )
    tolerations: list[TolerationParams] = Field(
        default_factory=_default_tolerations, description="taints of the GPU node pool to tolerate"
    )
    shm_size: MemoryQuantity = Field("2Gi", description="in-memory /dev/shm for DataLoader workers")

    @model_validator(mode="after")
    def _limit_needs_type(self) -> GpuParams:
        if self.stages and self.accelerator_limit > 0 and not self.accelerator_type.strip():
            raise ValueError(
                f"accelerator_limit {self.accelerator_limit} needs an accelerator_type "
                "(e.g. nvidia.com/gpu), or set accelerator_limit 0"
            )
        return self


class ResourceParams(Section):
    cpu_request: CpuQuantity = "500m"
    cpu_limit: CpuQuantity = "2"
    memory_request: MemoryQuantity = "1Gi"
    memory_limit: MemoryQuantity = "4Gi"


class _OverStageDefaults(Section):
    """A key left out of ``kubeflow.resources.<stage>`` keeps that stage's declared default."""

    @model_validator(mode="before")
    @classmethod
    def _over_stage_defaults(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        merged: dict[str, Any] = {stage.name: asdict(stage.resources) for stage in STAGES}
        for name, value in given.items():
            merged[name] = {**merged.get(name, {}), **value} if isinstance(value, dict) else value
        return merged


# One field per declared stage: its requests and limits (defaults from the declaration).
StageResourcesParams = create_model(
    "StageResourcesParams",
    __base__=_OverStageDefaults,
    __doc__="CPU and memory of each task; a key left out keeps that task's default.",
    **{  # type: ignore[call-overload]
        stage.name: (
            ResourceParams,
            Field(default_factory=lambda stage=stage: ResourceParams(**asdict(stage.resources))),
        )
        for stage in STAGES
    },
)


class RetryParams(Section):
    stages: list[StageName] = Field(
        default_factory=lambda: [stage.name for stage in STAGES if stage.retried],
        description="tasks retried on failure (S3 hiccups, a preempted node; train resumes)",
    )
    max_retries: int = Field(3, ge=0, description="retries of a failed task")
    backoff_duration: str = Field("30s", pattern=r"^[0-9]+s$", description="first wait")
    backoff_factor: float = Field(2.0, ge=1, description="each wait is this times the last")
    backoff_max_duration: str = Field("1800s", pattern=r"^[0-9]+s$", description="longest wait")


class DeployParams(Section):
    """The pipeline's last step: roll the serving Deployment (k8s/serving) to the new model."""

    enabled: bool = Field(True, description="deploy a model that passes the quality gate")
    deployment: str = Field(
        "solarpipe-serve", min_length=1, description="serving Deployment in kubeflow.namespace"
    )
    timeout_s: float = Field(900, gt=0, description="give up waiting for the rollout after this")


class PredictTaskParams(Section):
    """The labeling loop on the cluster: after export, ``solarpipe labelstudio predict`` puts
    the new model's boxes on the project's unlabeled tasks as pre-annotations."""

    enabled: bool = Field(False, description="run the predict task (needs Label Studio)")
    url: str = Field(
        "http://labelstudio:8080",
        pattern=r"^https?://",
        description="Label Studio as the task's pod reaches it (k8s/base's Service)",
    )
    secret: str = Field(
        "solarpipe-labelstudio",
        min_length=1,
        description="Secret whose LABEL_STUDIO_USER_TOKEN is the API token (k8s/secret)",
    )


class KubeflowParams(Section):
    """How ``pipeline.py`` builds and submits the Kubeflow run (the stages never read it).

    The run's inputs and bucket default to the ``data`` section; outputs go to
    ``s3://<data.bucket>/runs/<run id>/<stage>/``.
    """

    registry: str = Field("", description="image registry prefix, e.g. ghcr.io/org; empty = local")
    tag: str = Field("", description="image tag; empty = the project version")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="pull policy of every task's image"
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets for a private registry"
    )
    s3_secret: str = Field("solarpipe-s3", min_length=1, description="Secret with the AWS_* keys")
    namespace: str = Field("solarpipe", description="namespace of the run's pods and the Secret")
    service_account: str = Field(
        "solarpipe-pipeline", description="service account of the run (k8s/); empty = KFP's"
    )
    experiment: str = Field("solarpipe", description="KFP experiment of submitted runs")
    run_as_user: int = Field(10001, gt=0, description="non-root UID of every task (the images')")
    run_as_group: int = Field(10001, gt=0, description="GID of every task")
    caching: bool = Field(True, description="cache tasks by default (preprocess never is)")
    shards: int = Field(
        1, ge=1, description="prepare and detect fan out over this many pods (ParallelFor)"
    )
    shard_parallelism: int = Field(
        0, ge=0, description="shard pods running at once; 0 = all of them"
    )
    min_map50: float = Field(
        0.5,
        ge=0,
        le=1,
        description="quality gate: detect runs only if evaluate's mAP@0.5 reaches it",
    )
    gpu: GpuParams = Field(default_factory=GpuParams)
    resources: StageResourcesParams = Field(default_factory=StageResourcesParams)  # type: ignore[valid-type]
    retry: RetryParams = Field(default_factory=RetryParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    labelstudio_predict: PredictTaskParams = Field(default_factory=PredictTaskParams)


class Params(Section):
    data: DataParams = Field(default_factory=DataParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    labelstudio: LabelStudioParams = Field(default_factory=LabelStudioParams)
    preprocess: PreprocessParams = Field(default_factory=PreprocessParams)
    preview: PreviewParams = Field(default_factory=PreviewParams)
    train: TrainParams = Field(default_factory=TrainParams)
    export: ExportParams = Field(default_factory=ExportParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    detect: DetectParams = Field(default_factory=DetectParams)
    kubeflow: KubeflowParams = Field(default_factory=KubeflowParams)


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``a.b.c``, creating sections on the way."""
    node = tree
    *parents, leaf = dotted_key.split(".")
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {dotted_key}: {name} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` → (key, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or "." not in key:
        raise UsageError(f"--set expects section.key=value, got {text!r}")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {key}: value is not valid YAML ({exc})") from exc


def _format_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{key}: {message}")
    return "invalid params: " + "; ".join(problems)


def read_params_tree(path: str | Path | None) -> dict[str, Any]:
    """The params document at ``path`` (any URI) as a tree; ``None``: ./params.yaml if present."""
    if path is None:
        if not Path(DEFAULT_PARAMS_FILE).exists():
            return {}
        path = DEFAULT_PARAMS_FILE
    try:
        text = uri_io.read_text(str(path))
    except NotFoundError as exc:
        raise UsageError(f"params file not found: {path}") from exc
    return parse_params_text(text, str(path))


def parse_params_text(text: str, source: str) -> dict[str, Any]:
    """A params document's YAML text as a tree; ``source`` names it in errors."""
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"{source}: expected a mapping of sections")
    return loaded


def validate_params(tree: dict[str, Any]) -> Params:
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise UsageError(_format_validation_error(exc)) from exc


def merge_tree(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` applied over ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tree(merged[key], value)
        else:
            merged[key] = value
    return merged


def profile_tree(profile: str) -> dict[str, Any]:
    """A profile (``profiles/<name>.yaml`` of the project, or a file's URI) as a params tree."""
    candidate = PROFILES / f"{profile}.yaml"
    if candidate.is_file():
        return read_params_tree(candidate)
    if "/" in profile or profile.endswith((".yaml", ".yml")):
        return read_params_tree(profile)
    known = ", ".join(sorted(path.stem for path in PROFILES.glob("*.yaml"))) or "none"
    raise UsageError(f"--profile {profile}: no such profile (profiles: {known})")


def load_params(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    profile: str | None = None,
) -> Params:
    """Load a params document (no default file: schema defaults), apply a profile over it, then
    ``--set`` overrides."""
    tree = read_params_tree(path)
    if profile:
        tree = merge_tree(tree, profile_tree(profile))
    for text in overrides or []:
        set_dotted(tree, *parse_override(text))
    return validate_params(tree)


def params_yaml(params: BaseModel) -> str:
    """Params as the YAML document a run writes and its stages read."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# The per-stage schema: only the sections and keys a stage's declaration lists


def _section_model(section: str) -> type[Section]:
    return Params.model_fields[section].annotation  # type: ignore[return-value]


@functools.cache
def stage_params_model(name: str) -> type[Section]:
    """The params schema of stage ``name``: its declared sections, or keys of a section."""
    declared = stage(name)
    fields: dict[str, Any] = {}
    for section in declared.params_sections:
        model = _section_model(section)
        keys = [key.split(".", 1)[1] for key in declared.params if key.startswith(f"{section}.")]
        if keys:
            model = create_model(
                f"{model.__name__}For{name.title()}",
                __base__=Section,
                **{
                    key: (model.model_fields[key].annotation, model.model_fields[key])
                    for key in keys
                },
            )
        fields[section] = (model, ...)
    return create_model(f"{name.title()}StageParams", __base__=Section, **fields)


def stage_params(name: str, params: Params) -> Section:
    """The part of ``params`` stage ``name`` reads (``params.<section>.<key>`` as in Params)."""
    declared = stage(name)
    include: dict[str, Any] = {section: True for section in declared.params_sections}
    for key in declared.params:
        section, _, field = key.partition(".")
        if field:
            include[section] = include[section] if isinstance(include[section], set) else set()
            include[section].add(field)
    return stage_params_model(name).model_validate(params.model_dump(include=include))


def params_digest(values: BaseModel) -> str:
    """SHA-256 of the values (canonical JSON): equal digests, equal params."""
    text = json.dumps(values.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
