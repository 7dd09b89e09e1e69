"""The Kubeflow pipeline: the graph of ``dvc.yaml`` as container tasks, one per stage image.

``python pipeline.py compile | submit | run-local`` (also ``solarpipe kfp …``).

* Each params section the stages read is one pipeline parameter: a JSON object you can edit per
  run in the KFP UI, defaulting to ``params.yaml`` (plus ``--set``) at compile time.
* The first task, ``params``, applies them over the params compiled in, validates them, and writes
  the run's params document once, to ``s3://<data.bucket>/runs/<run id>/params.yaml``.
* Every stage task runs the stage contract with ``--params`` that document, writes under
  ``s3://<data.bucket>/runs/<run id>/<stage>/`` and hands downstream the URI it wrote. Its cache
  key is its image, its input URIs and the digest of the params it reads. Its reports (preview's
  gallery, preprocess's summary, train's curve, evaluate's overlays) are HTML and Markdown
  artifacts in the KFP UI; evaluate's figures are the run's Metrics, the export its Model.
* train is retried and resumes from its last checkpoint (a preempted GPU node loses minutes, not
  the run). detect, and the deploy step that rolls the serving Deployment to the new model, run
  only when evaluate's mAP@0.5 reaches ``kubeflow.min_map50``.

The ``kubeflow:`` params section shapes the tasks (images, resources, GPU pool, retries, caching);
the stage declaration (components/core/stages.py) gives each stage its options and image.
"""

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.commands.embedded import DEFAULT_SCENE_SIZE, run_command
from components.core.errors import SolarpipeError, UsageError
from components.core.params import KubeflowParams, Params, load_params, params_yaml, parse_override
from components.core.stage import run_guarded
from components.core.stages import BY_NAME, STAGES
from components.images.names import IMAGES, PIPELINE_IMAGE, image_name, pinned
from components.kubeflow.results import exported_model, quality_gate
from components.kubeflow.tasks import (
    NEWEST_BACKEND,
    PARAMS_TASK_RESOURCES,
    configure_stage_task,
    configure_task,
    deploy_component,
    merge_component,
    params_component,
    parse_backend,
    stage_component,
)

PIPELINE_NAME = "solarpipe"
PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_PARAMS = PROJECT_ROOT / "params.yaml"
# run-local keeps each run's KFP artifacts here, as the KFP UI would show them
LOCAL_ARTIFACTS = PROJECT_ROOT / "out" / "run-local"
# The params sections that are pipeline parameters: data and every section a stage reads.
PARAMETER_SECTIONS = tuple(
    dict.fromkeys(["data", *(section for stage in STAGES for section in stage.params_sections)])
)
# data.* keys the tasks are given (the run's bucket, and what stage options point at).
DATA_VALUES = tuple(
    dict.fromkeys(
        ["data.bucket"]
        + [option.source for stage in STAGES for option in stage.options if option.from_params]
    )
)


def images_for(kubeflow: KubeflowParams) -> dict[str, str]:
    """Each image's reference: ``[<registry>/]solarpipe-<name>:<tag>`` (tag: the code's), pinned
    to its ``@sha256:`` digest when ``images build --push`` pushed it from this tree."""
    return {
        name: pinned(image_name(name, tag=kubeflow.tag or None, registry=kubeflow.registry or None))
        for name in IMAGES
    }


