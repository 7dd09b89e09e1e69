"""The Kubeflow pipeline: one container task per stage image, with the same graph as ``dvc.yaml``.

``python pipeline.py compile | submit | run-local`` (also ``solarpipe kfp …``). Each task runs the
stage contract ``python -m components.<stage> --set section.key=value … <io options>`` in the
stage's image, writes under ``s3://<data.bucket>/runs/<run id>/<stage>/`` and hands the URI it
produced to the tasks downstream as a string output parameter. Every params key of the stage
sections (and ``data.*``) is a pipeline parameter, defaulting to ``params.yaml`` and editable per
run; the ``kubeflow:`` section shapes the tasks (images, resources, GPU pool, retries, caching).

The run id reaches each task as ``$KFP_RUN_ID``, read from the pod label ``pipeline/runid``
that Kubeflow Pipelines puts on every pod of a run (``run-local`` sets it itself). It is not a
task input, so KFP's cache keys stay equal across runs and a cached task hands downstream the
URIs written by the run that computed it.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
import typing
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel

from components.core.errors import SolarpipeError, UsageError
from components.core.params import KubeflowParams, Params, load_params
from components.core.stage import run_guarded
from components.images.names import STAGES as IMAGE_STAGES
from components.images.names import image_name
from components.kubeflow.secret import OPTIONAL_S3_KEYS, REQUIRED_S3_KEYS

PIPELINE_NAME = "solarpipe"
PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_PARAMS = PROJECT_ROOT / "params.yaml"
RUN_ID_VARIABLE = "KFP_RUN_ID"
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
# data.* and each stage's own section (the stages' params sections are named after them)
PARAMETER_SECTIONS = ("data", *IMAGE_STAGES)

# ---------------------------------------------------------------------------------------------
# The graph


@dataclass(frozen=True)
class StageTask:
    """One stage as a task: where its inputs come from and what it writes under the run folder.

    ``inputs`` maps a stage option to its source: a ``data.*`` pipeline parameter or the output
    of an upstream stage. The stage writes ``<run>/<stage>/<out>`` through ``out_option`` (empty
    ``out``: the stage folder itself) and hands ``<run>/<stage>/<output_at>`` downstream as the
    output parameter ``output``.
    """

    name: str
    inputs: tuple[tuple[str, str], ...]
    out_option: str
    out: str
    output: str
    output_at: str


STAGE_TASKS = (
    StageTask(
        name="prepare",
        inputs=(("raster", "data.raster"), ("tiles", "data.tiles")),
        out_option="--manifest",
        out="manifest.json",
        output="manifest",
        output_at="manifest.json",
    ),
    StageTask(
        name="preprocess",
        inputs=(("annotations", "data.annotations"), ("manifest", "prepare")),
        out_option="--out",
        out="annotations.json",
        output="annotations_json",
        output_at="annotations.json",
    ),
    StageTask(
        name="preview",
        inputs=(("annotations", "preprocess"),),
        out_option="--out",
        out="",
        output="gallery",
        output_at="",
    ),
    StageTask(
        name="train",
        inputs=(("annotations", "preprocess"),),
        out_option="--out",
        out="",
        output="checkpoint",
        output_at="model.ckpt",
    ),
    StageTask(
        name="export",
        inputs=(("checkpoint", "train"),),
        out_option="--out",
        out="",
        output="model",
        output_at="",
    ),
    StageTask(
        name="evaluate",
        inputs=(("annotations", "preprocess"), ("model", "export")),
        out_option="--out",
        out="",
        output="evaluation",
        output_at="",
    ),
    StageTask(
        name="detect",
        inputs=(("raster", "data.raster"), ("model", "export")),
        out_option="--out",
        out="detections.geojson",
        output="detections",
        output_at="detections.geojson",
    ),
)
STAGES = {task.name: task for task in STAGE_TASKS}


def upstream_stages(task: StageTask) -> list[str]:
    return [source for _, source in task.inputs if source in STAGES]


def pipeline_edges(stages: Sequence[str] = tuple(STAGES)) -> set[tuple[str, str]]:
    """(upstream, downstream) pairs of the graph."""
    return {(up, name) for name in stages for up in upstream_stages(STAGES[name])}


def select_stages(names: Sequence[str]) -> list[str]:
    """The stages to run, in graph order; every upstream stage must be among them."""
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    chosen = [name for name in STAGES if name in names]
    for name in chosen:
        missing = [up for up in upstream_stages(STAGES[name]) if up not in chosen]
        if missing:
            raise UsageError(f"stage {name} needs {', '.join(missing)}: add it to --stages")
    return chosen


# ---------------------------------------------------------------------------------------------
# Pipeline parameters: every params key of the data and stage sections

ParameterKind = Literal["int", "float", "bool", "str", "yaml"]
KFP_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str, "yaml": str}


@dataclass(frozen=True)
class PipelineParameter:
    """A params key (``train.epochs``) as the pipeline parameter ``train_epochs``.

    Keys whose type KFP has no parameter type for (optional numbers, unions, lists) travel as
    ``yaml`` text (``null``, ``auto``), which ``--set`` parses back exactly.
    """

    key: str
    kind: ParameterKind
    default: Any

    @property
    def name(self) -> str:
        return self.key.replace(".", "_")

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    def argument(self, value: Any) -> Any:
        """A params value as this parameter's KFP value."""
        if self.kind == "yaml":
            return yaml_text(value)
        if self.kind == "float":
            return float(value)
        return value


