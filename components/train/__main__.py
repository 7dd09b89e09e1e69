"""Train a solar-panel detector on annotations.json (tiles streamed from S3 or disk).

Writes --out: model.ckpt (best val mAP@0.5), last.ckpt (for --resume), metrics.json,
params.yaml and logs/ (CSV and TensorBoard).

Example: python -m components.train --annotations data/annotations.json --out out/train
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.train.run import train

    train(args, params)


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
