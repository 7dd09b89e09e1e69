"""Benchmark the labeling loop: what pre-annotations and uncertain-tiles-first save a person.

The oracle annotator is a synthetic scene's ground truth. In one run, with local files:
synth → prepare → the tiles split (seeded) into a fixed test set, a small val set (best
checkpoint) and a pool; a first batch of the pool is labelled from scratch and a model trained
on it (the train and export stages, epoch-bounded); the model runs over the rest of the pool
with the code of ``solarpipe labelstudio predict`` (its inference, payload threshold and
priority rule; no server, so Label Studio's time is not in the figures).

1. Effort to label the rest of the pool. A simulated annotator turns each tile's pre-annotation
   into the truth: a proposal overlapping a true panel at IoU >= 0.5 (greedy, highest score
   first) is taken as is when its IoU is >= 0.7 (or 0.85: both are printed), else moved; other
   proposals are deleted; panels nobody proposed are drawn. From scratch every panel is drawn.
   The bound is a perfect model: nothing to edit. Then the next round of the loop: the tiles
   still unlabelled after the uncertainty batch (see 2), with the first model's proposals and
   with those of the model retrained on it. Printed: the edits each way and their ratios.
2. Order. K more pool tiles labelled in the priority order (``labelstudio.priority``) against K
   in a seeded random order; a model trained on the first batch plus each, with the same
   epochs and seed; the test mAP@0.5 of each (evaluate stage) and their ratio. With --bound,
   also a model trained on the whole pool (every tile labelled).

About 25 minutes on 2 cores at the defaults (4 trainings of 40 epochs on 96–144 tiles).
Usage: python bench/labeling.py [--size 4096] [--tile 256] [--first 96] [--top 48]
    [--epochs 40] [--batch 4] [--seed 0] [--bound] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from shapely import STRtree
from stages import run_stage  # bench/stages.py (this script's folder)
from torchvision.ops import box_iou

from components.core import uri as uri_io
from components.core.annotations import AnnotatedImage, AnnotationsFile, save_annotations
from components.core.manifest import Manifest, TileRecord, load_manifest
from components.core.params import load_params
from components.labelstudio.annotate import read_truth_polygons, visible_boxes
from components.labelstudio.predict import detect
from components.labelstudio.priority import tile_priority
from components.labelstudio.task_pages import TaskRef
from components.ml.dataset import decode_tile
from components.ml.scripted import load_scripted_model
from components.synth.geotiff import write_scene

stage = partial(run_stage, bench="labeling")

MATCH_IOU = 0.5
LABEL = "solar_panel"


@dataclass
class Effort:
    """Box edits a person makes to label tiles."""

    draw: int = 0
    move: int = 0
    delete: int = 0
    accept: int = 0

    @property
    def edits(self) -> int:
        return self.draw + self.move + self.delete

    def add(self, other: Effort) -> None:
        self.draw += other.draw
        self.move += other.move
        self.delete += other.delete
        self.accept += other.accept


@dataclass
class PoolTile:
    """A pool tile, its truth (the oracle), the proposals above the threshold and its priority."""

    record: TileRecord
    truth: list[tuple[float, float, float, float]]
    proposals: list[tuple[float, float, float, float]]
    priority: float


def annotator_effort(proposals: list, truth: list, accept_iou: float) -> Effort:
    """The edits that turn ``proposals`` (highest score first) into ``truth``."""
    if not proposals:
        return Effort(draw=len(truth))
    if not truth:
        return Effort(delete=len(proposals))
    iou = box_iou(torch.tensor(proposals), torch.tensor(truth))
    effort, taken = Effort(), set()
    for row in range(len(proposals)):
        candidates = [(float(iou[row, col]), col) for col in range(len(truth)) if col not in taken]
        best, col = max(candidates, default=(0.0, -1))
        if best < MATCH_IOU:
            effort.delete += 1
            continue
        taken.add(col)
        if best >= accept_iou:
            effort.accept += 1
        else:
            effort.move += 1
    effort.draw += len(truth) - len(taken)
    return effort


def oracle_boxes(manifest: Manifest, truth_uri: str, min_size: float) -> dict[str, list]:
    polygons = read_truth_polygons(truth_uri)
    tree = STRtree(polygons)
    return {
        tile.uri: [box.as_list() for box in visible_boxes(tile, polygons, tree, min_size)[0]]
        for tile in manifest.tiles
    }


def write_annotations(
    path: Path, splits: dict[str, list[TileRecord]], truth: dict, pixel_size_m: float | None
) -> str:
    images = [
        AnnotatedImage(
            image=tile.uri,
            width=tile.width,
            height=tile.height,
            boxes=truth[tile.uri],
            labels=[LABEL] * len(truth[tile.uri]),
            split=split,
        )
        for split, tiles in splits.items()
        for tile in tiles
    ]
    annotations = AnnotationsFile(classes=[LABEL], images=images, pixel_size_m=pixel_size_m)
    save_annotations(str(path), annotations)
    return str(path)


def train_and_score(
    work: Path,
    name: str,
    splits: dict[str, list[TileRecord]],
    truth: dict,
    overrides: list[str],
    pixel_size_m: float | None,
) -> tuple[Path, float, float]:
    """Train on ``splits`` (train / val / test), export, evaluate: (export dir, mAP@0.5, s)."""
    folder = work / name
    annotations = write_annotations(folder / "annotations.json", splits, truth, pixel_size_m)
    seconds = stage("train", "--annotations", annotations, "--out", str(folder / "train"),
                    overrides=overrides)  # fmt: skip
    stage("export", "--checkpoint", str(folder / "train" / "model.ckpt"), "--out",
          str(folder / "export"), overrides=overrides)  # fmt: skip
    stage("evaluate", "--annotations", annotations, "--model", str(folder / "export"), "--out",
          str(folder / "evaluate"), overrides=overrides)  # fmt: skip
    metrics = uri_io.read_json(str(folder / "evaluate" / "metrics.json"))
    return folder / "export", float(metrics["map_50"]), seconds


def predict_pool(
    model_dir: Path, pool: list[TileRecord], truth: dict, overrides: list[str]
) -> tuple[list[PoolTile], float]:
    """The predict command's inference, threshold and priority on every pool tile."""
    params = load_params(None, overrides).labelstudio
    model = load_scripted_model(str(model_dir))
    threshold = (
        float(model.score_threshold) if params.score_threshold is None else params.score_threshold
    )
    floor = min(params.candidate_score, threshold)
    started = time.perf_counter()
    tiles = []
    for task_id, record in enumerate(pool, start=1):
        task = TaskRef(task_id, record.uri, frozenset())
        [found] = detect(
            model, [(task, decode_tile(uri_io.read_bytes(record.uri), record.uri))], floor
        )
        priority = tile_priority(
            found.scores, params.priority, threshold, task_id=task_id, seed=params.seed
        )
        proposals = [
            box for box, s in zip(found.boxes, found.scores, strict=True) if s >= threshold
        ]
        tiles.append(PoolTile(record, truth[record.uri], proposals, priority))
    return tiles, (time.perf_counter() - started) / max(len(pool), 1)


