"""Script the trained detector to TorchScript, check it against the eager model, package it.

Writes <out>/model.pt (TorchScript with resize and box rescaling inside), <out>/<name>.tar.gz
(a BentoML model, served by `solarpipe serve --model <out>`; export.archive=bentomodel
writes BentoML's xz <name>.bentomodel instead, ~25x slower for ~2% less) and <out>/export.json.

Example: python -m components.export --checkpoint s3://bucket/train/model.ckpt --out out/export
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.export.run import export

    summary = export(args.checkpoint, args.out, params.export)
    print(
        f"export: {summary['arch']} → {args.out}: model.pt ({summary['model_bytes']} bytes), "
        f"BentoML model {summary['bento_tag']} in {summary['bento_archive']}; parity max "
        f"|Δbox| {summary['parity']['max_box_diff']:.2g} px, |Δscore| "
        f"{summary['parity']['max_score_diff']:.2g} on {summary['parity']['images']} images"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage("export", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
