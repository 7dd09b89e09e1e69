"""The whole graph with ``dvc repro`` on a tiny configuration against the embedded S3 server.

Checks every output, the no-op rerun, the partial rerun after a param change, experiments,
metrics and plots, and a DVC remote on the same S3 endpoint (push, pull).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from components.synth.geotiff import truth_uri_for, write_scene
from tests.dvc_project import REPO, copy_project, run, stages_run
from tests.readme_text import inline_commands, readme_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_server) -> Path:
    """A copy of the project (code, dvc.yaml, tiny params) in its own git + DVC repository."""
    from components.s3server import ensure_bucket

    root = tmp_path_factory.mktemp("project")
    bucket = "dvc-e2e"
    ensure_bucket(bucket)
    params = copy_project(
        root,
        {
            "bucket": bucket,
            "raster": f"s3://{bucket}/scenes/tiny.tif",
            "tiles": f"s3://{bucket}/tiles",
            "annotations": f"s3://{bucket}/annotations",
        },
    )
    write_scene(params["data"]["raster"], size=512, seed=5)
    run([sys.executable, "-m", "dvc", "repro", "prepare"], root)
    run(
        [
            sys.executable,
            "-m",
            "components.cli",
            "labelstudio",
            "annotate-from-truth",
            "--manifest",
            "data/manifest.json",
            "--truth",
            truth_uri_for(params["data"]["raster"]),
            "--annotations",
            params["data"]["annotations"],
        ],
        root,
    )
    output = run([sys.executable, "-m", "dvc", "repro"], root)
    assert {"preprocess", "preview", "train", "export", "evaluate", "detect"} <= stages_run(output)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny pipeline"], root)
    return root


def test_repro_writes_every_output_and_numeric_metrics(project: Path) -> None:
    for path in [
        "data/manifest.json",
        "data/annotations.json",
        "out/preview/index.html",
        "out/train/model.ckpt",
        "out/train/metrics.json",
        "out/export/model.pt",
        "out/evaluate/metrics.json",
        "out/evaluate/pr_curve.json",
        "out/detect/detections.geojson",
    ]:
        assert (project / path).exists(), path
    metrics = json.loads((project / "out/evaluate/metrics.json").read_text())
    assert metrics and all(isinstance(v, int | float) for v in metrics.values())
    detections = json.loads((project / "out/detect/detections.geojson").read_text())
    assert detections["type"] == "FeatureCollection"


def test_second_repro_runs_nothing_and_status_is_up_to_date(project: Path) -> None:
    output = run([sys.executable, "-m", "dvc", "repro"], project)
    assert stages_run(output) == set()
    status = run([sys.executable, "-m", "dvc", "status"], project)
    assert status.strip() == "Data and pipelines are up to date."


def test_changing_epochs_reruns_only_train_and_after(project: Path) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["epochs"] = 2
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    output = run([sys.executable, "-m", "dvc", "repro"], project)
    assert stages_run(output) == {"train", "export", "evaluate", "detect"}
    run(["git", "commit", "-qam", "two epochs"], project)


def test_changed_annotations_rerun_preprocess_once_the_listing_is_refreshed(
    project: Path,
) -> None:
    """The labels are a snapshot: new ones count from the refresh on, like `dvc update`."""
    from components.core import uri as uri_io

    params = yaml.safe_load((project / "params.yaml").read_text())
    first = next(uri_io.list_objects(params["data"]["annotations"]))
    uri_io.delete(first.uri)
    dvc = [sys.executable, "-m", "dvc"]
    assert stages_run(run([*dvc, "repro", "preprocess"], project)) == set()
    refresh = run([*dvc, "repro", "--force", "--single-item", "annotations-listing"], project)
    assert stages_run(refresh) == {"annotations-listing"}
    assert "preprocess" in stages_run(run([*dvc, "repro", "preprocess"], project))


def test_experiment_metrics_and_plots(project: Path) -> None:
    run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=0.005"], project)
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project)
    assert "metrics.json" in shown
    run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots"], project)
    assert (project / "plots" / "index.html").exists()


def test_push_and_pull_through_the_s3_remote(project: Path) -> None:
    run([sys.executable, "-m", "dvc", "push"], project)
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "data" / "annotations.json").unlink()
    shutil.rmtree(project / "out" / "train")
    run([sys.executable, "-m", "dvc", "pull"], project)
    assert (project / "data" / "annotations.json").exists()
    assert (project / "out" / "train" / "model.ckpt").exists()


def bash(line: str, folder: Path) -> str:
    """``line`` run by bash in ``folder``, with the venv's commands first on the PATH (as after
    ``source .venv/bin/activate``)."""
    return run(["bash", "-c", line], folder)


def test_the_readmes_dvc_params_and_compile_commands_run_as_printed(
    project: Path, tmp_path: Path
) -> None:
    """The commands as the README (and the quickstart's closing hint) print them, copied as text
    and run in the project: DVC's, the params commands and ``python pipeline.py compile``."""
    hint = re.search(
        r'print\("see (.*)"\)', (REPO / "components/commands/quickstart.py").read_text()
    )
    assert hint, "the quickstart prints where to look next"
    hinted = set(re.findall(r"`([^`]+)`", hint[1]))
    dvc_lines = [readme_line("dvc repro  "), readme_line("dvc metrics show")]
    assert hinted <= {part.strip() for line in dvc_lines for part in line.split("&&")}
    for line in dvc_lines:
        bash(line, project)
    assert "map_50" in bash("dvc metrics show", project)

    params_commands = inline_commands("solarpipe params")
    assert {"solarpipe params", "solarpipe params --profile gpu"} <= set(params_commands)
    for command in params_commands:
        assert bash(command, project).strip()
    assert "fasterrcnn_resnet50_fpn_v2" in bash("solarpipe params --profile gpu", project)

    for name in ("pipeline.py", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    [compile_command] = inline_commands("python pipeline.py compile")
    bash(compile_command, tmp_path)
    assert "deploymentSpec" in (tmp_path / "pipeline.yaml").read_text()