def build_pipeline(params: Params, backend: tuple[int, int] = NEWEST_BACKEND) -> Any:
    """The pipeline, its parameters defaulting to ``params``, its tasks shaped by ``kubeflow``
    as far as a KFP ``backend`` of that version knows them."""
    from kfp import dsl

    kubeflow = params.kubeflow
    image = images_for(kubeflow)
    run_params = params_component(
        image[PIPELINE_IMAGE],
        params_yaml(params),
        PARAMETER_SECTIONS,
        DATA_VALUES,
        [stage.name for stage in STAGES],
    )
    components = {stage.name: stage_component(stage, image[stage.name]) for stage in STAGES}
    # prepare and detect fan out over kubeflow.shards pods; the light prepare image (numpy,
    # shapely, no torch) joins the parts of both.
    shard_components = {
        stage.name: stage_component(stage, image[stage.name], sharded=True)
        for stage in STAGES
        if stage.shardable
    }
    merges = {name: merge_component(BY_NAME[name], image["prepare"]) for name in shard_components}
    shards = [f"{index}/{kubeflow.shards}" for index in range(kubeflow.shards)]

    def over_shards(name: str, bucket: Any, params_digest: Any, **inputs: Any) -> Any:
        """Stage ``name`` over every shard, then its parts joined; the URI of the whole."""
        with dsl.ParallelFor(shards, parallelism=kubeflow.shard_parallelism) as shard:
            part = shard_components[name](
                bucket=bucket, params_digest=params_digest, shard=shard, **inputs
            )
            configure_stage_task(part, BY_NAME[name], kubeflow, backend)
        joined = merges[name](bucket=bucket, parts=dsl.Collected(part.outputs["uri"]))
        merge_resources = kubeflow.resources.prepare
        configure_task(
            joined, kubeflow, merge_resources, cached=True, retried=True, gpu=False, backend=backend
        )
        return joined.outputs["uri"]

    # Each fan-out is a pipeline of its own, whose inputs reach the loop as pipeline inputs
    # (kfp 2.17's local runner gives a loop's task-output inputs the loop item instead).
    @dsl.pipeline(name="prepare-over-shards")
    def prepare_over_shards(bucket: str, params_digest: str, raster: str, tiles: str) -> str:
        return over_shards("prepare", bucket, params_digest, raster=raster, tiles=tiles)

    @dsl.pipeline(name="detect-over-shards")
    def detect_over_shards(bucket: str, params_digest: str, raster: str, model: str) -> str:
        return over_shards("detect", bucket, params_digest, raster=raster, model=model)

    # After a preemption Kubeflow retries train, which picks up <out>/last.ckpt.
    components["train"] = stage_component(BY_NAME["train"], image["train"], ["--resume"])
    in_pipeline_image = {"base_image": image[PIPELINE_IMAGE], "install_kfp_package": False}
    gate = dsl.component(quality_gate, **in_pipeline_image)
    roll_out = deploy_component(image[PIPELINE_IMAGE], kubeflow.deploy)
    model_card = dsl.component(exported_model, **in_pipeline_image)
    # KFP's parameter defaults cannot hold null: those keys keep the value compiled in.
    default = params.model_dump(mode="json", exclude_none=True)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Solar panels in aerial images: prepare, preprocess, preview, train, "
        "export, evaluate, detect. Outputs under s3://<data.bucket>/runs/<run id>/.",
    )
    def solarpipe(
        data: dict = default["data"],
        prepare: dict = default["prepare"],
        labelstudio: dict = default["labelstudio"],
        preprocess: dict = default["preprocess"],
        preview: dict = default["preview"],
        train: dict = default["train"],
        export: dict = default["export"],
        evaluate: dict = default["evaluate"],
        detect: dict = default["detect"],
    ) -> None:
        run = run_params(
            data=data,
            prepare=prepare,
            labelstudio=labelstudio,
            preprocess=preprocess,
            preview=preview,
            train=train,
            export=export,
            evaluate=evaluate,
            detect=detect,
        )
        configure_task(
            run,
            kubeflow,
            PARAMS_TASK_RESOURCES,
            cached=False,
            retried=True,
            gpu=False,
            backend=backend,
        )

        def stage(name: str, **inputs: Any) -> Any:
            """Stage ``name`` in the run's folder with its params; the URI it hands down."""
            task = components[name](
                bucket=run.outputs["bucket"], params_digest=run.outputs[f"{name}_params"], **inputs
            )
            configure_stage_task(task, BY_NAME[name], kubeflow, backend)
            return task.outputs["uri"]

        def result(task: Any) -> Any:
            configure_task(
                task,
                kubeflow,
                PARAMS_TASK_RESOURCES,
                cached=True,
                retried=True,
                gpu=False,
                backend=backend,
            )
            return task

        manifest = prepare_over_shards(
            bucket=run.outputs["bucket"],
            params_digest=run.outputs["prepare_params"],
            raster=run.outputs["raster"],
            tiles=run.outputs["tiles"],
        ).output
        annotations = stage("preprocess", annotations=run.outputs["annotations"], manifest=manifest)
        stage("preview", annotations=annotations)
        checkpoint = stage("train", annotations=annotations)
        model = stage("export", checkpoint=checkpoint)
        evaluation = stage("evaluate", annotations=annotations, model=model)
        scored = result(gate(evaluation=evaluation, minimum=kubeflow.min_map50))
        result(model_card(export=model, evaluation=evaluation))
        with dsl.If(scored.outputs["Output"] >= kubeflow.min_map50, name="good-enough"):
            detect_over_shards(
                bucket=run.outputs["bucket"],
                params_digest=run.outputs["detect_params"],
                raster=run.outputs["raster"],
                model=model,
            )
            if kubeflow.deploy.enabled:
                # Side effects and no retry: a deploy that fails rolls back and says why.
                configure_task(
                    roll_out(model=model),
                    kubeflow,
                    PARAMS_TASK_RESOURCES,
                    cached=False,
                    retried=False,
                    gpu=False,
                    backend=backend,
                    s3=False,
                )

    return solarpipe


