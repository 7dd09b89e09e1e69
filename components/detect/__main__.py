"""Detect solar panels in a whole raster (GeoTIFF/VRT, local or s3://) with the exported model.

Streams overlapping windows (detect.window, detect.overlap) through the TorchScript model in
batches, merges detections across window seams (NMS), and writes a GeoJSON FeatureCollection:
one polygon per panel, with its score, in the raster's CRS.

Example: python -m components.detect --raster s3://bucket/scene.tif --model out/export \\
    --out out/detections.geojson
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> None:
    from components.detect.run import detect

    summary = detect(args.raster, args.model, args.out, params.detect, params.prepare)
    print(
        f"detect: {summary.panels} panels in {summary.windows} windows of {summary.window} px "
        f"({summary.skipped_nodata} all-nodata windows skipped, {summary.merged} duplicates "
        f"merged at seams) → {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage("detect", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
