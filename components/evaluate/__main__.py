"""Evaluate the exported TorchScript model (what is served) on one split of the annotations.

Writes <out>/metrics.json (mAP@0.5, mAP@0.5:0.95, mAP@0.75, precision/recall/F1 at
evaluate.score_threshold; flat keys for DVC), <out>/pr_curve.json (DVC plot data) and
<out>/overlays/*.png (truth in green, predictions in red, for the worst and best tiles).

Example: python -m components.evaluate --annotations s3://bucket/annotations.json \\
    --model out/export --out out/evaluate
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.reports import write_report
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.evaluate.run import evaluate

    evaluation = evaluate(args.annotations, args.model, args.out, params.evaluate)
    metrics = evaluation.metrics
    write_report(args, "overlays", evaluation.page)
    print(
        f"evaluate: {metrics['images']} {params.evaluate.split} tiles: mAP@0.5 "
        f"{metrics['map_50']:.3f}, mAP@0.5:0.95 {metrics['map']:.3f}, precision "
        f"{metrics['precision']:.3f}, recall {metrics['recall']:.3f}, F1 {metrics['f1']:.3f} "
        f"at score ≥ {metrics['score_threshold']:g}, {metrics.get('pixel_size_m', '?')} m pixels; "
        f"{args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