def compile_pipeline(
    params: Params, package_path: Path, backend: tuple[int, int] = NEWEST_BACKEND
) -> None:
    from kfp import compiler

    compiler.Compiler().compile(
        pipeline_func=build_pipeline(params, backend), package_path=str(package_path)
    )


# ---------------------------------------------------------------------------------------------
# Settings from the command line: --params and --set


def load_settings(
    params_path: str | None, overrides: Sequence[str], profile: str | None = None
) -> tuple[Params, dict]:
    """Params (file + ``--set``) and the run's arguments: each section a ``--set`` touched.

    ``kubeflow.*`` settings shape the tasks at compile time; every other key is a per-run value
    of its section's pipeline parameter. Values are validated by the params schema. The params
    compiled in carry the ``--set`` values too.
    """
    path = params_path or (str(DEFAULT_PARAMS) if DEFAULT_PARAMS.exists() else None)
    params = load_params(path, list(overrides), profile)
    touched = dict.fromkeys(parse_override(text)[0].split(".", 1)[0] for text in overrides)
    arguments = {
        section: getattr(params, section).model_dump(mode="json")
        for section in touched
        if section in PARAMETER_SECTIONS
    }
    return params, arguments


# ---------------------------------------------------------------------------------------------
# compile


def compile_command(args: argparse.Namespace) -> None:
    params, _ = load_settings(args.params, args.overrides, args.profile)
    backend = parse_backend(args.kfp_backend)
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as pipeline.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=out.parent, suffix=".yaml", delete=False) as tmp:
        staging = Path(tmp.name)
    try:
        compile_pipeline(params, staging, backend)
        staging.replace(out)
    finally:
        staging.unlink(missing_ok=True)
    print(f"compiled {len(STAGES)} stage tasks to {out}")


# ---------------------------------------------------------------------------------------------
# submit


def submit_command(args: argparse.Namespace) -> None:
    from components.kubeflow.api import RunRequest, api_host, api_token, check_api, create_run
    from components.kubeflow.secret import ensure_s3_secret

    params, arguments = load_settings(args.params, args.overrides, args.profile)
    backend = parse_backend(args.kfp_backend)
    kubeflow = params.kubeflow
    namespace = args.namespace or kubeflow.namespace
    host, token = api_host(args.host), api_token()
    if args.ensure_secret:
        print(ensure_s3_secret(namespace, kubeflow.s3_secret, args.s3_endpoint))
    if host:
        check_api(host, token)  # before compiling: an unreachable host or bad token fails fast
    with tempfile.TemporaryDirectory(prefix="solarpipe-kfp-") as folder:
        package = Path(folder) / "pipeline.yaml"
        compile_pipeline(params, package, backend)
        warn_about_a_time_cap(params)
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


def run_local(params: Params, arguments: dict[str, Any]) -> dict[str, str]:
    """Run the graph in the local images; returns the run folder and each stage's output URI."""
    from components.kubeflow.local import check_local_images, local_s3_environment, run_in_docker
    from components.kubeflow.tasks import RUN_ID_VARIABLE

    environment = local_s3_environment()
    check_local_images(images_for(params.kubeflow))
    run_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    environment[RUN_ID_VARIABLE] = run_id
    # No retries here: a local failure is for the developer to see at once; no deploy either
    # (no Kubernetes cluster to roll out to).
    local_params = params.model_copy(deep=True)
    local_params.kubeflow.retry.max_retries = 0
    local_params.kubeflow.deploy.enabled = False
    artifacts = LOCAL_ARTIFACTS / run_id
    # kfp.local cannot pass null inside a dict parameter; the params compiled in hold the --set
    # values already (nulls included), and a key left out of an argument keeps them.
    without_nulls = {
        section: {key: value for key, value in values.items() if value is not None}
        for section, values in arguments.items()
    }
    try:
        run_in_docker(build_pipeline(local_params), without_nulls, environment, artifacts)
    except SolarpipeError as exc:
        raise SolarpipeError(f"run-local {run_id}: {exc}") from exc
    run_folder = f"s3://{params.data.bucket}/runs/{run_id}"
    outputs = {"run": run_folder, "artifacts": str(artifacts)}
    for stage in STAGES:
        handed_down = "" if stage.hands_down == "." else f"/{stage.hands_down}"
        outputs[stage.name] = f"{run_folder}/{stage.name}{handed_down}"
    return outputs


