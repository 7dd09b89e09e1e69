"""``solarpipe quickstart``: the whole pipeline on the embedded default, in one command.

With no S3 configured it starts the embedded S3 server, synthesizes a scene, prepares tiles,
plays the annotator (Label Studio export objects from the ground truth), runs the rest of the
graph with ``dvc repro`` and prints the results. With ``AWS_ENDPOINT_URL`` set it uses that S3.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from components.commands.embedded import (
    DEFAULT_SCENE_PARTS,
    DEFAULT_SCENE_SIZE,
    configured_or_embedded_s3,
    label_if_unlabelled,
    provide_scene,
    run_command,
    stage_environment,
)
from components.commands.serve_hint import save_sample_tile, serve_commands
from components.core import uri as uri_io
from components.core.errors import SolarpipeError, UsageError
from components.core.logs import get_logger
from components.core.params import Params, load_params

log = get_logger(__name__)
LOCK_FILE = ".solarpipe-quickstart.lock"
QUICKSTART_SCENE_SIZE = DEFAULT_SCENE_SIZE
QUICKSTART_SCENE_PARTS = DEFAULT_SCENE_PARTS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size",
        type=int,
        default=QUICKSTART_SCENE_SIZE,
        help=f"synthetic scene edge in px (default {QUICKSTART_SCENE_SIZE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    parser.add_argument(
        "--parts",
        type=int,
        default=QUICKSTART_SCENE_PARTS,
        help=f"towns per side of the scene, each its own seed (default {QUICKSTART_SCENE_PARTS})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="embedded S3 port (default 9555, or a free one when taken)",
    )
    parser.add_argument("--project", default=".", help="project folder with dvc.yaml (default .)")
    parser.set_defaults(handler=run_quickstart)


def find_project(start: str) -> Path:
    for folder in [Path(start).resolve(), *Path(start).resolve().parents]:
        if (folder / "dvc.yaml").exists() and (folder / "params.yaml").exists():
            return folder
    raise UsageError(f"no dvc.yaml + params.yaml in {start} or above: run from the project folder")


@contextmanager
def single_instance(project: Path) -> Iterator[None]:
    """Refuse a second quickstart on the same project while one runs (no shared corruption)."""
    lock_path = project / LOCK_FILE
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SolarpipeError(
                f"another quickstart is already running in {project} (pid {holder}); "
                "wait for it to finish"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def missing_tiles(manifest_path: Path) -> int:
    """How many tiles the manifest lists that are not on S3 (0 when there is no manifest)."""
    from components.core.manifest import load_manifest

    if not manifest_path.exists():
        return 0
    manifest = load_manifest(str(manifest_path))
    present = {info.uri for info in uri_io.list_objects(manifest.tiles_prefix)}
    return sum(tile.uri not in present for tile in manifest.tiles)


def run_quickstart(args: argparse.Namespace) -> None:
    project = find_project(args.project)
    params = load_params(str(project / "params.yaml"), [])
    started = time.monotonic()
    with single_instance(project), configured_or_embedded_s3(args.port, "quickstart"):
        env = stage_environment()
        run_pipeline(project, params, args, env)
        save_sample_tile(project)
    print_results(project, params, time.monotonic() - started)


def run_pipeline(
    project: Path, params: Params, args: argparse.Namespace, env: dict[str, str]
) -> None:
    from components.s3server import ensure_bucket

    data = params.data
    ensure_bucket(data.bucket)
    if not uri_io.exists(data.raster):
        provide_scene(project, data.raster, args.size, args.seed, "quickstart", args.parts)
    dvc = [sys.executable, "-m", "dvc"]
    run_command([*dvc, "repro", "prepare"], project, env, "quickstart")
    lost = missing_tiles(project / "data" / "manifest.json")
    if lost:
        print(f"quickstart: {lost} tiles listed in the manifest are missing on S3: rebuilding them")
        run_command(
            [*dvc, "repro", "--force", "--single-item", "prepare"], project, env, "quickstart"
        )
    label_if_unlabelled(
        project, "data/manifest.json", data.raster, data.annotations, env, "quickstart"
    )
    # The labels' snapshot is refreshed on purpose (dvc.yaml): preprocess and what follows rerun
    # only when the annotation objects differ from the last run's (the annotator's are the same).
    refresh = [*dvc, "repro", "--force", "--single-item", "annotations-listing"]
    run_command(refresh, project, env, "quickstart")
    run_command([*dvc, "repro"], project, env, "quickstart")


def read_json_or_empty(path: Path) -> dict:
    with suppress(FileNotFoundError, json.JSONDecodeError):
        return json.loads(path.read_text())
    return {}


def print_results(project: Path, params: Params, elapsed_s: float) -> None:
    manifest = read_json_or_empty(project / "data" / "manifest.json")
    annotations = read_json_or_empty(project / "data" / "annotations.json")
    metrics = read_json_or_empty(project / "out" / "evaluate" / "metrics.json")
    images = annotations.get("images", [])
    splits = {
        name: sum(1 for i in images if i["split"] == name) for name in ("train", "val", "test")
    }

    def metric(*names: str) -> str:
        for name in names:
            if isinstance(metrics.get(name), int | float):
                return f"{metrics[name]:.3f}"
        return "n/a"

    rows = [
        ("tiles", str(len(manifest.get("tiles", [])))),
        ("boxes", str(sum(len(i["boxes"]) for i in images))),
        ("train / val / test tiles", f"{splits['train']} / {splits['val']} / {splits['test']}"),
        ("test mAP@0.5", metric("map_50", "test_map_50", "mAP@0.5")),
        ("test mAP@0.5:0.95", metric("map", "test_map", "mAP@0.5:0.95")),
        ("exported model", str(project / "out" / "export")),
        ("detections (GeoJSON)", str(project / "out" / "detect" / "detections.geojson")),
        ("wall time", f"{elapsed_s / 60:.1f} min"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nsolarpipe quickstart results")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("\nserve the model (Ctrl-C stops it), then ask it from another shell:")
    for command in serve_commands(project):
        print(f"  {command}")
    print("see `dvc metrics show`, `dvc plots show`, and out/preview/index.html")
    print(
        "dvc.lock records this run: commit it in your own project (`git add dvc.lock`); "
        "a second quickstart reuses what did not change"
    )
