"""The quickstart: twice on a tiny project (reuse, DVC and git state after it), its guards
(port taken, second instance) and the no-S3 error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.commands.embedded import configured_or_embedded_s3
from components.commands.quickstart import single_instance
from components.core.errors import SolarpipeError
from tests.dvc_project import DVC, copy_project, run, stages_run

REPO = Path(__file__).resolve().parents[1]


def test_taken_port_makes_quickstart_pick_another(monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with configured_or_embedded_s3(taken, "quickstart") as endpoint:
            assert not endpoint.endswith(f":{taken}")
            from components.core import uri as uri_io
            from components.s3server import ensure_bucket

            ensure_bucket("quick")
            uri_io.write_bytes("s3://quick/x", b"1")
            assert uri_io.read_bytes("s3://quick/x") == b"1"


def test_second_quickstart_on_the_same_project_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from components.commands.quickstart import single_instance
            with single_instance(Path({str(tmp_path)!r})):
                print("locked", flush=True)
                time.sleep(60)
        """),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(SolarpipeError, match=f"already running .*pid {holder.pid}"),
            single_instance(tmp_path),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with single_instance(tmp_path):  # free again once the first one ended
        pass


def test_stage_without_any_s3_configured_says_how_to_start_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.prepare",
            "--raster",
            "s3://solarpipe/scenes/x.tif",
            "--tiles",
            "s3://solarpipe/tiles",
            "--manifest",
            str(tmp_path / "m.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert "solarpipe s3 serve" in completed.stderr and "solarpipe quickstart" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_second_quickstart_trains_nothing_and_leaves_dvc_and_git_as_dvc_users_expect(
    tmp_path: Path,
) -> None:
    """Two quickstarts on a copy of the project (tiny params, 512-px scene), each with its own
    embedded S3, as a user runs them: the second finds the bucket empty, uploads the scene kept
    by the first, rebuilds the tiles and annotations, and reruns no stage after them."""
    copy_project(tmp_path)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    quickstart = [sys.executable, "-m", "components.cli", "quickstart", "--project", str(tmp_path)]
    first = run([*quickstart, "--size", "512"], tmp_path, env)
    assert "quickstart: synthesized 512x512 px scene" in first
    assert {"prepare", "preprocess", "train", "export", "evaluate", "detect"} <= stages_run(first)
    second = run([*quickstart, "--size", "512"], tmp_path, env)
    assert "quickstart: using the 512x512 px scene kept in" in second
    assert "tiles listed in the manifest are missing on S3: rebuilding them" in second
    assert stages_run(second) == {"prepare", "annotations-listing"}
    assert "test mAP@0.5" in second
    status = run([*DVC, "status"], tmp_path, env)
    assert status.strip() == "Data and pipelines are up to date."
    assert run(["git", "status", "--porcelain"], tmp_path, env).splitlines() == ["?? dvc.lock"]
