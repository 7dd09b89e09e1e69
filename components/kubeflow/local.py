"""``run-local``: the pipeline in the local stage images with kfp's DockerRunner, on the host
network (so a loopback S3 endpoint works), with the S3 variables of this shell."""

from __future__ import annotations

import builtins
import os
import re
import warnings
from pathlib import Path
from typing import Any

from components.core.errors import SolarpipeError, UsageError
from components.kubeflow.secret import OPTIONAL_S3_KEYS, REQUIRED_S3_KEYS

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def s3_configured() -> bool:
    """An S3 endpoint or AWS credentials in this shell."""
    return any(os.environ.get(name) for name in ("AWS_ENDPOINT_URL", *REQUIRED_S3_KEYS))


def local_s3_environment() -> dict[str, str]:
    """The S3 variables the containers get at run time (never baked into an image)."""
    names = (*REQUIRED_S3_KEYS, *OPTIONAL_S3_KEYS, "AWS_REGION", "AWS_SESSION_TOKEN")
    environment = {name: os.environ[name] for name in names if os.environ.get(name)}
    if not all(name in environment for name in REQUIRED_S3_KEYS):
        raise UsageError(
            "run-local needs S3: start the embedded server with `solarpipe s3 serve` and export "
            "the variables it prints, or set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        )
    return environment


def check_local_images(images: dict[str, str]) -> None:
    """Every ``stage: image`` must be in the local engine; a missing one says how to build it."""
    from docker.errors import ImageNotFound

    from components.images.engine import docker_client

    engine = docker_client()
    missing: dict[str, str] = {}
    try:
        for stage, image in images.items():
            try:
                engine.images.get(image)
            except ImageNotFound:
                missing[stage] = image
    finally:
        engine.close()
    if missing:
        build = " ".join(f"--stage {stage}" for stage in missing)
        raise SolarpipeError(
            f"image(s) not found locally: {', '.join(missing.values())}; build them with "
            f"`solarpipe images build {build}`"
        )


def plain(exc: Exception) -> str:
    """kfp's message without its terminal colours."""
    return ANSI_COLOUR.sub("", str(exc))


def run_in_docker(
    pipeline: Any, arguments: dict[str, Any], environment: dict[str, str], pipeline_root: Path
) -> None:
    """Run a compiled-in-memory pipeline with DockerRunner; its artifacts stay in
    ``pipeline_root`` (``<pipeline>-<time>/<task>/<artifact>``, as KFP's UI would show them).

    ``entrypoint=[]`` drops the images' entrypoint so the task command runs alone, as in a pod.
    """
    from kfp import local

    # Requests, limits and the kubernetes settings are for the cluster; locally they do nothing.
    warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
    # Bind-mounted into every container, whose user is not ours: it must be writable by all.
    pipeline_root.mkdir(parents=True, exist_ok=True)
    os.chmod(pipeline_root, 0o777)
    local.init(
        runner=local.DockerRunner(network_mode="host", entrypoint=[], environment=environment),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    # kfp.local indents print() while a task runs by swapping builtins.print; two loop
    # iterations running at once can leave it swapped (2.17.3): put ours back afterwards.
    original_print = builtins.print
    try:
        pipeline(**arguments)
    except RuntimeError as exc:  # kfp: "Task <name> finished with status FAILURE"
        raise SolarpipeError(f"{plain(exc)} (its log is above)") from exc
    except ValueError as exc:
        # kfp reads the exit status after the container is gone and may take a failed task
        # for a finished one; its missing output shows it (the task writes it last).
        raise SolarpipeError(f"a task failed: {plain(exc)} (its log is above)") from exc
    finally:
        builtins.print = original_print
