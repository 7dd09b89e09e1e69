"""``pipeline.py compile``: the IR holds the params task and one task per declared stage, each in
its own image with the graph of dvc.yaml, the kubeflow params' task settings, one pipeline
parameter per params section defaulting to params.yaml, and no credentials; and the compiled
commands really run: the params task writes the run's document, a stage task runs its stage on it
and publishes the URI it wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.core.manifest import load_manifest
from components.core.params import load_params
from components.core.stages import STAGE_NAMES, STAGES, stage_edges
from components.core.uri import read_text, upload_file
from components.images.names import BUILD_INPUTS, image_name
from tests.kfp_launcher import container, launch, run_params_task, task_environment
from tests.rasters import random_pixels, write_geotiff

REPO = Path(__file__).resolve().parents[1]
PYTHON_BIN = Path(sys.executable).parent
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"
PARAMS = load_params(REPO / "params.yaml")
KUBEFLOW = PARAMS.kubeflow
# Every container task: the params task, the stages, and the two that publish results.
MERGES = ("prepare-merge-manifests", "detect-merge-detections")
TASKS = ("params", *STAGE_NAMES, *MERGES, "quality-gate", "exported-model", "deploy")
CHANNEL = re.compile(r"^pipelinechannel--(.+)-([^-]+)$")
SECTIONS = ("data", "prepare", "labelstudio", "preprocess", "preview", "train", "export", "evaluate", "detect")  # fmt: skip


def compile_pipeline(out: Path, *options: str, cwd: Path = REPO, pipeline: Path = REPO / "pipeline.py",
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    environment = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": SECRET_VALUE,
        "AWS_ACCESS_KEY_ID": "key-id",
    }
    return subprocess.run(
        [sys.executable, str(pipeline), "compile", "--out", str(out), *options],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environment, **(env or {})},
        timeout=180,
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
    """Every container task by name, those inside conditions included (not the conditions)."""
    found: dict[str, Any] = {}
    pending = [spec["root"]["dag"]["tasks"]]
    while pending:
        for name, task in pending.pop().items():
            inner = spec["components"][task["componentRef"]["name"]].get("dag")
            if inner:
                pending.append(inner["tasks"])
            else:
                found[name] = task
    return found


def stage_of(task: str) -> str:
    """The stage a task belongs to: a sharded stage's fan-out and merge are part of it."""
    return task.split("-merge-", 1)[0].removesuffix("-over-shards")