def split_tiles(
    manifest: Manifest, first: int, seed: int
) -> tuple[list[TileRecord], list[TileRecord], list[TileRecord], list[TileRecord]]:
    """Seeded: test (20 %), val (6 %), the first batch, and the rest of the pool."""
    order = np.random.default_rng(seed).permutation(len(manifest.tiles))
    tiles = [manifest.tiles[i] for i in order]
    test_count, val_count = round(0.2 * len(tiles)), max(4, round(0.06 * len(tiles)))
    test, val = tiles[:test_count], tiles[test_count : test_count + val_count]
    pool = tiles[test_count + val_count :]
    if first >= len(pool):
        raise SystemExit(f"--first {first} leaves no pool tiles (pool of {len(pool)})")
    return test, val, pool[:first], pool[first:]


ACCEPT_IOUS = (0.7, 0.85)  # a proposal this close to the panel is taken as is (else moved)


def effort_over(tiles: list[PoolTile], accept_iou: float | None) -> Effort:
    """Edits for all ``tiles``: from their proposals, or from scratch when ``accept_iou`` is None."""
    total = Effort()
    for tile in tiles:
        if accept_iou is None:
            total.add(annotator_effort([], tile.truth, 1.0))
        else:
            total.add(annotator_effort(tile.proposals, tile.truth, accept_iou))
    return total


def print_effort(title: str, rows: list[tuple[str, Effort]]) -> None:
    """One table: edits per row and their ratio to the first row (from scratch)."""
    print(f"\n{title}")
    print(f"  {'':<44}{'draw':>6}{'move':>6}{'delete':>8}{'accept':>8}{'edits':>7}{'ratio':>7}")
    baseline = max(rows[0][1].edits, 1)
    for name, effort in rows:
        print(
            f"  {name:<44}{effort.draw:>6}{effort.move:>6}{effort.delete:>8}{effort.accept:>8}"
            f"{effort.edits:>7}{effort.edits / baseline:>7.2f}"
        )


def effort_tables(
    first_round: list[PoolTile], second_round: list[PoolTile], left_first: list[PoolTile]
) -> None:
    """Round one: the pool with the first-batch model's proposals. Round two: the tiles left
    after the uncertainty batch, with the first-batch model's and the retrained model's."""
    panels = sum(len(tile.truth) for tile in first_round)
    rows = [("from scratch", effort_over(first_round, None))]
    rows += [
        (f"first-batch model, taken as is at IoU >= {iou}", effort_over(first_round, iou))
        for iou in ACCEPT_IOUS
    ]
    rows.append(("bound: a perfect model", Effort(accept=panels)))
    print_effort(f"effort to label the {len(first_round)} pool tiles ({panels} panels):", rows)
    panels = sum(len(tile.truth) for tile in second_round)
    rows = [("from scratch", effort_over(second_round, None))]
    for iou in ACCEPT_IOUS:
        rows.append((f"first-batch model, IoU >= {iou}", effort_over(left_first, iou)))
        rows.append((f"after the uncertainty batch, IoU >= {iou}", effort_over(second_round, iou)))
    title = f"next round: the {len(second_round)} tiles still unlabelled ({panels} panels):"
    print_effort(title, rows)


