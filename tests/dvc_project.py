"""A copy of the project (code, dvc.yaml, tiny params) in its own git + DVC repository, and the
helpers that run commands in it: shared by the DVC graph and the quickstart tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

TINY_PARAMS = {
    "prepare": {"tile_size": 128},
    "preprocess": {"max_empty_fraction": None, "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preview": {"samples": 2},
    "train": {
        "epochs": 1,
        "image_size": 128,
        "batch_size": 4,
        "num_workers": 0,
        "limit_train_batches": 2,
    },
    "detect": {"window": 256, "overlap": 32},
}


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run(command: list[str], project: Path, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["BENTOML_DO_NOT_TRACK"] = "true"
    completed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout + completed.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(root: Path, data: dict[str, str] | None = None) -> dict:
    """Code, dvc.yaml, .gitignore and tiny params (``data`` replaces the data section) in
    ``root``, committed in a new git repository with DVC initialised; returns the params."""
    shutil.copytree(
        REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if data is not None:
        params["data"] = data
    merge(params, TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "ci@example.com"], root)
    run(["git", "config", "user.name", "ci"], root)
    run([*DVC, "init", "-q"], root)
    run(
        [*DVC, "remote", "add", "-d", "s3cache", f"s3://{params['data']['bucket']}/dvc-cache"], root
    )
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny project"], root)
    return params
