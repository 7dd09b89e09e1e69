"""Draw the ground-truth boxes of a few tiles per split into a gallery (index.html, summary.md).

Example: python -m components.preview --annotations data/annotations.json --out data/preview
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.reports import wants_report, write_report
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.preview.run import preview

    summary = preview(args.annotations, args.out, params.preview, wants_report(args, "gallery"))
    print(
        f"preview: {summary.tiles_drawn} tiles with {summary.boxes_drawn} boxes drawn; "
        f"gallery {args.out}/index.html"
    )
    write_report(args, "gallery", summary.inline_gallery or "")


def main(argv: list[str] | None = None) -> int:
    return run_stage("preview", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
