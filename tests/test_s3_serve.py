"""``solarpipe s3 serve`` as a new user runs it: the params' buckets exist, stages run at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from components.s3server import free_port

REPO = Path(__file__).resolve().parents[1]
EXPORTED = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def clean_environment() -> dict[str, str]:
    """This process's environment without the S3 settings of the tests' own server."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}


@contextmanager
def serving(folder: Path, *args: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Run `solarpipe s3 serve` in ``folder``; yield its first lines and the exports it prints."""
    command = [sys.executable, "-m", "components.cli", "s3", "serve", "--port", str(free_port())]
    server = subprocess.Popen(
        [*command, *args], cwd=folder, env=clean_environment(), stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    try:
        lines: list[str] = []
        while len([line for line in lines if "export " in line]) < len(EXPORTED):
            line = server.stdout.readline()
            assert line, f"s3 serve ended early: {lines}"
            lines.append(line.strip())
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in lines if "export " in line
        )
        yield lines, exports
    finally:
        server.terminate()
        server.wait(timeout=20)


def bucket_names(exports: dict[str, str]) -> set[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        region_name=exports["AWS_DEFAULT_REGION"],
    )
    return {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}


@pytest.mark.timeout(180)
def test_serve_creates_the_default_bucket_and_a_stage_runs_with_its_exports(
    tmp_path: Path,
) -> None:
    """No params.yaml in the folder: the built-in data.bucket; then synth + prepare as typed."""
    with serving(tmp_path) as (lines, exports):
        assert sorted(exports) == sorted(EXPORTED)
        assert "buckets: solarpipe" in lines
        assert bucket_names(exports) == {"solarpipe"}
        env = {**clean_environment(), **exports}
        cli = [sys.executable, "-m", "components.cli"]
        raster = "s3://solarpipe/scenes/synthetic.tif"
        synth = [*cli, "synth", "--out", raster, "--size", "256"]
        subprocess.run(synth, cwd=tmp_path, env=env, check=True, capture_output=True)
        manifest = str(tmp_path / "manifest.json")
        tiles = "s3://solarpipe/tiles"
        prepare = subprocess.run(
            [
                sys.executable,
                "-m",
                "components.prepare",
                "--raster",
                raster,
                "--tiles",
                tiles,
                "--manifest",
                manifest,
                "--set",
                "prepare.tile_size=128",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert prepare.returncode == 0, prepare.stderr
        assert (tmp_path / "manifest.json").exists()


@pytest.mark.timeout(120)
def test_serve_creates_the_buckets_the_params_file_names(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        "data:\n  bucket: scenes-here\n  tiles: s3://tiles-there/tiles\n"
        "  annotations: s3://scenes-here/annotations\n  raster: /local/scene.tif\n"
    )
    with serving(tmp_path, "--bucket", "extra-one") as (lines, exports):
        assert "buckets: scenes-here, tiles-there, extra-one" in lines
        assert bucket_names(exports) == {"scenes-here", "tiles-there", "extra-one"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("params_yaml", "named"),
    [
        ("data:\n  bucket: X\n", "data.bucket: 'X' is not an S3 bucket name"),
        ("data:\n  tiles: s3://a_b/tiles\n", "data.tiles: 'a_b' is not an S3 bucket name"),
        ("data:\n  buckett: solarpipe\n", "data.buckett"),
    ],
)
def test_bad_params_stop_serve_before_it_starts_in_one_line(
    tmp_path: Path, params_yaml: str, named: str
) -> None:
    (tmp_path / "params.yaml").write_text(params_yaml)
    done = subprocess.run(
        [sys.executable, "-m", "components.cli", "s3", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 2
    assert named in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