def ir_edges(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(producer, consumer) for every task input that is another task's output."""
    edges = set()
    every_task = [
        (name, task)
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    ]
    for name, task in every_task:
        for value in task.get("inputs", {}).get("parameters", {}).values():
            if "taskOutputParameter" in value:
                edges.add((value["taskOutputParameter"]["producerTask"], name))
            channel = CHANNEL.match(value.get("componentInputParameter", ""))
            if channel:  # inside a condition: the condition hands the output on
                edges.add((channel[1], name))
    return edges


def test_the_params_task_and_one_task_per_stage_each_in_its_own_image(compiled) -> None:
    spec = compiled["spec"]
    assert sorted(tasks(spec)) == sorted(TASKS)
    images = set()
    for stage in STAGES:
        spec_container = container(spec, stage.name)
        assert spec_container["image"] == image_name(stage.name)
        images.add(spec_container["image"])
        assert spec_container["command"] == ["python", "-m", stage.module]
        assert "env" not in spec_container, "settings come from params, secrets from the Secret"
    assert len(images) == len(STAGES)
    assert container(spec, "params")["image"] == image_name("pipeline")
    assert container(spec, "params")["command"] == ["solarpipe", "params"]


def test_graph_edges_equal_the_declaration_and_every_stage_follows_the_params_task(
    compiled,
) -> None:
    edges = {(stage_of(a), stage_of(b)) for a, b in ir_edges(compiled["spec"])}
    stages = set(STAGE_NAMES)
    among_stages = {(a, b) for a, b in edges if a in stages and b in stages and a != b}
    assert among_stages == stage_edges()
    assert {("params", name) for name in STAGE_NAMES} <= edges


def test_outputs_go_under_the_run_folder_and_the_run_id_is_not_a_task_input(compiled) -> None:
    for task in TASKS:
        if task in ("params", *STAGE_NAMES):
            assert "/runs/$(KFP_RUN_ID)/" in json.dumps(container(compiled["spec"], task)["args"])
        field_env = compiled["platform"][f"exec-{task}"]["fieldPathAsEnv"]
        assert field_env == [
            {"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}
        ]
    for stage in STAGES:
        args = json.dumps(container(compiled["spec"], stage.name)["args"])
        assert f"/runs/$(KFP_RUN_ID)/{stage.name}" in args
        assert "/runs/$(KFP_RUN_ID)/params.yaml" in args
    # a per-run input would change every task's cache key on every run
    assert "pipeline_job_uuid" not in compiled["text"]
    for task in tasks(compiled["spec"]).values():
        assert not {"run_id", "run"} & set(task.get("inputs", {}).get("parameters", {}))


def test_gpu_resources_node_pool_and_shared_memory_on_gpu_tasks_only(compiled) -> None:
    gpu = KUBEFLOW.gpu
    assert set(gpu.stages) == {"train", "evaluate", "detect"}
    tolerations = [{k: v for k, v in t.model_dump().items() if v} for t in gpu.tolerations]
    for stage in TASKS:
        resources = container(compiled["spec"], stage).get("resources", {})
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
    assert "secretAsEnv" not in compiled["platform"]["exec-deploy"], "deploy reads no S3"
    for stage in (task for task in TASKS if task != "deploy"):
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


def test_tasks_retry_with_backoff_as_the_params_say(compiled) -> None:
    retry = KUBEFLOW.retry
    for stage in TASKS:
        policy = tasks(compiled["spec"])[stage].get("retryPolicy")
        if stage in (*retry.stages, "params", *MERGES, "quality-gate", "exported-model"):
            assert policy == {
                "maxRetryCount": retry.max_retries,
                "backoffDuration": retry.backoff_duration,
                "backoffFactor": retry.backoff_factor,
                "backoffMaxDuration": retry.backoff_max_duration,
            }
        else:
            assert policy is None
    assert "train" in retry.stages, "a preempted node: train is retried and resumes"


def test_caching_is_on_except_for_preprocess_and_the_params_task_and_off_by_param(
    compiled, tmp_path
) -> None:
    caching = {name: task["cachingOptions"] for name, task in tasks(compiled["spec"]).items()}
    assert caching.pop("preprocess") in ({}, {"enableCache": False})
    assert caching.pop("params") in ({}, {"enableCache": False}), "it writes each run's document"
    assert caching.pop("deploy") in ({}, {"enableCache": False}), "it changes the cluster"
    assert sorted(caching) == sorted(set(TASKS) - {"preprocess", "params", "deploy"})
    assert all(options == {"enableCache": True} for options in caching.values())

    out = tmp_path / "uncached.yaml"
    assert compile_pipeline(out, "--set", "kubeflow.caching=false").returncode == 0
    spec, _ = load_ir(out)
    assert all(
        task["cachingOptions"] in ({}, {"enableCache": False}) for task in tasks(spec).values()
    )


def test_every_task_runs_as_the_images_non_root_user_with_its_resources(compiled) -> None:
    for task in TASKS:
        context = compiled["platform"][f"exec-{task}"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert int(context["runAsUser"]) == KUBEFLOW.run_as_user != 0
    for stage in STAGE_NAMES:
        wanted = getattr(KUBEFLOW.resources, stage)
        resources = container(compiled["spec"], stage)["resources"]
        assert resources["resourceCpuLimit"] == wanted.cpu_limit
        assert resources["resourceMemoryRequest"] == wanted.memory_request


def test_one_pipeline_parameter_per_params_section_defaulting_to_params_yaml(
    compiled, tmp_path
) -> None:
    inputs = compiled["spec"]["root"]["inputDefinitions"]["parameters"]
    assert sorted(inputs) == sorted(SECTIONS)
    for section in SECTIONS:
        assert inputs[section]["parameterType"] == "STRUCT"
        shipped = getattr(PARAMS, section).model_dump(mode="json", exclude_none=True)
        assert inputs[section]["defaultValue"] == shipped
    assert inputs["preprocess"]["defaultValue"]["split"]["train"] == PARAMS.preprocess.split.train
    assert "nodata" not in inputs["prepare"]["defaultValue"], "null: the compiled value stays"

    custom = tmp_path / "params.yaml"
    custom.write_text((REPO / "params.yaml").read_text().replace("epochs: 30", "epochs: 7", 1))
    out = tmp_path / "custom.yaml"
    done = compile_pipeline(out, "--params", str(custom))
    assert done.returncode == 0, done.stderr
    spec, _ = load_ir(out)
    assert spec["root"]["inputDefinitions"]["parameters"]["train"]["defaultValue"]["epochs"] == 7


def test_solarpipe_kfp_compiles_the_projects_pipeline_from_any_folder(compiled, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pipeline.py").write_text("raise SystemExit('not the project pipeline')\n")
    out = tmp_path / "via-cli.yaml"
    done = subprocess.run(
        [str(PYTHON_BIN / "solarpipe"), "kfp", "compile", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert load_ir(out) == (compiled["spec"], compiled["platform"])


def test_a_code_change_compiles_to_other_image_references(tmp_path) -> None:
    """Images are tagged by their code: KFP's cache key and the nodes' pulls follow a change."""
    tree = tmp_path / "tree"
    for name in (*BUILD_INPUTS, "pipeline.py", "params.yaml"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tree / name)

    def images() -> set[str]:
        out = tmp_path / "ir.yaml"
        done = compile_pipeline(
            out, cwd=tree, pipeline=tree / "pipeline.py", env={"PYTHONPATH": str(tree)}
        )
        assert done.returncode == 0, done.stderr
        spec, _ = load_ir(out)
        return {
            executor["container"]["image"]
            for executor in spec["deploymentSpec"]["executors"].values()
        }

    before = images()
    assert before == images()
    code = tree / "components" / "detect" / "run.py"
    code.write_text(code.read_text() + "\n# a change\n")
    after = images()
    assert not before & after, "every image carries all of the code: every reference changes"
    assert all(re.search(r":\d+\.\d+\.\d+-[0-9a-f]{12}$", image) for image in before | after)


def test_gpu_request_without_accelerator_type_is_exit_2(tmp_path) -> None:
    done = compile_pipeline(tmp_path / "x.yaml", "--set", "kubeflow.gpu.accelerator_type=")
    assert done.returncode == 2
    assert "accelerator_type" in done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_unknown_set_key_is_exit_2_naming_it(tmp_path) -> None:
    done = compile_pipeline(tmp_path / "x.yaml", "--set", "train.epoch=3")
    assert done.returncode == 2
    assert "train.epoch: unknown key" in done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_set_without_a_section_is_exit_2(tmp_path) -> None:
    done = compile_pipeline(tmp_path / "x.yaml", "--set", "train_epochs=3")
    assert done.returncode == 2
    assert "--set expects section.key=value" in done.stderr


# -- the compiled commands, run as Kubeflow's launcher would run them (tests/kfp_launcher.py) --


def test_compiled_params_task_writes_the_runs_document_with_the_run_arguments(
    compiled, bucket, tmp_path
) -> None:
    data = {**PARAMS.data.model_dump(), "bucket": bucket}
    outputs = run_params_task(
        compiled["spec"],
        {"data": data, "train": {"epochs": 3}},
        tmp_path,
        task_environment("run-7"),
    )
    document = yaml.safe_load(read_text(f"s3://{bucket}/runs/run-7/params.yaml"))
    assert document["train"]["epochs"] == 3, "the run's argument over the compiled params"
    assert document["train"]["batch_size"] == PARAMS.train.batch_size, "a partial section merges"
    assert document["prepare"]["nodata"] is None and document["kubeflow"] == KUBEFLOW.model_dump(
        mode="json"
    )
    assert outputs["bucket"] == bucket and outputs["raster"] == PARAMS.data.raster
    assert all(re.fullmatch(r"[0-9a-f]{64}", outputs[f"{name}_params"]) for name in STAGE_NAMES)


def test_compiled_prepare_command_runs_the_stage_and_publishes_the_manifest_uri(
    compiled, bucket, tmp_path
) -> None:
    raster = write_geotiff(tmp_path / "scene.tif", random_pixels(3, 300, 300))
    upload_file(str(raster), f"s3://{bucket}/raw/scene.tif")
    env = task_environment("run-42")
    data = {"bucket": bucket, "raster": f"s3://{bucket}/raw/scene.tif", "tiles": f"s3://{bucket}/tiles", "annotations": f"s3://{bucket}/a"}  # fmt: skip
    outputs = run_params_task(compiled["spec"], {"data": data}, tmp_path / "params", env)
    output_file = tmp_path / "outputs" / "uri"
    values = {
        "bucket": outputs["bucket"],
        "params_digest": outputs["prepare_params"],
        "raster": outputs["raster"],
        "tiles": outputs["tiles"],
        "shard": "0/1",
        "uri": str(output_file),
    }
    done = launch(compiled["spec"], "prepare", values, env)
    assert done.returncode == 0, done.stderr
    manifest_uri = f"s3://{bucket}/runs/run-42/prepare/parts/shard-0000-of-0001.json"
    assert output_file.read_text() == manifest_uri, "the shard hands down its part"
    manifest = load_manifest(manifest_uri)
    assert len(manifest.tiles) == 4
    assert manifest.tiles_prefix.rstrip("/") == f"s3://{bucket}/tiles"


def test_compiled_command_without_the_run_id_fails_before_running_the_stage(
    compiled, tmp_path
) -> None:
    values = {
        "bucket": "b",
        "params_digest": "0" * 64,
        "annotations": "s3://b/annotations.json",
        "uri": str(tmp_path / "uri"),
    }
    env = {k: v for k, v in os.environ.items() if k != "KFP_RUN_ID"}
    done = launch(compiled["spec"], "preview", values, env)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "components.preview: error: $(KFP_RUN_ID) in the arguments, but KFP_RUN_ID is not set"
    )
    assert not (tmp_path / "uri").exists()


def test_a_stage_refuses_a_params_document_that_is_not_the_one_resolved(
    compiled, bucket, tmp_path
) -> None:
    env = task_environment("run-9")
    outputs = run_params_task(compiled["spec"], {"data": {"bucket": bucket}}, tmp_path, env)
    document = f"s3://{bucket}/runs/run-9/params.yaml"
    changed = read_text(document).replace("samples: 8", "samples: 3")
    upload_text = tmp_path / "changed.yaml"
    upload_text.write_text(changed)
    upload_file(str(upload_text), document)
    values = {"bucket": bucket, "params_digest": outputs["preview_params"], "annotations": "s3://b/a.json", "uri": str(tmp_path / "uri")}  # fmt: skip
    done = launch(compiled["spec"], "preview", values, env)
    assert done.returncode == 2
    assert (
        "the params preview in s3://" in done.stderr
        and "changed after the run resolved it" in done.stderr
    )


def test_train_is_retried_and_resumes_from_its_last_checkpoint(compiled) -> None:
    assert "--resume" in container(compiled["spec"], "train")["args"]
    assert (
        tasks(compiled["spec"])["train"]["retryPolicy"]["maxRetryCount"]
        == KUBEFLOW.retry.max_retries
    )
    assert "--resume" not in container(compiled["spec"], "export")["args"]


def test_detect_runs_behind_the_quality_gate_on_evaluates_map(compiled) -> None:
    root = compiled["spec"]["root"]["dag"]["tasks"]
    assert "detect" not in root, "detect is inside the condition, not at the top level"
    [condition] = [task for task in root.values() if "triggerPolicy" in task]
    assert condition["triggerPolicy"]["condition"] == (
        f"inputs.parameter_values['pipelinechannel--quality-gate-Output'] >= {KUBEFLOW.min_map50}"
    )
    inside = tasks(
        {
            **compiled["spec"],
            "root": compiled["spec"]["components"][condition["componentRef"]["name"]],
        }
    )
    assert sorted(inside) == ["deploy", "detect", "detect-merge-detections"]
    deploy = container(compiled["spec"], "deploy")
    assert deploy["command"] == ["python", "-m", "components.deploy"]
    assert deploy["args"][:2] == ["--model-uri", "{{$.inputs.parameters['model']}}"]
    assert inside["deploy"]["inputs"]["parameters"]["model"]["componentInputParameter"] == (
        "pipelinechannel--export-uri"
    )
    assert "retryPolicy" not in inside["deploy"], "a failed rollout is rolled back, not retried"
    gate = root["quality-gate"]["inputs"]["parameters"]
    assert gate["evaluation"]["taskOutputParameter"] == {
        "outputParameterKey": "uri",
        "producerTask": "evaluate",
    }


def test_reports_metrics_and_model_are_kfp_artifacts_of_their_kind(compiled) -> None:
    components = compiled["spec"]["components"]
    wanted = {
        ("preprocess", "summary"): "system.Markdown",
        ("preview", "gallery"): "system.HTML",
        ("train", "curve"): "system.Markdown",
        ("evaluate", "overlays"): "system.HTML",
        ("quality-gate", "metrics"): "system.Metrics",
        ("quality-gate", "decision"): "system.Markdown",
        ("exported-model", "model"): "system.Model",
    }
    for (task, artifact), kind in wanted.items():
        outputs = components[f"comp-{task}"]["outputDefinitions"]["artifacts"]
        assert outputs[artifact]["artifactType"]["schemaTitle"] == kind, (task, artifact)
    for task in ("quality-gate", "exported-model"):
        gate = container(compiled["spec"], task)
        assert gate["image"] == image_name("pipeline")
        assert "pip install" not in json.dumps(gate["command"]), "kfp is in the image already"


def test_no_image_is_referenced_by_version_alone(compiled) -> None:
    images = {
        e["container"]["image"] for e in compiled["spec"]["deploymentSpec"]["executors"].values()
    }
    version = re.escape(image_name("prepare").split(":")[1].split("-")[0])
    assert images and all(re.search(rf":{version}-[0-9a-f]{{12}}$", image) for image in images)


def test_an_older_backend_gets_a_pipeline_without_what_it_does_not_know(tmp_path) -> None:
    out = tmp_path / "old.yaml"
    done = compile_pipeline(out, "--kfp-backend", "2.5")
    assert done.returncode == 0, done.stderr
    spec, platform = load_ir(out)
    assert not any("securityContext" in executor for executor in platform.values())  # 2.16
    assert not any("retryPolicy" in task for task in tasks(spec).values())  # 2.14
    assert "emptyDirMounts" in platform["exec-train"], "2.3 knows /dev/shm as emptyDir"
    assert all("fieldPathAsEnv" in executor for executor in platform.values())
    done = compile_pipeline(tmp_path / "x.yaml", "--kfp-backend", "2.0")
    assert done.returncode == 2
    assert "needs Kubeflow Pipelines 2.1 or newer" in done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_the_gpu_profile_is_compiled_in_and_an_unknown_one_is_exit_2(tmp_path) -> None:
    out = tmp_path / "gpu.yaml"
    done = compile_pipeline(out, "--profile", "gpu")
    assert done.returncode == 0, done.stderr
    spec, _ = load_ir(out)
    train = spec["root"]["inputDefinitions"]["parameters"]["train"]["defaultValue"]
    assert train["arch"] == "fasterrcnn_resnet50_fpn_v2"
    assert "max_minutes" not in train, "no time cap (null: left to the compiled document)"
    document = json.dumps(container(spec, "params")["args"])
    assert "max_minutes: null" in document
    done = compile_pipeline(tmp_path / "x.yaml", "--profile", "tpu")
    assert done.returncode == 2
    assert "--profile tpu: no such profile (profiles: gpu)" in done.stderr


def test_deploy_can_be_left_out(tmp_path) -> None:
    out = tmp_path / "no-deploy.yaml"
    assert compile_pipeline(out, "--set", "kubeflow.deploy.enabled=false").returncode == 0
    spec, _ = load_ir(out)
    assert "deploy" not in tasks(spec) and "detect" in tasks(spec)


def test_prepare_and_detect_fan_out_over_the_shards_and_merge_their_parts(tmp_path) -> None:
    out = tmp_path / "sharded.yaml"
    options = ["--set", "kubeflow.shards=4", "--set", "kubeflow.shard_parallelism=2"]
    done = compile_pipeline(out, *options)
    assert done.returncode == 0, done.stderr
    spec, _ = load_ir(out)
    every_dag = [spec["root"], *spec["components"].values()]
    loop_tasks = [
        task
        for component in every_dag
        for task in component.get("dag", {}).get("tasks", {}).values()
        if "parameterIterator" in task
    ]
    assert len(loop_tasks) == 2
    for name in ("prepare", "detect"):
        [loop] = [
            task
            for task in loop_tasks
            if name in spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
        ]
        assert json.loads(loop["parameterIterator"]["items"]["raw"]) == ["0/4", "1/4", "2/4", "3/4"]
        assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
        args = json.dumps(container(spec, name)["args"])
        assert f"/runs/$(KFP_RUN_ID)/{name}/parts/" in args and "--shard" in args
    merge = container(spec, "prepare-merge-manifests")
    assert merge["command"] == ["python", "-m", "components.shards"]
    assert merge["args"][0] == "merge-manifests" and merge["image"] == image_name("prepare")
    joined = tasks(spec)["prepare-merge-manifests"]["inputs"]["parameters"]["parts"]
    assert joined["taskOutputParameter"]["producerTask"].startswith("for-loop"), "dsl.Collected"
    preprocess = tasks(spec)["preprocess"]["inputs"]["parameters"]["manifest"]
    assert preprocess["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "prepare-over-shards",
    }
