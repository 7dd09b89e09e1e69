"""Kubeflow components and task settings, made from the stage declaration and the params.

A stage's component is a KFP component spec (the data format of Kubeflow's ``component.yaml``
files) built from its declaration: inputs ``bucket``, ``params_digest`` and the stage's options
that the pipeline points elsewhere than the run folder; its command is the stage contract,
writing under ``s3://<bucket>/runs/$(KFP_RUN_ID)/<stage>/``; its output ``uri`` is what
downstream stages read. The ``params`` component writes the run's params document once and hands
every stage the digest of the params it reads.

The run id reaches the pods as ``$KFP_RUN_ID``, read from the pod label ``pipeline/runid`` that
Kubeflow Pipelines puts on every pod of a run; arguments refer to it as ``$(KFP_RUN_ID)``, which
Kubernetes expands (local runners leave it to the stage, see
:func:`components.core.stage.expand_environment`). It is never a task input, so a task's cache key
is its image (the code), its input URIs and the digest of its params: it reruns exactly when one
of them changes, and a cached task hands downstream the URIs of the run that computed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from components.core.errors import UsageError
from components.core.params import DeployParams, KubeflowParams, ResourceParams
from components.core.stages import Stage
from components.kubeflow.secret import OPTIONAL_S3_KEYS, REQUIRED_S3_KEYS

# The oldest Kubeflow Pipelines backend that honours each feature the tasks use (older ones
# reject it or drop it silently); ``compile --kfp-backend`` leaves out what the target lacks.
BACKEND_FEATURES: dict[str, tuple[int, int]] = {
    "field_path_env": (2, 1),  # the run id from the pod label: required
    "image_pull_policy": (2, 1),
    "shm_empty_dir": (2, 3),
    "retries": (2, 14),
    "security_context": (2, 16),
}
NEWEST_BACKEND = max(BACKEND_FEATURES.values())
RUN_ID_VARIABLE = "KFP_RUN_ID"
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
RUN_FOLDER = f"/runs/$({RUN_ID_VARIABLE})"
# The params task's own pod: small, it reads and writes one YAML document.
PARAMS_TASK_RESOURCES = ResourceParams(
    cpu_request="100m", cpu_limit="1", memory_request="256Mi", memory_limit="1Gi"
)


def in_run_folder(*parts: str) -> dict[str, Any]:
    """``s3://<bucket>/runs/$(KFP_RUN_ID)/<parts>`` as a component-spec placeholder."""
    tail = "/".join(part for part in parts if part)
    return {
        "concat": ["s3://", {"inputValue": "bucket"}, RUN_FOLDER + (f"/{tail}" if tail else "")]
    }


def component(spec: dict[str, Any]) -> Any:
    from kfp import components

    return components.load_component_from_text(yaml.safe_dump(spec, sort_keys=False))


PARTS = "parts/"  # where a sharded stage's tasks write their parts, in its run folder


def stage_component(
    declared: Stage, image: str, extra_args: Sequence[str] = (), sharded: bool = False
) -> Any:
    """The stage's component: ``python -m components.<stage>`` with its declared options, its
    reports as Kubeflow artifacts of their kind, and ``extra_args``. ``sharded``: one shard
    (input ``shard``, ``I/N``), writing its part under ``<stage>/parts/`` instead."""
    inputs = [
        {"name": "bucket", "type": "String", "description": "bucket of the run's folder"},
        {"name": "params_digest", "type": "String", "description": "digest of its params"},
    ]
    args: list[Any] = [
        "--params", in_run_folder("params.yaml"),
        "--params-digest", {"inputValue": "params_digest"},
    ]  # fmt: skip
    for option in declared.options:
        if option.in_run_folder:
            path = PARTS if sharded else option.source[2:]
            args += [f"--{option.name}", in_run_folder(declared.name, path)]
        else:
            inputs.append({"name": option.name, "type": "String", "description": option.help})
            args += [f"--{option.name}", {"inputValue": option.name}]
    if sharded:
        inputs.append({"name": "shard", "type": "String", "description": "I/N: shard I of N"})
        args += ["--shard", {"inputValue": "shard"}]
    args += ["--uri-file", {"outputPath": "uri"}]
    outputs = [{"name": "uri", "type": "String", "description": "what downstream reads"}]
    for report in declared.reports:
        outputs.append({"name": report.name, "type": report.kind, "description": report.help})
        args += ["--report", report.name, {"outputPath": report.name}]
    return component(
        {
            "name": declared.name,
            "description": declared.summary,
            "inputs": inputs,
            "outputs": outputs,
            "implementation": {
                "container": {
                    "image": image,
                    "command": ["python", "-m", declared.module],
                    "args": [*args, *extra_args],
                }
            },
        }
    )


def merge_component(declared: Stage, image: str) -> Any:
    """Join the parts the stage's shards wrote (``python -m components.shards <merge>``) into
    the output an unsharded run writes, and hand it downstream as ``uri``.

    Input ``parts``: the shards' part URIs (``dsl.Collected``), so the task's cache key follows
    them, and a run whose shards were partly cached merges the parts each one handed down.
    """
    [output] = [option for option in declared.options if option.in_run_folder]
    args = [
        declared.merge,
        "--parts", {"inputValue": "parts"},
        "--out", in_run_folder(declared.name, output.source[2:]),
        "--uri-file", {"outputPath": "uri"},
    ]  # fmt: skip
    return component(
        {
            "name": f"{declared.name}-{declared.merge}",
            "description": f"join the parts of {declared.name}'s shards",
            "inputs": [
                {"name": "bucket", "type": "String", "description": "the run's bucket"},
                {"name": "parts", "type": "JsonArray", "description": "the shards' parts"},
            ],
            "outputs": [{"name": "uri", "type": "String", "description": "what downstream reads"}],
            "implementation": {
                "container": {
                    "image": image,
                    "command": ["python", "-m", "components.shards"],
                    "args": args,
                }
            },
        }
    )


