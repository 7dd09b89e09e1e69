"""``pipeline.py compile``: the IR holds one task per stage image with the graph of dvc.yaml, the
kubeflow params' task settings, parameters defaulting to params.yaml, and no credentials; and a
task's compiled command really runs its stage and publishes the URI it wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.core.manifest import load_manifest
from components.core.params import load_params
from components.core.uri import upload_file
from components.images.names import STAGES, image_name
from tests.rasters import random_pixels, write_geotiff

REPO = Path(__file__).resolve().parents[1]
PYTHON_BIN = Path(sys.executable).parent
# dvc.yaml stages that only exist for DVC's change detection (Kubeflow never caches preprocess
# instead): they are not pipeline tasks, so they are left out of the comparison.
DVC_ONLY_STAGES = {"annotations-listing"}
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"
PARAMS = load_params(REPO / "params.yaml")
KUBEFLOW = PARAMS.kubeflow


def compile_pipeline(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET_VALUE, "AWS_ACCESS_KEY_ID": "key-id"}
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "compile", "--out", str(out), *options],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def load_ir(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    done = compile_pipeline(out)
    assert done.returncode == 0, done.stderr
    spec, platform = load_ir(out)
    return {"path": out, "text": out.read_text(), "spec": spec, "platform": platform}


def tasks(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["root"]["dag"]["tasks"]


def container(spec: dict[str, Any], stage: str) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][f"exec-{stage}"]["container"]


def ir_edges(spec: dict[str, Any]) -> set[tuple[str, str]]:
    edges = set()
    for name, task in tasks(spec).items():
        for value in task.get("inputs", {}).get("parameters", {}).values():
            if "taskOutputParameter" in value:
                edges.add((value["taskOutputParameter"]["producerTask"], name))
        edges |= {(upstream, name) for upstream in task.get("dependentTasks", [])}
    return edges


def dvc_edges() -> set[tuple[str, str]]:
    """(producer, consumer) for every dvc.yaml dep that is (inside) another stage's out."""

    def paths(entries: list[Any]) -> list[str]:
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = {
        name: paths(stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []))
        for name, stage in stages.items()
    }
    edges = set()
    for consumer, stage in stages.items():
        for dep in paths(stage.get("deps", [])):
            for producer, produced in outs.items():
                if any(dep == out or dep.startswith(f"{out}/") for out in produced):
                    edges.add((producer, consumer))
    return {(a, b) for a, b in edges if a not in DVC_ONLY_STAGES and b not in DVC_ONLY_STAGES}


def test_one_task_per_stage_each_in_its_own_image_running_its_stage(compiled) -> None:
    spec = compiled["spec"]
    assert sorted(tasks(spec)) == sorted(STAGES)
    images = set()
    for stage in STAGES:
        spec_container = container(spec, stage)
        assert spec_container["image"] == image_name(stage)
        images.add(spec_container["image"])
        command = spec_container["command"]
        assert command[:2] == ["sh", "-c"]
        assert f"python -m components.{stage} " in command[2]
        assert "env" not in spec_container, "settings come from params, secrets from the Secret"
    assert len(images) == len(STAGES)


def test_graph_edges_equal_dvc_yaml(compiled) -> None:
    expected = dvc_edges()
    assert ("prepare", "preprocess") in expected  # the dvc.yaml reading works
    assert ir_edges(compiled["spec"]) == expected