def yaml_text(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text.removesuffix("...").strip()


def _kind(annotation: Any) -> ParameterKind:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    if typing.get_origin(annotation) is Literal and all(
        isinstance(choice, str) for choice in typing.get_args(annotation)
    ):
        return "str"
    return "yaml"


def _flatten(prefix: str, section: BaseModel) -> Iterator[PipelineParameter]:
    for field_name, field in type(section).model_fields.items():
        value = getattr(section, field_name)
        key = f"{prefix}.{field_name}"
        if isinstance(value, BaseModel):
            yield from _flatten(key, value)
        else:
            yield PipelineParameter(key, _kind(field.annotation), value)


def pipeline_parameters(params: Params) -> list[PipelineParameter]:
    """Every pipeline parameter, with its default from ``params``."""
    found = [
        parameter
        for section in PARAMETER_SECTIONS
        for parameter in _flatten(section, getattr(params, section))
    ]
    names = [parameter.name for parameter in found]
    duplicated = {name for name in names if names.count(name) > 1}
    assert not duplicated, f"params keys flatten to the same name: {duplicated}"
    return found


def parameters_used_by(stages: Sequence[str], params: Params) -> list[PipelineParameter]:
    used_data = {"data.bucket"} | {
        source for name in stages for _, source in STAGES[name].inputs if source.startswith("data.")
    }
    return [
        parameter
        for parameter in pipeline_parameters(params)
        if parameter.key in used_data or parameter.section in stages
    ]


# ---------------------------------------------------------------------------------------------
# Components and tasks


def image_for(stage: str, kubeflow: KubeflowParams) -> str:
    """``[<registry>/]solarpipe-<stage>:<tag>``; the tag defaults to the project version."""
    return image_name(stage, tag=kubeflow.tag or None, registry=kubeflow.registry or None)


def task_script(task: StageTask) -> str:
    """The shell around the stage: run it, then publish the URI it wrote as the task's output.

    Arguments: ``$1`` bucket, ``$2`` the output parameter's file, then the stage's own options.
    """
    stage_dir = f"$run/{task.name}"
    out_uri = f"{stage_dir}/{task.out}" if task.out else stage_dir
    output_uri = f"{stage_dir}/{task.output_at}" if task.output_at else stage_dir
    missing_id = (
        f"{RUN_ID_VARIABLE} is not set (Kubeflow sets it from the pod label pipeline/runid)"
    )
    return "\n".join(
        [
            "set -eu",
            f'run="s3://$1/runs/${{{RUN_ID_VARIABLE}:?{missing_id}}}"',
            'output_file="$2"',
            "shift 2",
            f'python -m components.{task.name} {task.out_option} "{out_uri}" "$@"',
            'mkdir -p "$(dirname "$output_file")"',
            f'printf \'%s\' "{output_uri}" > "$output_file"',
        ]
    )


def _signature_parameter(
    name: str, annotation: Any, default: Any = inspect.Parameter.empty
) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default
    )


