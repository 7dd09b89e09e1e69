"""Kubeflow's launcher played by the tests: fill a compiled IR's placeholders and run the commands.

No KFP backend can run here. These helpers render a task's inputs as the launcher does (strings as
they are, everything else as JSON), point its output parameters at files, and run its command for
real; the commands themselves (the params task, the stages) are the project's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON_BIN = Path(sys.executable).parent
PLACEHOLDER = re.compile(
    r"\{\{\$\.(?:inputs|outputs)\.parameters\['([^']+)'\](?:\.output_file)?\}\}"
)


def container(spec: dict[str, Any], task: str) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def resolve(argument: str, values: dict[str, str]) -> str:
    if argument.startswith('{"Concat"'):
        return "".join(resolve(part, values) for part in json.loads(argument)["Concat"])
    return PLACEHOLDER.sub(lambda match: values[match[1]], argument)


def task_argv(spec: dict[str, Any], task: str, values: dict[str, str]) -> list[str]:
    """The task's command line with its placeholders filled from ``values``."""
    spec_container = container(spec, task)
    return spec_container["command"] + [resolve(a, values) for a in spec_container["args"]]


def launch(
    spec: dict[str, Any], task: str, values: dict[str, str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the task's filled-in command as in its pod."""
    argv = task_argv(spec, task, values)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def rendered(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def task_environment(run_id: str) -> dict[str, str]:
    """The pod's environment: the venv's commands on PATH and the run id from the pod label."""
    return {**os.environ, "PATH": f"{PYTHON_BIN}:{os.environ['PATH']}", "KFP_RUN_ID": run_id}


def run_params_task(
    spec: dict[str, Any], arguments: dict[str, Any], folder: Path, env: dict[str, str]
) -> dict[str, str]:
    """Run the compiled params task with the run's ``arguments`` (others: the defaults); its
    output parameters by name."""
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    values = {name: rendered(arguments.get(name, inputs[name]["defaultValue"])) for name in inputs}
    outputs = spec["components"]["comp-params"]["outputDefinitions"]["parameters"]
    folder.mkdir(parents=True, exist_ok=True)
    values |= {name: str(folder / name) for name in outputs}
    done = launch(spec, "params", values, env)
    assert done.returncode == 0, done.stderr
    return {name: (folder / name).read_text() for name in outputs}
