"""The embedded default, shared by ``solarpipe quickstart`` and ``pipeline.py run-local``: an S3
server in memory (unless one is configured), a synthetic scene kept on disk, and its labels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.core import uri as uri_io
from components.core.errors import SolarpipeError

# Scene edge in px: 256 tiles of 256 px, ~180 for training. Data, not steps, limited the model
# on 3072 px (101 training tiles): test mAP@0.5 0.70 after 6 CPU minutes vs 0.84 on 4096 px.
DEFAULT_SCENE_SIZE = 4096
# Towns per side of the default scene. One town has one street-grid angle and one sun, so a
# model trained on it learns those and misses panels in other towns; see the README's figures.
DEFAULT_SCENE_PARTS = 2
SCENE_FOLDER = Path("data") / "quickstart-scenes"


@contextmanager
def configured_or_embedded_s3(port: int | None, who: str) -> Iterator[str]:
    """The configured S3 endpoint, or an embedded server started for the block's duration (its
    variables exported to this process, so the stages and containers started here find it)."""
    from components.core.s3 import endpoint_url
    from components.s3server import DEFAULT_PORT, port_is_free, start_embedded_s3

    configured = endpoint_url()
    if configured:
        print(f"{who}: using the S3 endpoint from AWS_ENDPOINT_URL: {configured}")
        yield configured
        return
    wanted = port or DEFAULT_PORT
    if not port_is_free(wanted):
        print(f"{who}: port {wanted} is taken, picking a free one")
        wanted = None
    server = start_embedded_s3(wanted)
    os.environ.update(server.environment())
    print(f"{who}: embedded S3 at {server.endpoint} (in memory, gone when this ends)")
    try:
        yield server.endpoint
    finally:
        server.stop()


def run_command(command: list[str], project: Path, env: dict[str, str], who: str) -> None:
    print(f"{who}: $ {' '.join(command)}", flush=True)
    completed = subprocess.run(command, cwd=project, env=env)
    if completed.returncode != 0:
        raise SolarpipeError(
            f"`{' '.join(command)}` failed with exit status {completed.returncode}"
        )


def stage_environment() -> dict[str, str]:
    """The environment for DVC and the stages: this venv first on PATH, the S3 variables."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def provide_scene(
    project: Path,
    raster_uri: str,
    size: int,
    seed: int,
    who: str,
    parts: int = DEFAULT_SCENE_PARTS,
) -> None:
    """Put the synthetic scene and its truth at ``raster_uri``: synthesized once per size, seed
    and town count into the project's ``data/`` (the same bytes each time), uploaded from there.

    The embedded S3 forgets the scene when it stops; keeping it spares a second quickstart
    the synthesis (21 CPU seconds of a 4096-px scene, against 1 s to upload its 33 MB).
    """
    from components.synth.geotiff import truth_uri_for, write_scene

    towns = f"-{parts}x{parts}towns" if parts > 1 else ""
    kept = project / SCENE_FOLDER / f"synthetic-{size}px-seed{seed}{towns}.tif"
    kept_truth = Path(truth_uri_for(str(kept)))
    if kept.exists() and kept_truth.exists():
        print(f"{who}: using the {size}x{size} px scene kept in {kept}")
    else:
        info = write_scene(str(kept), size=size, seed=seed, parts=parts)
        print(f"{who}: synthesized {size}x{size} px scene with {info.panel_count} panels")
    uri_io.upload_file(kept, raster_uri)
    uri_io.upload_file(kept_truth, truth_uri_for(raster_uri))
    print(f"{who}: scene at {raster_uri}, its ground truth at {truth_uri_for(raster_uri)}")


def label_if_unlabelled(
    project: Path, manifest: str, raster_uri: str, annotations: str, env: dict[str, str], who: str
) -> None:
    """Play the annotator (Label Studio's export objects from the scene's truth) unless someone
    labelled already."""
    from components.synth.geotiff import truth_uri_for

    if any(True for _ in uri_io.list_objects(annotations)):
        return
    command = [
        sys.executable, "-m", "components.cli", "labelstudio", "annotate-from-truth",
        "--manifest", manifest, "--truth", truth_uri_for(raster_uri), "--annotations", annotations,
    ]  # fmt: skip
    run_command(command, project, env, who)
