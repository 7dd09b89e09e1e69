"""Benchmark ``solarpipe labelstudio predict``: tasks per second into a real Label Studio.

In one run, ``--tasks`` tiles of a synthetic scene (prepare) on the embedded S3, one Label
Studio project over them (setup; the server from ``.venv-labelstudio``, started as the tests
start it) and one scripted SSDlite (``--checkpoint``, or randomly initialised: speed does not
depend on the weights):
  (a) ours: ``predict`` as shipped: pages of ``labelstudio.page_size`` tasks, tiles fetched a
      page ahead on ``labelstudio.workers`` threads, inference in batches, each page uploaded
      in one request while the next one is inferred;
  (b) naive: one task after the other: GET the tile, run the model, POST its prediction;
  (c) bound: the model alone over the same tiles, decoded in memory, in the same batches.
Each of (a) and (b) uploads under its own run id, so each predicts every task.
Usage: nice python bench/labelstudio_predict.py [--tasks 500] [--page-size 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from components.cli import main as solarpipe
from components.core import uri as uri_io
from components.core.manifest import load_manifest
from components.core.params import load_params
from components.labelstudio.predict import detect, predict_to_labelstudio
from components.labelstudio.predictions import (
    LabelTarget,
    export_identity,
    model_version,
    prediction_payload,
)
from components.labelstudio.priority import tile_priority
from components.labelstudio.task_pages import TaskRef
from components.ml.checkpoint import load_detector_checkpoint
from components.ml.dataset import decode_tile
from components.ml.detector import build_detector
from components.ml.scripted import MODEL_FILE, ServedDetector, load_scripted_model, script_detector
from components.s3server import ensure_bucket, start_embedded_s3
from components.synth.geotiff import write_scene

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the server helper
from tests.labelstudio_server import running_labelstudio

BUCKET = "bench-ls-predict"
THRESHOLD = 0.5  # a random model scores around 0.5: a few boxes per tile, as a trained one


def write_model(folder: Path, checkpoint: str | None) -> Path:
    if checkpoint:
        detector, info = load_detector_checkpoint(checkpoint)
        arch, size, classes = info.spec.arch, info.spec.image_size, info.spec.classes
    else:
        arch, size, classes = "ssdlite320_mobilenet_v3_large", 256, ["solar_panel"]
        detector = build_detector(arch, len(classes) + 1, size).eval()
    folder.mkdir(parents=True, exist_ok=True)
    script_detector(ServedDetector(detector, arch, size, classes, THRESHOLD)).save(
        str(folder / MODEL_FILE)
    )
    return folder


def scene_edge(tasks: int) -> int:
    """The scene edge (px) whose 256-px tiles number at least ``tasks``."""
    edge = 256
    while (edge // 256) ** 2 < tasks:
        edge += 256
    return edge


def naive(client, tasks: list, model, version: str, data_key: str) -> float:
    """One task after the other: GET, infer, POST; seconds."""
    target = LabelTarget("label", "image", data_key, ("solar_panel",))
    started = time.perf_counter()
    for task in tasks:
        image = decode_tile(uri_io.read_bytes(task.data[data_key]), task.data[data_key])
        [found] = detect(model, [(TaskRef(task.id, task.data[data_key], frozenset()), image)], 0.05)
        priority = tile_priority(found.scores, "margin", THRESHOLD)
        payload = prediction_payload(found, target, THRESHOLD, priority, version)
        client.predictions.create(
            task=task.id, result=payload["result"], score=payload["score"], model_version=version
        )
    return time.perf_counter() - started


def bound(model, images: list[torch.Tensor], batch_size: int) -> float:
    started = time.perf_counter()
    refs = [TaskRef(i, "", frozenset()) for i in range(len(images))]
    for start in range(0, len(images), batch_size):
        batch = list(
            zip(refs[start : start + batch_size], images[start : start + batch_size], strict=True)
        )
        detect(model, batch, 0.05)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--checkpoint", default=None, help="a train-stage model.ckpt")
    args = parser.parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "60")
    torch.set_num_threads(os.cpu_count() or 1)
    s3 = start_embedded_s3()
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(variable, None)
    os.environ.update(s3.environment())
    ensure_bucket(BUCKET)
    with tempfile.TemporaryDirectory() as tmp, running_labelstudio() as server:
        os.environ.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.token)
        model_dir = write_model(Path(tmp) / "export", args.checkpoint)
        scene = write_scene(f"s3://{BUCKET}/scene.tif", size=scene_edge(args.tasks), seed=0)
        manifest_uri = f"s3://{BUCKET}/manifest.json"
        from components.prepare.run import prepare

        prepare(
            scene.raster_uri, f"s3://{BUCKET}/tiles", manifest_uri, load_params(None, []).prepare
        )
        manifest = load_manifest(manifest_uri)
        for tile in manifest.tiles[args.tasks :]:
            uri_io.delete(tile.uri)
        tiles = f"s3://{BUCKET}/tiles"
        if solarpipe(
            ["labelstudio", "setup", "--tiles", tiles, "--annotations", f"s3://{BUCKET}/ann"]
        ):
            raise RuntimeError("setup failed")
        params = load_params(
            None,
            [f"labelstudio.page_size={args.page_size}", f"labelstudio.score_threshold={THRESHOLD}"],
        ).labelstudio
        started = time.perf_counter()
        summary = predict_to_labelstudio(str(model_dir), str(Path(tmp) / "out"), "ours", params)
        ours = time.perf_counter() - started
        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=server.url, api_key=server.token)
        [project] = list(client.projects.list())
        tasks = list(client.tasks.list(project=project.id, resolve_uri=False))
        model = load_scripted_model(str(model_dir))
        version = model_version(export_identity(str(model_dir)), "naive")
        naive_s = naive(client, tasks, model, version, "image")
        images = [decode_tile(uri_io.read_bytes(t.data["image"]), "") for t in tasks]
        bound_s = bound(model, images, params.batch_size)
    s3.stop()
    count = summary.record.tasks_predicted
    print(
        f"\nlabelstudio predict: {count} tasks (256-px tiles), page {args.page_size}, "
        f"batch {params.batch_size}, {params.workers} fetch threads, {os.cpu_count()} cores "
        "(shared machine); Label Studio 1.23 (SQLite) and S3 (moto) on the same cores"
    )
    print(f"  {'':<44}{'tasks/s':>9}{'ratio':>8}")
    for name, seconds in (
        ("ours: pages, fetch ahead, upload while inferring", ours),
        ("naive: GET, infer, POST, one task at a time", naive_s),
        ("bound: the model alone, tiles in memory", bound_s),
    ):
        print(f"  {name:<44}{count / seconds:>9.1f}{naive_s / seconds:>8.2f}")
    print(f"  ours / bound: {bound_s / ours:.2f} of the model's own speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