def stage_component(task: StageTask, parameters: Sequence[PipelineParameter], image: str) -> Any:
    """The ``@dsl.container_component`` of one stage image.

    Inputs: the bucket, the stage's input URIs and its section's parameters; output: the URI
    downstream tasks read.
    """
    from kfp import dsl

    signature = [_signature_parameter("bucket", str)]
    signature += [_signature_parameter(option, str) for option, _ in task.inputs]
    signature.append(_signature_parameter(task.output, dsl.OutputPath(str)))
    signature += [_signature_parameter(p.name, KFP_TYPES[p.kind]) for p in parameters]
    names = [parameter.name for parameter in signature]

    def container(*placeholders: Any) -> Any:
        values = dict(zip(names, placeholders, strict=True))
        args: list[Any] = [values["bucket"], values[task.output]]
        for option, _ in task.inputs:
            args += [f"--{option}", values[option]]
        for parameter in parameters:
            setting = dsl.ConcatPlaceholder([f"{parameter.key}=", values[parameter.name]])
            args += ["--set", setting]
        return dsl.ContainerSpec(
            image=image, command=["sh", "-c", task_script(task), task.name], args=args
        )

    container.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    container.__name__ = container.__qualname__ = task.name
    container.__doc__ = f"The {task.name} stage: python -m components.{task.name}."
    return dsl.container_component(container)


def configure_task(task: Any, stage: str, kubeflow: KubeflowParams) -> None:
    """Per-task settings from the ``kubeflow:`` params section."""
    from kfp import kubernetes

    task.set_caching_options(enable_caching=kubeflow.caching and stage != "preprocess")
    resources = getattr(kubeflow.resources, stage)
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    kubernetes.set_security_context(
        task,
        run_as_user=kubeflow.run_as_user,
        run_as_group=kubeflow.run_as_group,
        run_as_non_root=True,
    )
    kubernetes.use_secret_as_env(task, kubeflow.s3_secret, {key: key for key in REQUIRED_S3_KEYS})
    kubernetes.use_secret_as_env(
        task, kubeflow.s3_secret, {key: key for key in OPTIONAL_S3_KEYS}, optional=True
    )
    kubernetes.use_field_path_as_env(task, RUN_ID_VARIABLE, RUN_ID_FIELD)
    kubernetes.set_image_pull_policy(task, kubeflow.image_pull_policy)
    if kubeflow.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(kubeflow.image_pull_secrets))
    retry = kubeflow.retry
    if stage in retry.stages and retry.max_retries > 0:
        task.set_retry(
            num_retries=retry.max_retries,
            backoff_duration=retry.backoff_duration,
            backoff_factor=retry.backoff_factor,
            backoff_max_duration=retry.backoff_max_duration,
        )
    gpu = kubeflow.gpu
    if stage not in gpu.stages:
        return
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=gpu.shm_size
    )
    if gpu.accelerator_limit == 0:
        return
    task.set_accelerator_type(gpu.accelerator_type).set_accelerator_limit(gpu.accelerator_limit)
    for label, value in gpu.node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in gpu.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key or None,
            operator=toleration.operator,
            value=toleration.value or None,
            effect=toleration.effect or None,
        )


