"""The serve commands the quickstart prints and the README shows work when pasted as is.

A project folder is laid out as the quickstart leaves it (``out/export`` with the exported model,
``out/sample-tile.png``, ``.venv``), and each set of printed lines runs verbatim in bash from
that folder: the server line in the background, the ``curl`` line once the server is ready.
They name port 3000, so they run in a private network namespace (``unshare -rn``) where that
port is free whatever else runs on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.commands.quickstart import print_results
from components.core.params import load_params
from components.s3server import port_is_free
from tests.detector_fixture import cached_export, panel_tile

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BARE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The pasted lines run verbatim; the server line runs in the background as its own process
# group (set -m), so that stopping it reaches every process it started.
SCRIPT = """
set -m
ip link set lo up 2>/dev/null
{setup}
{{
{serve}
}} > serve.log 2>&1 &
server=$!
trap 'kill -KILL -- -$server 2> /dev/null' EXIT
for attempt in $(seq 600); do
  curl -sf {base}/readyz > /dev/null && break
  kill -0 $server 2> /dev/null || {{ echo "the server exited:" >&2; cat serve.log >&2; exit 3; }}
  sleep 0.5
done
{{
{ask}
}} > answer.json
status=$?
kill -TERM -- -$server
for attempt in $(seq 120); do kill -0 -- -$server 2> /dev/null || break; sleep 0.5; done
exit $status
"""


@pytest.fixture(scope="module")
def isolation() -> list[str]:
    """The command prefix that gives the script its own loopback (empty when not permitted)."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["unshare", "-rn"]
    if not port_is_free(3000):
        pytest.skip("no private network namespace here (unshare -rn) and port 3000 is taken")
    return []


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder as the quickstart leaves it."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(cached_export(tmp_path_factory.getbasetemp()), root / "out" / "export")
    (root / ".venv").symlink_to(REPO / ".venv")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    pixels, _ = panel_tile(np.random.default_rng(7), 128)
    Image.fromarray(pixels).save(root / "out" / "sample-tile.png")
    return root


def run_pasted(isolation: list[str], project: Path, setup: list[str], serve: str, ask: str):
    """Run the lines verbatim; the JSON the ``ask`` line printed."""
    base = re.search(r"http://127\.0\.0\.1:\d+", ask).group(0)
    script = SCRIPT.format(setup="\n".join(setup), serve=serve, ask=ask, base=base)
    environment = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "BENTOML_HOME")}
    environment["PATH"] = BARE_PATH  # no venv active, as in a fresh shell
    done = subprocess.run(
        [*isolation, "bash", "-c", script],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((project / "answer.json").read_text())


def assert_detections(answer: object) -> None:
    assert isinstance(answer, list) and len(answer) == 1
    assert set(answer[0]) == {"boxes", "scores", "labels"}
    assert answer[0]["boxes"], "the fixture model finds the tile's panels"


def test_serve_commands_the_quickstart_prints_work_as_pasted(isolation, project, capsys) -> None:
    print_results(project, load_params(str(project / "params.yaml"), []), 60.0)
    printed = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("serve the model"))
    serve, ask = (line.strip() for line in printed[start + 1 : start + 3])
    assert " serve --model out/export --port 3000" in serve
    assert ask.startswith("curl -F images=@out/sample-tile.png ")

    assert_detections(run_pasted(isolation, project, [], serve, ask))


def readme_blocks() -> list[list[str]]:
    section = README.split("## Serving the model", 1)[1].split("\n## ", 1)[0]
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_serve_commands_work_as_pasted(isolation, project) -> None:
    first = readme_blocks()[0]
    serve = next(line for line in first if line.startswith("solarpipe serve"))
    ask = next(line for line in first if line.startswith("curl"))

    assert_detections(run_pasted(isolation, project, first[: first.index(serve)], serve, ask))


def test_readme_bentoml_commands_work_as_pasted(isolation, project) -> None:
    """BentoML's own commands, in the shell the first block activated the venv in."""
    first = readme_blocks()[0]
    activate = [line for line in first if line.startswith("source ")]
    ask = next(line for line in first if line.startswith("curl"))
    bentoml_block = next(block for block in readme_blocks() if "bentoml serve" in block[-1])

    answer = run_pasted(isolation, project, activate + bentoml_block[:-1], bentoml_block[-1], ask)

    assert_detections(answer)
