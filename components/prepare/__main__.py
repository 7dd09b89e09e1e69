"""Cut a GeoTIFF/VRT (local or s3://) into PNG tiles and write the tile manifest.

Example: python -m components.prepare --raster s3://bucket/scene.tif \\
    --tiles s3://bucket/tiles --manifest data/manifest.json
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.prepare.run import prepare

    summary = prepare(args.raster, args.tiles, args.manifest, params.prepare)
    print(
        f"prepare: {summary.planned} windows, {summary.uploaded} tiles uploaded, "
        f"{summary.unchanged} unchanged, {summary.skipped_nodata} skipped (all nodata); "
        f"manifest {args.manifest}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage("prepare", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