def warn_about_a_time_cap(params: Params) -> None:
    """The quickstart's CPU budget on a GPU pool is almost certainly not what was meant."""
    gpu = params.kubeflow.gpu
    if params.train.max_minutes and "train" in gpu.stages and gpu.accelerator_limit > 0:
        print(
            f"warning: train.max_minutes={params.train.max_minutes:g} caps training on the GPU "
            "pool at the quickstart's budget; --profile gpu (or --set train.max_minutes=null) "
            "lifts it",
            file=sys.stderr,
        )


def embedded_default_data(params: Params, size: int, seed: int) -> None:
    """What the quickstart does before the graph: the buckets, the synthetic scene at
    ``data.raster``, its tiles (prepare, here) and the annotator's labels."""
    from components.commands.embedded import label_if_unlabelled, provide_scene, stage_environment
    from components.commands.s3 import data_buckets
    from components.core.uri import exists, write_text
    from components.s3server import ensure_bucket

    data = params.data
    for bucket in data_buckets(data):
        ensure_bucket(bucket)
    if not exists(data.raster):
        provide_scene(PROJECT_ROOT, data.raster, size, seed, "run-local")
    folder = LOCAL_ARTIFACTS / "embedded"
    write_text(str(folder / "params.yaml"), params_yaml(params))
    manifest = str(folder / "manifest.json")
    env = stage_environment()
    tile = [sys.executable, "-m", "components.prepare", "--params", str(folder / "params.yaml"),
            "--raster", data.raster, "--tiles", data.tiles, "--manifest", manifest]  # fmt: skip
    run_command(tile, PROJECT_ROOT, env, "run-local")
    label_if_unlabelled(PROJECT_ROOT, manifest, data.raster, data.annotations, env, "run-local")


def keep_run_folder(run_folder: str, local: Path) -> None:
    """A copy of the run's S3 folder on disk: the embedded S3 forgets it when run-local ends."""
    from components.core.uri import download_file, list_objects

    for info in list_objects(run_folder):
        download_file(info.uri, local / info.uri.removeprefix(f"{run_folder}/"))


def print_outputs(outputs: dict[str, str]) -> None:
    from components.core.uri import exists, list_objects

    print(f"run {outputs.pop('run')} finished")
    print(f"KFP artifacts (HTML, Markdown, Metrics, Model) under {outputs.pop('artifacts')}")
    for name, uri in outputs.items():
        written = exists(uri) or next(iter(list_objects(uri)), None) is not None
        print(f"  {name}: {uri}" if written else f"  {name}: not run (below the quality gate)")


def run_local_command(args: argparse.Namespace) -> None:
    from components.commands.embedded import configured_or_embedded_s3
    from components.kubeflow.local import s3_configured

    params, arguments = load_settings(args.params, args.overrides, args.profile)
    if s3_configured():
        print_outputs(run_local(params, arguments))
        return
    # No S3 here: the embedded default, as the quickstart does it, then the graph in containers.
    with configured_or_embedded_s3(args.port, "run-local"):
        embedded_default_data(params, args.size, args.seed)
        outputs = run_local(params, arguments)
        kept = Path(outputs["artifacts"]) / "runs"
        keep_run_folder(outputs["run"], kept)
        print_outputs(dict(outputs))
    print(f"the embedded S3 has stopped; the run folder is kept in {kept}")


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
        metavar="SECTION.KEY=VALUE",
        help="a param for this run (train.epochs=3), or a kubeflow.* setting of the tasks",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="apply a profile over the params first: profiles/NAME.yaml (gpu: the GPU pool)",
    )


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kfp-backend",
        default=".".join(map(str, NEWEST_BACKEND)),
        metavar="VERSION",
        help="Kubeflow Pipelines backend to compile for; older ones lose what they do not know "
        "(docs/kubeflow.md; default: %(default)s)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``compile``, ``submit`` and ``run-local`` subcommands (also ``solarpipe kfp``)."""
    actions = parser.add_subparsers(dest="kfp_action", metavar="ACTION", required=True)

    compile_parser = actions.add_parser("compile", help="write the pipeline's IR YAML")
    compile_parser.add_argument("--out", default="pipeline.yaml", help="default pipeline.yaml")
    _add_settings_options(compile_parser)
    _add_backend_option(compile_parser)
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
    _add_backend_option(submit)
    submit.set_defaults(handler=submit_command)

    run = actions.add_parser(
        "run-local",
        help="run the graph in the local images (Docker, host network); without S3 settings, "
        "on the embedded default (an S3 server, a synthetic scene and its labels)",
    )
    _add_settings_options(run)
    run.add_argument(
        "--size", type=int, default=DEFAULT_SCENE_SIZE, help="embedded default: scene edge in px"
    )
    run.add_argument("--seed", type=int, default=0, help="embedded default: scene seed")
    run.add_argument(
        "--port", type=int, default=None, help="embedded default: S3 port (default 9555 or free)"
    )
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
