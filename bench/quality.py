"""Benchmark model quality: the default configuration trained as the quickstart runs it, once
per seed, and scored on its own test split and on whole scenes it never saw.

The embedded S3 server runs in its own process (``solarpipe s3 serve``). For each seed (the
scene's and ``train.seed``): synth (``--size``, ``--parts``) → prepare → annotate-from-truth →
preprocess → train → export → evaluate, every stage through its contract
(``python -m components.<stage>``) with the repository's ``params.yaml`` plus ``--set``
overrides; tiles, annotations and outputs on S3, so train streams its tiles from S3 as on
Kubeflow. Then ``bench/detect_scene.py``'s scoring runs the exported model over unseen scenes
(``--scenes``, at 0.1 m and resampled to 0.2 m). Printed per seed and as mean, sample standard
deviation and worst over the seeds: train wall time, epochs and images/s, best val mAP@0.5,
test mAP@0.5 of the exported model (evaluate) and of the checkpoint (the Lightning module on
the same split: the two agree unless export changed the model), and whole-scene recall and
precision at IoU 0.5 and 0.3 (at 0.2 m: recall at IoU 0.5); against the bar test mAP@0.5 >= 0.9.
Usage: nice python bench/quality.py [--seeds 0,1,2] [--size 4096] [--parts 2]
       [--scenes 1000,1001,1002,1003] [--set train.max_minutes=7.5 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

from detect_scene import score_model
from stages import run_stage  # bench/stages.py (this script's folder)

from components.commands.quickstart import QUICKSTART_SCENE_PARTS, QUICKSTART_SCENE_SIZE
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.params import load_params
from components.s3server import start_embedded_s3_process

stage = partial(run_stage, bench="quality")

BUCKET = "bench-quality"
BAR = 0.9
SCENE_SIZE = 2048
COLUMNS = (
    ("train_s", "train s", "{:.0f}"),
    ("epochs", "epochs", "{:.0f}"),
    ("images_per_s", "img/s", "{:.1f}"),
    ("best_val", "val mAP50", "{:.3f}"),
    ("exported", "test mAP50", "{:.3f}"),
    ("checkpoint", "ckpt mAP50", "{:.3f}"),
    ("recall", "scene R", "{:.3f}"),
    ("precision", "scene P", "{:.3f}"),
    ("recall_iou03", "R IoU 0.3", "{:.3f}"),
    ("precision_iou03", "P IoU 0.3", "{:.3f}"),
    ("recall_02", "R 0.2 m", "{:.3f}"),
)


def checkpoint_test_map(checkpoint_uri: str, annotations_uri: str, overrides: list[str]) -> float:
    """Test mAP@0.5 of the checkpoint itself, with the training code's own evaluation."""
    from lightning.pytorch import Trainer

    from components.ml.datamodule import TileDataModule
    from components.ml.module import DetectorModule

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model.ckpt"
        uri_io.download_file(checkpoint_uri, local)
        module = DetectorModule.load_from_checkpoint(local, map_location="cpu", pretrained="none")
    datamodule = TileDataModule(
        load_annotations(annotations_uri), load_params(None, overrides).train
    )
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (result,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return float(result["test_map_50"])


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """The whole pipeline for one seed; its figures."""
    from components.labelstudio.annotate import annotate_from_truth
    from components.synth.geotiff import write_scene

    params = load_params(None, args.overrides)
    overrides = [*args.overrides, f"train.seed={seed}"]
    root = f"s3://{BUCKET}/seed-{seed}"
    manifest, labels, annotations = (f"{root}/{n}" for n in ("manifest.json", "ls", "ann.json"))
    train_out, export_out, evaluate_out = (f"{root}/{s}" for s in ("train", "export", "evaluate"))
    scene = write_scene(f"{root}/scene.tif", size=args.size, seed=seed, parts=args.parts)
    stage("prepare", "--raster", scene.raster_uri, "--tiles", f"{root}/tiles",
          "--manifest", manifest, overrides=overrides)  # fmt: skip
    annotate_from_truth(
        manifest, scene.truth_uri, labels, params.labelstudio.export_format,
        params.labelstudio.labels[0], params.preprocess.min_box_size, 16,
    )  # fmt: skip
    stage("preprocess", "--annotations", labels, "--manifest", manifest, "--out", annotations,
          overrides=overrides)  # fmt: skip
    train_s = stage("train", "--annotations", annotations, "--out", train_out, overrides=overrides)
    figures = {"train_s": train_s}
    train_metrics = uri_io.read_json(f"{train_out}/metrics.json")
    figures.update(
        epochs=train_metrics["epochs"],
        images_per_s=train_metrics.get("train_images_per_second", float("nan")),
        best_val=train_metrics.get("best_val_map_50", float("nan")),
        checkpoint=checkpoint_test_map(f"{train_out}/model.ckpt", annotations, overrides),
    )
    stage("export", "--checkpoint", f"{train_out}/model.ckpt", "--out", export_out,
          overrides=overrides)  # fmt: skip
    stage("evaluate", "--annotations", annotations, "--model", export_out,
          "--out", evaluate_out, overrides=overrides)  # fmt: skip
    figures["exported"] = float(uri_io.read_json(f"{evaluate_out}/metrics.json")["map_50"])
    if args.scenes:
        totals, _ = score_model(
            export_out, args.scenes, SCENE_SIZE, [0.1, 0.2], work, args.detect_overrides
        )
        _, _, figures["recall"], figures["precision"], _ = totals[0.1].figures(0.5)
        _, _, figures["recall_iou03"], figures["precision_iou03"], _ = totals[0.1].figures(0.3)
        figures["recall_02"] = totals[0.2].figures(0.5)[2]
    splits = load_annotations(annotations)
    print(
        f"quality: seed {seed}: {scene.panel_count} panels, tiles train/val/test "
        f"{len(splits.split('train'))}/{len(splits.split('val'))}/{len(splits.split('test'))}",
        flush=True,
    )
    return figures


def print_table(per_seed: dict[int, dict[str, float]], summary: bool = True) -> None:
    columns = [c for c in COLUMNS if all(c[0] in figures for figures in per_seed.values())]
    print("".join(f"{title:>12}" for _, title, _ in [("", "seed", ""), *columns]))
    for seed, figures in per_seed.items():
        cells = [fmt.format(figures[key]) for key, _, fmt in columns]
        print(f"{seed:>12}" + "".join(f"{cell:>12}" for cell in cells), flush=True)
    if not summary:
        return
    rows = {"mean": statistics.mean, "std": statistics.stdev, "worst": None}
    for name, function in rows.items():
        cells = []
        for key, _, fmt in columns:
            values = [figures[key] for figures in per_seed.values()]
            if function is None:
                value = max(values) if key in ("train_s",) else min(values)
            else:
                value = function(values) if len(values) > 1 or name == "mean" else float("nan")
            cells.append(fmt.format(value))
        print(f"{name:>12}" + "".join(f"{cell:>12}" for cell in cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="scene and train seeds")
    parser.add_argument(
        "--size", type=int, default=QUICKSTART_SCENE_SIZE, help="scene edge in px (quickstart's)"
    )
    parser.add_argument(
        "--parts", type=int, default=QUICKSTART_SCENE_PARTS, help="towns per side (quickstart's)"
    )
    parser.add_argument(
        "--scenes", default="1000,1001,1002,1003", help="unseen scene seeds; empty = skip"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    parser.add_argument(
        "--detect-set", dest="detect_overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    args = parser.parse_args()
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    args.scenes = [int(seed) for seed in args.scenes.split(",") if seed.strip()]
    return args


def main() -> int:
    args = parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "30")
    params = load_params(None, args.overrides)
    server = start_embedded_s3_process((BUCKET,))
    per_seed: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
            for seed in args.seeds:
                per_seed[seed] = run_seed(seed, args, Path(work))
                print_table({seed: per_seed[seed]}, summary=False)
    finally:
        server.terminate()
        server.wait(timeout=30)
    train = params.train
    print(
        f"\nsynthetic scenes {args.size} px ({args.parts}x{args.parts} towns), seeds "
        f"{args.seeds}; {train.arch}, image {train.image_size} px, batch {train.batch_size}, "
        f"{train.optimizer} lr {train.lr:g}, budget {train.max_minutes} min / {train.epochs} "
        f"epochs, {os.cpu_count()} cores; unseen scenes {args.scenes} ({SCENE_SIZE} px)"
    )
    print_table(per_seed)
    worst = min(figures["exported"] for figures in per_seed.values())
    mean = statistics.mean(figures["exported"] for figures in per_seed.values())
    verdict = "meets" if mean >= BAR else "misses"
    print(f"test mAP@0.5 mean {mean:.3f} (worst {worst:.3f}) {verdict} the bar {BAR}")
    return 0 if mean >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
