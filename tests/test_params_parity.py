"""Parity: with the same params, every stage ends up with the same values under ``dvc repro`` and
under the compiled Kubeflow pipeline given them as a per-run override (run-local: in
tests/test_pipeline_run_local.py), nested keys and lists included.

DVC side: DVC's own API resolves each stage's command from dvc.yaml and params.yaml; the stage
parses it and loads ./params.yaml as it does when ``dvc repro`` runs it. Kubeflow side: no
backend can run here, so tests/kfp_launcher.py plays KFP's launcher: it fills the compiled IR's
placeholders with the run's arguments and runs the params task's command for real against the
embedded S3; each stage then parses its compiled arguments and loads the run's document (and
checks its digest, as it does in its pod).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.commands.kfp import load_pipeline_module
from components.core.stage import expand_environment, resolve_stage_params, stage_parser
from components.core.stages import STAGES
from components.core.uri import read_text
from tests.kfp_launcher import run_params_task, task_argv, task_environment

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "parity-run"
# One change per stage at least; nested keys, lists and nulls among them.
OVERRIDES: dict[str, Any] = {
    "prepare.tile_size": 128,
    "prepare.nodata": 0,
    "prepare.uint16_max": 4095,
    "labelstudio.labels": ["solar_panel", "solar_thermal"],
    "preprocess.split.train": 0.6,
    "preprocess.split.val": 0.25,
    "preprocess.split.test": 0.15,
    "preprocess.max_empty_fraction": None,
    "preview.samples": 3,
    "train.epochs": 4,
    "train.limit_train_batches": 2,
    "export.score_threshold": 0.25,
    "evaluate.iou_threshold": 0.4,
    "detect.overlap": 32,
}
TOLERATIONS = [
    {"key": "example.com/spot", "operator": "Exists", "value": "", "effect": "NoExecute"}
]


def set_options(overrides: dict[str, Any]) -> list[str]:
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in overrides.items()]  # fmt: skip


def stage_values(stage_name: str, argv: list[str]) -> dict[str, Any]:
    """The params the stage ends up with for this command line (its own parsing and loading)."""
    declared = next(stage for stage in STAGES if stage.name == stage_name)
    args = stage_parser(declared, "").parse_args(expand_environment(argv))
    return resolve_stage_params(declared, args).model_dump(mode="json")


@pytest.fixture(scope="module")
def pipeline_module() -> Any:
    return load_pipeline_module(REPO / "pipeline.py")


@pytest.fixture(scope="module")
def under_dvc(tmp_path_factory: pytest.TempPathFactory, pipeline_module) -> dict[str, Any]:
    """Each stage's params when ``dvc repro`` runs it with OVERRIDES in params.yaml."""
    from dvc.repo import Repo

    project = tmp_path_factory.mktemp("dvc-project")
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    params, _ = pipeline_module.load_settings(str(REPO / "params.yaml"), set_options(OVERRIDES))
    (project / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    commands = {stage.name: stage.cmd for stage in Repo(str(project)).index.stages}
    values = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        for stage in STAGES:
            argv = shlex.split(commands[stage.name])
            assert argv[:3] == ["python", "-m", stage.module]
            values[stage.name] = stage_values(stage.name, argv[3:])
    return values


@pytest.fixture(scope="module")
def under_kubeflow(tmp_path_factory, pipeline_module, s3_server) -> dict[str, Any]:
    """Each stage's params in a run of the compiled pipeline with OVERRIDES as its arguments."""
    from components.s3server import ensure_bucket

    folder = tmp_path_factory.mktemp("kfp")
    bucket = "parity"
    ensure_bucket(bucket)
    compiled = folder / "pipeline.yaml"
    tolerations = f"kubeflow.gpu.tolerations={yaml.safe_dump(TOLERATIONS, default_flow_style=True).strip()}"  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "compile", "--out", str(compiled), "--set", tolerations],
        capture_output=True, text=True, cwd=REPO, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec, platform = yaml.safe_load_all(compiled.read_text())
    _, arguments = pipeline_module.load_settings(
        str(REPO / "params.yaml"), [f"data.bucket={bucket}", *set_options(OVERRIDES)]
    )
    env = task_environment(RUN_ID)
    outputs = run_params_task(spec, arguments, folder / "outputs", env)
    values = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KFP_RUN_ID", RUN_ID)
        for stage in STAGES:
            inputs = {"bucket": outputs["bucket"], "params_digest": outputs[f"{stage.name}_params"]}
            inputs |= {option.name: f"s3://{bucket}/in/{option.name}" for option in stage.options}
            inputs["shard"] = "0/1"
            inputs["uri"] = str(folder / f"{stage.name}.uri")
            argv = task_argv(spec, stage.name, inputs)
            assert argv[:3] == ["python", "-m", stage.module]
            values[stage.name] = stage_values(stage.name, argv[3:])
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        "stages": values,
        "document": yaml.safe_load(read_text(f"s3://{bucket}/runs/{RUN_ID}/params.yaml")),
        "train_tolerations": executors["exec-train"]["tolerations"],
    }


@pytest.mark.parametrize("stage", [stage.name for stage in STAGES])
def test_each_stage_reads_the_same_params_under_dvc_and_kubeflow(
    stage: str, under_dvc, under_kubeflow
) -> None:
    assert under_kubeflow["stages"][stage] == under_dvc[stage]


def test_the_overrides_reached_the_stages_that_read_them(under_dvc, under_kubeflow) -> None:
    """Not vacuous: the changed values, nested and listed, are what the stages got."""
    for values in (under_dvc, under_kubeflow["stages"]):
        assert values["detect"]["prepare"] == {"nodata": 0, "uint16_max": 4095}
        assert values["detect"]["detect"]["overlap"] == 32
        assert values["preprocess"]["labelstudio"] == {"labels": ["solar_panel", "solar_thermal"]}
        assert values["preprocess"]["preprocess"]["split"] == {
            "train": 0.6,
            "val": 0.25,
            "test": 0.15,
        }
        assert values["preprocess"]["preprocess"]["max_empty_fraction"] is None
        assert values["prepare"]["prepare"]["tile_size"] == 128
        assert values["train"]["train"]["limit_train_batches"] == 2


def test_the_runs_document_records_the_task_settings_it_was_compiled_with(under_kubeflow) -> None:
    document = under_kubeflow["document"]
    assert document["kubeflow"]["gpu"]["tolerations"] == TOLERATIONS
    assert under_kubeflow["train_tolerations"] == [
        {key: value for key, value in toleration.items() if value} for toleration in TOLERATIONS
    ]
    assert document["train"]["epochs"] == OVERRIDES["train.epochs"]