def test_outputs_go_under_the_run_folder_and_the_run_id_is_not_a_task_input(compiled) -> None:
    for stage in STAGES:
        script = container(compiled["spec"], stage)["command"][2]
        assert 'run="s3://$1/runs/${KFP_RUN_ID:?' in script
        assert f'"$run/{stage}' in script
        field_env = compiled["platform"][f"exec-{stage}"]["fieldPathAsEnv"]
        assert field_env == [
            {"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}
        ]
    # a per-run input would change every task's cache key on every run
    assert "pipeline_job_uuid" not in compiled["text"]


def test_gpu_resources_node_pool_and_shared_memory_on_gpu_tasks_only(compiled) -> None:
    gpu = KUBEFLOW.gpu
    assert set(gpu.stages) == {"train", "evaluate", "detect"}
    tolerations = [{k: v for k, v in t.model_dump().items() if v} for t in gpu.tolerations]
    for stage in STAGES:
        resources = container(compiled["spec"], stage)["resources"]
        k8s = compiled["platform"][f"exec-{stage}"]
        if stage in gpu.stages:
            assert resources["accelerator"]["resourceType"] == gpu.accelerator_type
            assert resources["accelerator"]["resourceCount"] == str(gpu.accelerator_limit)
            assert k8s["nodeSelector"]["labels"] == gpu.node_selector
            assert k8s["tolerations"] == tolerations
            assert k8s["emptyDirMounts"] == [
                {
                    "volumeName": "dshm",
                    "mountPath": "/dev/shm",
                    "medium": "Memory",
                    "sizeLimit": gpu.shm_size,
                }
            ]
        else:
            assert "accelerator" not in resources
            assert not {"nodeSelector", "tolerations", "emptyDirMounts"} & set(k8s)


def test_every_task_gets_s3_settings_from_the_secret_and_no_credential_is_in_the_yaml(
    compiled,
) -> None:
    for stage in STAGES:
        from_secret = compiled["platform"][f"exec-{stage}"]["secretAsEnv"]
        assert {entry["secretName"] for entry in from_secret} == {KUBEFLOW.s3_secret}
        required = next(entry for entry in from_secret if not entry["optional"])
        assert {pair["envVar"] for pair in required["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        optional = next(entry for entry in from_secret if entry["optional"])
        assert {pair["envVar"] for pair in optional["keyToEnv"]} == {
            "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION",
        }
    assert SECRET_VALUE not in compiled["text"]
    assert "key-id" not in compiled["text"]


def test_s3_tasks_retry_with_backoff_and_train_does_not(compiled) -> None:
    retry = KUBEFLOW.retry
    for stage in STAGES:
        policy = tasks(compiled["spec"])[stage].get("retryPolicy")
        if stage in retry.stages:
            assert policy == {
                "maxRetryCount": retry.max_retries,
                "backoffDuration": retry.backoff_duration,
                "backoffFactor": retry.backoff_factor,
                "backoffMaxDuration": retry.backoff_max_duration,
            }
        else:
            assert policy is None
    assert "train" not in retry.stages


def test_caching_is_on_except_for_preprocess_and_off_by_param(compiled, tmp_path) -> None:
    caching = {name: task["cachingOptions"] for name, task in tasks(compiled["spec"]).items()}
    assert caching.pop("preprocess") in ({}, {"enableCache": False})
    assert all(options == {"enableCache": True} for options in caching.values())

    out = tmp_path / "uncached.yaml"
    assert compile_pipeline(out, "--set", "kubeflow.caching=false").returncode == 0
    spec, _ = load_ir(out)
    assert all(
        task["cachingOptions"] in ({}, {"enableCache": False}) for task in tasks(spec).values()
    )


def test_every_task_runs_as_the_images_non_root_user_with_its_resources(compiled) -> None:
    for stage in STAGES:
        context = compiled["platform"][f"exec-{stage}"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert int(context["runAsUser"]) == KUBEFLOW.run_as_user != 0
        wanted = getattr(KUBEFLOW.resources, stage)
        resources = container(compiled["spec"], stage)["resources"]
        assert resources["resourceCpuLimit"] == wanted.cpu_limit
        assert resources["resourceMemoryRequest"] == wanted.memory_request


def test_pipeline_parameters_default_to_params_yaml(compiled, tmp_path) -> None:
    inputs = compiled["spec"]["root"]["inputDefinitions"]["parameters"]
    assert inputs["data_bucket"]["defaultValue"] == PARAMS.data.bucket
    assert inputs["train_epochs"]["defaultValue"] == PARAMS.train.epochs
    assert inputs["train_epochs"]["parameterType"] == "NUMBER_INTEGER"
    assert inputs["preprocess_split_train"]["defaultValue"] == PARAMS.preprocess.split.train
    assert inputs["prepare_skip_nodata"]["parameterType"] == "BOOLEAN"
    assert inputs["prepare_nodata"]["defaultValue"] == "null"  # optional: YAML text
    assert not [name for name in inputs if name.startswith(("kubeflow", "labelstudio"))]

    custom = tmp_path / "params.yaml"
    custom.write_text((REPO / "params.yaml").read_text().replace("epochs: 30", "epochs: 7", 1))
    out = tmp_path / "custom.yaml"
    done = compile_pipeline(out, "--params", str(custom))
    assert done.returncode == 0, done.stderr
    spec, _ = load_ir(out)
    assert spec["root"]["inputDefinitions"]["parameters"]["train_epochs"]["defaultValue"] == 7


def test_solarpipe_kfp_compiles_the_same_pipeline(compiled, tmp_path) -> None:
    out = tmp_path / "via-cli.yaml"
    done = subprocess.run(
        [str(PYTHON_BIN / "solarpipe"), "kfp", "compile", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == compiled["text"]


def test_gpu_request_without_accelerator_type_is_exit_2(tmp_path) -> None:
    done = compile_pipeline(tmp_path / "x.yaml", "--set", "kubeflow.gpu.accelerator_type=")
    assert done.returncode == 2
    assert "accelerator_type" in done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_unknown_set_key_is_exit_2_and_lists_the_parameters(tmp_path) -> None:
    done = compile_pipeline(tmp_path / "x.yaml", "--set", "train.epoch=3")
    assert done.returncode == 2
    assert "no such parameter" in done.stderr and "train_epochs" in done.stderr


# -- the compiled command, run as Kubeflow's launcher would run it --------------------------

PLACEHOLDER = re.compile(
    r"\{\{\$\.(?:inputs|outputs)\.parameters\['([^']+)'\](?:\.output_file)?\}\}"
)


def resolve(argument: str, values: dict[str, str]) -> str:
    if argument.startswith('{"Concat"'):
        return "".join(resolve(part, values) for part in json.loads(argument)["Concat"])
    return PLACEHOLDER.sub(lambda match: values[match[1]], argument)


def launch(spec: dict[str, Any], stage: str, values: dict[str, str], env: dict[str, str]):
    """The task's command line with its placeholders filled, run in a shell like in the pod."""
    spec_container = container(spec, stage)
    argv = spec_container["command"] + [resolve(a, values) for a in spec_container["args"]]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def parameter_values(spec: dict[str, Any]) -> dict[str, str]:
    """Pipeline defaults rendered as KFP renders them into commands (JSON for non-strings)."""
    values = {}
    for name, definition in spec["root"]["inputDefinitions"]["parameters"].items():
        value = definition.get("defaultValue")
        if definition["parameterType"] == "NUMBER_INTEGER":
            value = int(value)
        values[name] = value if isinstance(value, str) else json.dumps(value)
    return values


def test_compiled_prepare_command_runs_the_stage_and_publishes_the_manifest_uri(
    compiled, bucket, tmp_path
) -> None:
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 300, 300))
    upload_file(str(raster), f"s3://{bucket}/raw/scene.tif")
    output_file = tmp_path / "outputs" / "manifest"
    values = {
        **parameter_values(compiled["spec"]),
        "bucket": bucket,
        "raster": f"s3://{bucket}/raw/scene.tif",
        "tiles": f"s3://{bucket}/tiles",
        "manifest": str(output_file),
    }
    env = {**os.environ, "PATH": f"{PYTHON_BIN}:{os.environ['PATH']}", "KFP_RUN_ID": "run-42"}
    done = launch(compiled["spec"], "prepare", values, env)
    assert done.returncode == 0, done.stderr
    manifest_uri = f"s3://{bucket}/runs/run-42/prepare/manifest.json"
    assert output_file.read_text() == manifest_uri
    manifest = load_manifest(manifest_uri)
    assert len(manifest.tiles) == 4
    assert manifest.tiles_prefix.rstrip("/") == f"s3://{bucket}/tiles"


def test_compiled_command_without_the_run_id_fails_before_running_the_stage(
    compiled, tmp_path
) -> None:
    values = {
        **parameter_values(compiled["spec"]),
        "bucket": "b",
        "annotations": "s3://b/annotations.json",
        "gallery": str(tmp_path / "gallery"),
    }
    env = {k: v for k, v in os.environ.items() if k != "KFP_RUN_ID"}
    done = launch(compiled["spec"], "preview", values, env)
    assert done.returncode != 0
    assert "KFP_RUN_ID is not set" in done.stderr
    assert not (tmp_path / "gallery").exists()