def params_component(
    image: str,
    document: str,
    sections: Sequence[str],
    values: Sequence[str],
    stages: Sequence[str],
) -> Any:
    """The run's params task: ``document`` with the per-run ``sections`` applied over it, written
    to ``s3://<data.bucket>/runs/$(KFP_RUN_ID)/params.yaml``.

    Outputs: each of ``values`` (a ``data.*`` key, output named after the key's last part) and,
    per stage, ``<stage>_params``: the digest of the params that stage reads.
    """
    args: list[Any] = ["--document", document]
    for section in sections:
        args += ["--section", section, {"inputValue": section}]
    args += ["--out", "s3://{data.bucket}" + RUN_FOLDER + "/params.yaml"]
    outputs = []
    for key in values:
        name = key.rsplit(".", 1)[1]
        outputs.append({"name": name, "type": "String", "description": f"the run's {key}"})
        args += ["--write-value", key, {"outputPath": name}]
    for stage in stages:
        outputs.append(
            {"name": f"{stage}_params", "type": "String", "description": f"digest: {stage}"}
        )
        args += ["--write-digest", stage, {"outputPath": f"{stage}_params"}]
    return component(
        {
            "name": "params",
            "description": "write the run's params document; hand each stage its params' digest",
            "inputs": [
                {"name": section, "type": "JsonObject", "description": f"params section {section}"}
                for section in sections
            ],
            "outputs": outputs,
            "implementation": {
                "container": {"image": image, "command": ["solarpipe", "params"], "args": args}
            },
        }
    )


def deploy_component(image: str, deploy: DeployParams) -> Any:
    """The deploy task: ``python -m components.deploy`` rolls the serving Deployment to the
    exported model (in the task's namespace, as its service account: k8s/serving)."""
    args = ["--model-uri", {"inputValue": "model"}, "--deployment", deploy.deployment]
    args += ["--timeout", f"{deploy.timeout_s:g}"]
    return component(
        {
            "name": "deploy",
            "description": "roll the serving Deployment to the exported model",
            "inputs": [{"name": "model", "type": "String", "description": "export's output"}],
            "implementation": {
                "container": {
                    "image": image,
                    "command": ["python", "-m", "components.deploy"],
                    "args": args,
                }
            },
        }
    )


def configure_task(
    task: Any,
    kubeflow: KubeflowParams,
    resources: ResourceParams,
    *,
    cached: bool,
    retried: bool,
    gpu: bool,
    backend: tuple[int, int] = NEWEST_BACKEND,
    s3: bool = True,
) -> None:
    """Per-task settings from the ``kubeflow:`` params section, as far as ``backend`` knows them."""
    from kfp import kubernetes

    task.set_caching_options(enable_caching=kubeflow.caching and cached)
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    if backend >= BACKEND_FEATURES["security_context"]:
        kubernetes.set_security_context(
            task,
            run_as_user=kubeflow.run_as_user,
            run_as_group=kubeflow.run_as_group,
            run_as_non_root=True,
        )
    if s3:
        kubernetes.use_secret_as_env(
            task, kubeflow.s3_secret, {key: key for key in REQUIRED_S3_KEYS}
        )
        kubernetes.use_secret_as_env(
            task, kubeflow.s3_secret, {key: key for key in OPTIONAL_S3_KEYS}, optional=True
        )
    kubernetes.use_field_path_as_env(task, RUN_ID_VARIABLE, RUN_ID_FIELD)
    kubernetes.set_image_pull_policy(task, kubeflow.image_pull_policy)
    if kubeflow.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(kubeflow.image_pull_secrets))
    retry = kubeflow.retry
    if retried and retry.max_retries > 0 and backend >= BACKEND_FEATURES["retries"]:
        task.set_retry(
            num_retries=retry.max_retries,
            backoff_duration=retry.backoff_duration,
            backoff_factor=retry.backoff_factor,
            backoff_max_duration=retry.backoff_max_duration,
        )
    if gpu:
        request_gpu(task, kubeflow, shm=backend >= BACKEND_FEATURES["shm_empty_dir"])


def request_gpu(task: Any, kubeflow: KubeflowParams, shm: bool = True) -> None:
    """A memory-backed /dev/shm, the accelerator, and the GPU pool's selector and tolerations."""
    from kfp import kubernetes

    gpu = kubeflow.gpu
    if shm:
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=gpu.shm_size,
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


def configure_stage_task(
    task: Any, declared: Stage, kubeflow: KubeflowParams, backend: tuple[int, int]
) -> None:
    """A stage task's settings: its resources, retries and GPU from ``kubeflow.*``."""
    configure_task(
        task,
        kubeflow,
        getattr(kubeflow.resources, declared.name),
        cached=declared.cacheable,
        retried=declared.name in kubeflow.retry.stages,
        gpu=declared.name in kubeflow.gpu.stages,
        backend=backend,
    )


def parse_backend(text: str) -> tuple[int, int]:
    """``--kfp-backend 2.14`` → (2, 14); older than what the pipeline needs is a usage error."""
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        raise UsageError(f"--kfp-backend {text!r}: expected a version such as 2.14") from None
    if (major, minor) < BACKEND_FEATURES["field_path_env"]:
        raise UsageError(
            f"--kfp-backend {text}: solarpipe needs Kubeflow Pipelines 2.1 or newer (the run id "
            "reaches the tasks from a pod label)"
        )
    return major, minor