def build_pipeline(params: Params, stages: Sequence[str] = tuple(STAGES)) -> Any:
    """The pipeline of ``stages`` (all by default) with defaults and task settings from params."""
    from kfp import dsl

    chosen = select_stages(stages)
    parameters = parameters_used_by(chosen, params)
    by_name = {parameter.name: parameter for parameter in parameters}
    components = {
        name: stage_component(
            STAGES[name],
            [p for p in parameters if p.section == name],
            image_for(name, params.kubeflow),
        )
        for name in chosen
    }
    outputs_type = NamedTuple(  # type: ignore[misc]
        "Outputs", [(STAGES[name].output, str) for name in chosen]
    )

    def solarpipe(*channels: Any) -> Any:
        values = dict(zip(by_name, channels, strict=True))
        tasks: dict[str, Any] = {}
        for name in chosen:
            stage = STAGES[name]
            arguments = {"bucket": values["data_bucket"]}
            for option, source in stage.inputs:
                if source in STAGES:
                    arguments[option] = tasks[source].outputs[STAGES[source].output]
                else:
                    arguments[option] = values[source.replace(".", "_")]
            arguments.update({p.name: values[p.name] for p in parameters if p.section == name})
            tasks[name] = components[name](**arguments)
            configure_task(tasks[name], name, params.kubeflow)
        return outputs_type(*(tasks[name].outputs[STAGES[name].output] for name in chosen))

    solarpipe.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            _signature_parameter(p.name, KFP_TYPES[p.kind], p.argument(p.default))
            for p in parameters
        ],
        return_annotation=outputs_type,
    )
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Solar panels in aerial images: prepare, preprocess, preview, train, "
        "export, evaluate, detect. Outputs under s3://<data_bucket>/runs/<run id>/.",
    )(solarpipe)


def compile_pipeline(params: Params, package_path: Path) -> None:
    from kfp import compiler

    compiler.Compiler().compile(
        pipeline_func=build_pipeline(params), package_path=str(package_path)
    )


# ---------------------------------------------------------------------------------------------
# Settings from the command line: --params and --set


def load_settings(params_path: str | None, overrides: Sequence[str]) -> tuple[Params, dict]:
    """Params (file + ``--set``) and the run arguments the ``--set`` options name.

    A key is a pipeline parameter (``train_epochs`` or ``train.epochs``) or a ``kubeflow.*``
    setting, which shapes the tasks at compile time. Values are validated by the params schema.
    """
    path = params_path or (str(DEFAULT_PARAMS) if DEFAULT_PARAMS.exists() else None)
    known = pipeline_parameters(Params())
    by_name = {parameter.name: parameter for parameter in known}
    by_key = {parameter.key: parameter for parameter in known}
    dotted: list[str] = []
    chosen: list[PipelineParameter] = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {text!r}")
        if key.startswith("kubeflow."):
            dotted.append(text)
            continue
        parameter = by_name.get(key) or by_key.get(key)
        if parameter is None:
            raise UsageError(
                f"--set {key}: the pipeline has no such parameter; it has "
                f"{', '.join(by_name)} (and kubeflow.* settings)"
            )
        dotted.append(f"{parameter.key}={raw}")
        chosen.append(parameter)
    params = load_params(path, dotted)
    current = {parameter.key: parameter for parameter in pipeline_parameters(params)}
    arguments = {p.name: p.argument(current[p.key].default) for p in chosen}
    return params, arguments


# ---------------------------------------------------------------------------------------------
# compile


def compile_command(args: argparse.Namespace) -> None:
    params, _ = load_settings(args.params, args.overrides)
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as pipeline.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=out.parent, suffix=".yaml", delete=False) as tmp:
        staging = Path(tmp.name)
    try:
        compile_pipeline(params, staging)
        staging.replace(out)
    finally:
        staging.unlink(missing_ok=True)
    print(f"compiled {len(STAGES)} tasks to {out}")


# ---------------------------------------------------------------------------------------------
# submit


def submit_command(args: argparse.Namespace) -> None:
    from components.kubeflow.api import RunRequest, api_host, api_token, check_api, create_run
    from components.kubeflow.secret import ensure_s3_secret

    params, arguments = load_settings(args.params, args.overrides)
    kubeflow = params.kubeflow
    namespace = args.namespace or kubeflow.namespace
    host, token = api_host(args.host), api_token()
    if args.ensure_secret:
        print(ensure_s3_secret(namespace, kubeflow.s3_secret, args.s3_endpoint))
    if host:
        check_api(host, token)  # before compiling: an unreachable host or bad token fails fast
    with tempfile.TemporaryDirectory(prefix="solarpipe-kfp-") as folder:
        package = Path(folder) / "pipeline.yaml"
        compile_pipeline(params, package)
        request = RunRequest(
            package=str(package),
            arguments=arguments,
            run_name=args.run_name or f"{PIPELINE_NAME} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            experiment=args.experiment or kubeflow.experiment,
            namespace=namespace,
            service_account=kubeflow.service_account or None,
            enable_caching=False if args.no_cache else None,
        )
        url = create_run(host, token, request)
    print(f"run submitted: {url}")


