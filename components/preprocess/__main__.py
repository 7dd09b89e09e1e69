"""Turn the Label Studio export objects under a prefix into one ground-truth annotations.json.

Example: python -m components.preprocess --annotations s3://bucket/annotations \\
    --manifest s3://bucket/manifest.json --out data/annotations.json
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def add_io_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--annotations", required=True, help="URI prefix of the Label Studio export objects"
    )
    parser.add_argument("--manifest", required=True, help="prepare manifest URI")
    parser.add_argument(
        "--out",
        required=True,
        help="annotations JSON URI to write (a URI not ending in .json is a folder that "
        "gets annotations.json)",
    )


def run(args: argparse.Namespace, params: Params) -> None:
    from components.preprocess.run import preprocess

    summary = preprocess(args.annotations, args.manifest, args.out, params)
    for line in summary.lines():
        print(line)


def main(argv: list[str] | None = None) -> int:
    return run_stage("preprocess", __doc__ or "", add_io_options, run, argv)


if __name__ == "__main__":
    sys.exit(main())
