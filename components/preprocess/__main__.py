"""Turn the Label Studio export objects under a prefix into one ground-truth annotations.json.

Example: python -m components.preprocess --annotations s3://bucket/annotations \\
    --manifest s3://bucket/manifest.json --out data/annotations.json
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.reports import write_report
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.preprocess.run import preprocess

    summary = preprocess(args.annotations, args.manifest, args.out, params)
    for line in summary.lines():
        print(line)
    write_report(args, "summary", summary.markdown())


def main(argv: list[str] | None = None) -> int:
    return run_stage("preprocess", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
