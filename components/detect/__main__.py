"""Detect solar panels in a whole raster with the exported model.

--raster: one GeoTIFF, a .vrt, or a prefix ending in / whose GeoTIFFs form one mosaic (local
or s3://). Streams overlapping windows (detect.window, detect.overlap) through the TorchScript
model in batches (a raster of another pixel size is resampled to the model's within 0.25x-4x,
refused outside unless detect.resample=force), merges detections across window seams (NMS), and writes a GeoJSON
FeatureCollection: one polygon per panel, with its score, in the raster's CRS. --shard I/N runs
only shard I (from 0) of N and writes its detections part to --out (a prefix ending in / gets
shard-IIII-of-NNNN.npz under it); `solarpipe shards merge-detections` merges the parts.

Example: python -m components.detect --raster s3://bucket/scene.tif --model out/export \\
    --out out/detections.geojson
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> str:
    from components.detect.run import detect
    from components.shards.spec import parse_shard

    shard = parse_shard(args.shard)
    summary = detect(args.raster, args.model, args.out, params.detect, params.prepare, shard)
    columns, rows = summary.window
    scale = (
        f"raster {summary.raster_pixel_size} resampled to the model's "
        f"{summary.model_pixel_size_m:g} m"
        if summary.resampled
        else f"raster {summary.raster_pixel_size}, model {summary.model_pixel_size_m:g} m"
    )
    if shard.is_whole:
        print(
            f"detect: {summary.panels} panels (score >= {summary.score_threshold:g}) in "
            f"{summary.windows} windows of {columns}x{rows} px ({scale}; "
            f"{summary.skipped_nodata} all-nodata windows skipped, {summary.merged} duplicates "
            f"merged at seams) → {summary.out_uri}"
        )
    else:
        print(
            f"detect shard {shard}: {summary.detections} detections "
            f"(score >= {summary.score_threshold:g}) in {summary.windows} windows of "
            f"{columns}x{rows} px ({scale}; {summary.skipped_nodata} all-nodata windows "
            f"skipped) → {summary.out_uri}"
        )
    return summary.out_uri


def main(argv: list[str] | None = None) -> int:
    return run_stage("detect", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
