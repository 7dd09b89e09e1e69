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


def add_io_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raster", required=True, help="GeoTIFF/VRT URI (local path or s3://)")
    parser.add_argument(
        "--model", required=True, help="export folder/prefix URI, or the model.pt in it"
    )
    parser.add_argument("--out", required=True, help="GeoJSON URI to write")


def run(args: argparse.Namespace, params: Params) -> None:
    from components.detect.run import detect

    summary = detect(args.raster, args.model, args.out, params.detect, params.prepare)
    columns, rows = summary.window
    scale = (
        f"raster {summary.raster_pixel_size} resampled to the model's "
        f"{summary.model_pixel_size_m:g} m"
        if summary.resampled
        else f"raster {summary.raster_pixel_size}, model {summary.model_pixel_size_m:g} m"
    )
    print(
        f"detect: {summary.panels} panels (score >= {summary.score_threshold:g}) in "
        f"{summary.windows} windows of {columns}x{rows} px ({scale}; {summary.skipped_nodata} "
        f"all-nodata windows skipped, {summary.merged} duplicates merged at seams) → {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage("detect", __doc__ or "", add_io_options, run, argv)


if __name__ == "__main__":
    sys.exit(main())
