"""Typed params: every tunable of every stage, loaded from ``params.yaml`` plus ``--set`` overrides.

Each stage reads only its own section. Unknown keys and wrong types are usage errors that name
the key (``train.epochs: Input should be a valid integer``). Defaults here equal the shipped
``params.yaml``, so a stage container without a params file behaves like the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from components.core.errors import UsageError

DEFAULT_PARAMS_FILE = "params.yaml"


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
    workers: int = Field(0, ge=0, description="parallel tile workers; 0 = from CPU count")
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
    presign: bool = Field(True, description="Label Studio serves tiles by presigned URLs")
    export_format: Literal["annotation", "task"] = Field(
        "annotation",
        description="annotate-from-truth writes one object per annotation (Label Studio's "
        "default) or per task (FUTURE_SAVE_TASK_TO_STORAGE)",
    )
    s3_endpoint: str = Field(
        "", description="S3 endpoint as the Label Studio server sees it; empty = the pipeline's"
    )
    sync_timeout_s: float = Field(600, gt=0, description="wait this long for a storage sync")


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


class TrainParams(Section):
    arch: Literal[
        "ssdlite320_mobilenet_v3_large",
        "ssdlite_mobilenet_v3_large_stride8",
        "fasterrcnn_resnet50_fpn_v2",
        "fasterrcnn_mobilenet_v3_large_fpn",
    ] = Field(
        "ssdlite320_mobilenet_v3_large",
        description="torchvision detector: ssdlite on CPU, fasterrcnn_resnet50_fpn_v2 on a GPU",
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
    fetch_attempts: int = Field(3, gt=0, description="tries per tile GET before giving up")
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


PipelineStage = Literal["prepare", "preprocess", "preview", "train", "export", "evaluate", "detect"]
CPU_QUANTITY = r"^([0-9]*[.])?[0-9]+m?$"
MEMORY_QUANTITY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"
S3_RETRIED_STAGES = ("prepare", "preprocess", "preview", "export", "evaluate", "detect")


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
    stages: list[PipelineStage] = Field(
        default_factory=lambda: ["train", "evaluate", "detect"],
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


# (cpu request, cpu limit, memory request, memory limit) per task
DEFAULT_RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "prepare": ("1", "4", "2Gi", "8Gi"),
    "preprocess": ("500m", "2", "1Gi", "4Gi"),
    "preview": ("500m", "2", "1Gi", "4Gi"),
    "train": ("4", "8", "16Gi", "32Gi"),
    "export": ("1", "4", "4Gi", "8Gi"),
    "evaluate": ("2", "4", "8Gi", "16Gi"),
    "detect": ("2", "4", "8Gi", "16Gi"),
}


def _default_resources(stage: str) -> dict[str, str]:
    return dict(zip(ResourceParams.model_fields, DEFAULT_RESOURCES[stage], strict=True))


class StageResourcesParams(Section):
    """CPU and memory of each task; a key left out keeps that task's default."""

    prepare: ResourceParams
    preprocess: ResourceParams
    preview: ResourceParams
    train: ResourceParams
    export: ResourceParams
    evaluate: ResourceParams
    detect: ResourceParams

    @model_validator(mode="before")
    @classmethod
    def _over_stage_defaults(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        merged: dict[str, Any] = {stage: _default_resources(stage) for stage in DEFAULT_RESOURCES}
        for stage, value in given.items():
            merged[stage] = {**merged.get(stage, {}), **value} if isinstance(value, dict) else value
        return merged


class RetryParams(Section):
    stages: list[PipelineStage] = Field(
        default_factory=lambda: [*S3_RETRIED_STAGES],
        description="tasks retried on failure (S3 hiccups); not train (long, resumable) by default",
    )
    max_retries: int = Field(3, ge=0, description="retries of a failed task")
    backoff_duration: str = Field("30s", pattern=r"^[0-9]+s$", description="first wait")
    backoff_factor: float = Field(2.0, ge=1, description="each wait is this times the last")
    backoff_max_duration: str = Field("1800s", pattern=r"^[0-9]+s$", description="longest wait")


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
    gpu: GpuParams = Field(default_factory=GpuParams)
    resources: StageResourcesParams = Field(default_factory=StageResourcesParams)
    retry: RetryParams = Field(default_factory=RetryParams)


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


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
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


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> Params:
    """Load ``params.yaml`` (missing default file: schema defaults), apply ``--set`` overrides."""
    tree: dict[str, Any] = {}
    params_path = Path(path) if path else Path(DEFAULT_PARAMS_FILE)
    if params_path.exists():
        try:
            loaded = yaml.safe_load(params_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{params_path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise UsageError(f"{params_path}: expected a mapping of sections")
        tree = loaded
    elif path:
        raise UsageError(f"params file not found: {path}")
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise UsageError(_format_validation_error(exc)) from exc


def default_params_yaml() -> str:
    """The schema defaults as YAML (what ``params.yaml`` ships with)."""
    return yaml.safe_dump(Params().model_dump(mode="json"), sort_keys=False)