# ---------------------------------------------------------------------------------------------
# run-local


def run_local(params: Params, arguments: dict[str, Any], stages: Sequence[str]) -> dict[str, str]:
    """Run ``stages`` in their local images; returns the run id and the outputs' URIs."""
    from components.kubeflow.local import check_local_images, local_s3_environment, run_in_docker

    chosen = select_stages(stages)
    environment = local_s3_environment()
    check_local_images({name: image_for(name, params.kubeflow) for name in chosen})
    run_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    environment[RUN_ID_VARIABLE] = run_id
    # --set values of stages left out were validated but have nothing to set
    used = {parameter.name for parameter in parameters_used_by(chosen, params)}
    # No retries here: a local failure is for the developer to see at once.
    local_params = params.model_copy(deep=True)
    local_params.kubeflow.retry.max_retries = 0
    try:
        outputs = run_in_docker(
            build_pipeline(local_params, chosen),
            {name: value for name, value in arguments.items() if name in used},
            environment,
        )
    except SolarpipeError as exc:
        raise SolarpipeError(f"run-local {run_id}: {exc}") from exc
    return {"run": run_id, **{STAGES[name].output: outputs[STAGES[name].output] for name in chosen}}


def run_local_command(args: argparse.Namespace) -> None:
    params, arguments = load_settings(args.params, args.overrides)
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    outputs = run_local(params, arguments, stages)
    print(f"run {outputs.pop('run')} finished")
    for name, uri in outputs.items():
        print(f"  {name}: {uri}")


# ---------------------------------------------------------------------------------------------
# Command line


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", default=None, metavar="FILE", help=f"params file (default: {DEFAULT_PARAMS})"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pipeline parameter (train.epochs=3 or train_epochs=3) or a kubeflow.* setting",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``compile``, ``submit`` and ``run-local`` subcommands (also ``solarpipe kfp``)."""
    actions = parser.add_subparsers(dest="kfp_action", metavar="ACTION", required=True)

    compile_parser = actions.add_parser("compile", help="write the pipeline's IR YAML")
    compile_parser.add_argument("--out", default="pipeline.yaml", help="default pipeline.yaml")
    _add_settings_options(compile_parser)
    compile_parser.set_defaults(handler=compile_command)

    submit = actions.add_parser("submit", help="compile and start a run on Kubeflow Pipelines")
    submit.add_argument(
        "--host",
        default=None,
        help="KFP API URL (default $KF_PIPELINES_ENDPOINT; none: through the kubeconfig's "
        "cluster); token from $KF_PIPELINES_TOKEN or $KFP_TOKEN",
    )
    submit.add_argument(
        "--namespace", default=None, help="namespace of the run and the Secret (kubeflow.namespace)"
    )
    submit.add_argument("--experiment", default=None, help="default: kubeflow.experiment")
    submit.add_argument("--run-name", default=None)
    submit.add_argument("--no-cache", action="store_true", help="run every task, cache nothing")
    submit.add_argument(
        "--ensure-secret",
        action="store_true",
        help="create or update the S3 Secret from the local AWS_* variables (kubeconfig)",
    )
    submit.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3 endpoint as pods reach it (default $AWS_ENDPOINT_URL)",
    )
    _add_settings_options(submit)
    submit.set_defaults(handler=submit_command)

    run = actions.add_parser(
        "run-local", help="run the graph in the local stage images (Docker, host network)"
    )
    run.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="comma-separated stages with their upstream ones (default: all)",
    )
    _add_settings_options(run)
    run.set_defaults(handler=run_local_command)


def main(argv: Sequence[str] | None = None) -> int:
    from components.core.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python pipeline.py", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")
    configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_guarded(f"pipeline.py {args.kfp_action}", args.verbose, lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