def print_order(
    scores: dict[str, float], arms: dict[str, list[PoolTile]], top: int, pool: int
) -> None:
    print(f"\ntest mAP@0.5 after labelling {top} more tiles (first batch + K), same training:")
    for name in ("random", "uncertainty", "bound"):
        if name in scores:
            extra = (
                f" ({sum(len(t.truth) for t in arms[name])} panels in the K tiles)"
                if name in arms
                else ""
            )
            label = {"bound": f"bound: all {pool} pool tiles"}.get(name, f"{name} order")
            print(f"  {label:<30}{scores[name]:>7.3f}{extra}")
    if scores["random"] >= 0.01:
        print(f"  uncertainty / random: {scores['uncertainty'] / scores['random']:.2f}")
    else:
        print("  uncertainty / random: n/a (the random-order model learnt nothing: train longer)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096, help="scene edge in px")
    parser.add_argument("--tile", type=int, default=256, help="tile edge = model input, px")
    parser.add_argument("--seed", type=int, default=0, help="scene, split and random order")
    parser.add_argument("--first", type=int, default=96, help="tiles of the first batch")
    parser.add_argument("--top", type=int, default=48, help="K: tiles labelled next each way")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of every training")
    parser.add_argument("--batch", type=int, default=4, help="tiles per training step")
    parser.add_argument("--bound", action="store_true", help="also train on the whole pool")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    os.environ.setdefault("SOLARPIPE_PROGRESS_INTERVAL", "60")
    # One torch thread per process: on the shared 2-core machine a training step with torch's
    # two intra-op threads ran 9x slower than with one (1.6 vs 14.9 images/s, SSDlite at 128 px,
    # batches of 4): the second core is rarely free, and the threads wait on each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    # Batches of 4: twice the steps of the default 8 for the same compute (a first batch is
    # small). 128-px tiles would cost a quarter but learnt nothing in 15 epochs (val mAP@0.5
    # 0.005 on 96 tiles); the quickstart's 256 px learns.
    overrides = [
        f"prepare.tile_size={args.tile}",
        f"train.image_size={args.tile}",
        f"train.batch_size={args.batch}",
        f"train.epochs={args.epochs}",
        "train.max_minutes=null",
        f"train.seed={args.seed}",
        *args.overrides,
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as tmp:
        work = Path(tmp)
        scene = write_scene(str(work / "scene.tif"), size=args.size, seed=args.seed)
        stage("prepare", "--raster", scene.raster_uri, "--tiles", str(work / "tiles"),
              "--manifest", str(work / "manifest.json"), overrides=overrides)  # fmt: skip
        manifest = load_manifest(str(work / "manifest.json"))
        params = load_params(None, overrides)
        truth = oracle_boxes(manifest, scene.truth_uri, params.preprocess.min_box_size)
        test, val, first, rest = split_tiles(manifest, args.first, args.seed)
        pixel_size = manifest.pixel_size_m
        first_model, first_map, first_s = train_and_score(
            work, "first", {"train": first, "val": val, "test": test}, truth, overrides, pixel_size
        )
        pool, seconds_per_tile = predict_pool(first_model, rest, truth, overrides)
        ranked = sorted(pool, key=lambda tile: -tile.priority)[: args.top]
        shuffled = [pool[i] for i in np.random.default_rng(args.seed + 1).permutation(len(pool))]
        arms = {"uncertainty": ranked, "random": shuffled[: args.top]}
        scores, models = {}, {}
        for name, chosen in arms.items():
            labelled = first + [tile.record for tile in chosen]
            models[name], scores[name], _ = train_and_score(
                work,
                name,
                {"train": labelled, "val": val, "test": test},
                truth,
                overrides,
                pixel_size,
            )
        left = [tile for tile in pool if tile not in ranked]
        second, _ = predict_pool(models["uncertainty"], [t.record for t in left], truth, overrides)
        if args.bound:
            everything = {"train": first + rest, "val": val, "test": test}
            _, scores["bound"], _ = train_and_score(
                work, "bound", everything, truth, overrides, pixel_size
            )
    print(
        f"\nlabeling bench: scene {args.size} px (seed {args.seed}), {len(manifest.tiles)} tiles: "
        f"test {len(test)}, val {len(val)}, first batch {len(first)}, pool {len(rest)}; "
        f"{params.train.arch} at {params.train.image_size} px, {args.epochs} epochs of batches of "
        f"{args.batch} per training; priority {params.labelstudio.priority}; "
        f"{os.cpu_count()} cores (shared machine); {time.perf_counter() - started:.0f} s in all"
    )
    print(
        f"first-batch model: test mAP@0.5 {first_map:.3f} (trained in {first_s:.0f} s); "
        f"predict's inference {1000 * seconds_per_tile:.0f} ms per tile (1 CPU thread)"
    )
    effort_tables(pool, second, left)
    print_order(scores, arms, args.top, len(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
