"""Benchmark model quality: the default configuration trained on the synthetic scene, as the
quickstart runs it, and the test mAP@0.5 of the exported model against the bar.

The embedded S3 server runs in its own process (``solarpipe s3 serve``). In one run:
synth (``--size``, ``--seed``) → prepare → annotate-from-truth → preprocess → train → export →
evaluate, every stage through its contract (``python -m components.<stage>``) with the
repository's ``params.yaml`` plus ``--set`` overrides; tiles, annotations and every output on
S3, so train streams its tiles from S3 as on Kubeflow. Printed: the split sizes, the train wall
time and epochs, the best val mAP@0.5, the test mAP@0.5 of the exported TorchScript model
(evaluate) and of the checkpoint (the Lightning module on the same test split: the two agree
unless export changed the model), against the bar of 0.8 (aim 0.9).
Usage: nice python bench/quality.py [--size 4096] [--seed 0] [--set train.max_minutes=6 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

from stages import run_stage  # bench/stages.py (this script's folder)

from components.commands.quickstart import QUICKSTART_SCENE_SIZE
from components.core import uri as uri_io
from components.core.annotations import load_annotations
from components.core.params import load_params
from components.s3server import start_embedded_s3_process

stage = partial(run_stage, bench="quality")

BUCKET = "bench-quality"
BAR, AIM = 0.8, 0.9


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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=QUICKSTART_SCENE_SIZE, help="scene edge in px (quickstart's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    args = parser.parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "30")
    params = load_params(None, args.overrides)
    root = f"s3://{BUCKET}"
    manifest, labels, annotations = (
        f"{root}/manifest.json",
        f"{root}/ls",
        f"{root}/annotations.json",
    )
    train_out, export_out, evaluate_out = (
        f"{root}/runs/{s}" for s in ("train", "export", "evaluate")
    )
    server = start_embedded_s3_process((BUCKET,))
    figures: dict[str, float | str] = {}
    try:
        from components.labelstudio.annotate import annotate_from_truth
        from components.synth.geotiff import write_scene

        scene = write_scene(f"{root}/scenes/synthetic.tif", size=args.size, seed=args.seed)
        stage("prepare", "--raster", scene.raster_uri, "--tiles", f"{root}/tiles",
              "--manifest", manifest, overrides=args.overrides)  # fmt: skip
        annotate_from_truth(
            manifest, scene.truth_uri, labels, params.labelstudio.export_format,
            params.labelstudio.labels[0], params.preprocess.min_box_size, 16,
        )  # fmt: skip
        stage("preprocess", "--annotations", labels, "--manifest", manifest, "--out", annotations,
              overrides=args.overrides)  # fmt: skip
        figures["train_s"] = stage(
            "train", "--annotations", annotations, "--out", train_out, overrides=args.overrides
        )
        train_metrics = uri_io.read_json(f"{train_out}/metrics.json")
        figures["checkpoint"] = checkpoint_test_map(
            f"{train_out}/model.ckpt", annotations, args.overrides
        )
        try:
            stage("export", "--checkpoint", f"{train_out}/model.ckpt", "--out", export_out,
                  overrides=args.overrides)  # fmt: skip
            stage("evaluate", "--annotations", annotations, "--model", export_out,
                  "--out", evaluate_out, overrides=args.overrides)  # fmt: skip
            figures["exported"] = float(uri_io.read_json(f"{evaluate_out}/metrics.json")["map_50"])
        except RuntimeError as exc:
            figures["exported"] = f"n/a ({exc})"
        split_sizes = {
            split: len(load_annotations(annotations).split(split))
            for split in ("train", "val", "test")
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    train = params.train
    print(
        f"synthetic scene {args.size} px (seed {args.seed}, {scene.panel_count} panels); tiles "
        f"train/val/test {split_sizes['train']}/{split_sizes['val']}/{split_sizes['test']}; "
        f"{train.arch}, pretrained={train.pretrained}, image {train.image_size} px, batch "
        f"{train.batch_size}, {train.optimizer} lr {train.lr:g}, {os.cpu_count()} cores"
    )
    print(
        f"train: {figures['train_s']:.0f} s wall (stage), {train_metrics['epochs']} epochs, "
        f"{train_metrics['train_seconds']:.0f} s fitting, "
        f"{train_metrics.get('train_images_per_second', 0):.1f} images/s; "
        f"best val mAP@0.5 {train_metrics.get('best_val_map_50', float('nan')):.3f}"
    )
    exported = figures["exported"]
    shown = f"{exported:.3f}" if isinstance(exported, float) else exported
    print(f"{'test mAP@0.5, exported model (evaluate)':<44}{shown:>10}")
    print(f"{'test mAP@0.5, checkpoint (Lightning module)':<44}{figures['checkpoint']:>10.3f}")
    reached = exported if isinstance(exported, float) else figures["checkpoint"]
    verdict = "meets" if reached >= BAR else "misses"
    print(f"{verdict} the bar {BAR} (aim {AIM}): {reached:.3f} / {BAR} = {reached / BAR:.2f}")
    return 0 if reached >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
