"""Cut a raster into PNG tiles on S3 and list them in a manifest.

--raster: one GeoTIFF, a .vrt, or a prefix ending in / whose GeoTIFFs form one mosaic (local
or s3://). --shard I/N tiles only shard I (from 0) of N: disjoint parts whose union is the
whole run; each writes its own manifest (a --manifest ending in / gets
shard-IIII-of-NNNN.json under it) and `solarpipe shards merge-manifests` joins them.

Example: python -m components.prepare --raster s3://bucket/scene.tif \\
    --tiles s3://bucket/tiles --manifest data/manifest.json
"""

from __future__ import annotations

import argparse
import sys

from components.core.params import Params
from components.core.stage import run_stage


def run(args: argparse.Namespace, params: Params) -> str:
    from components.prepare.run import prepare
    from components.shards.spec import parse_shard, part_uri

    shard = parse_shard(args.shard)
    summary = prepare(args.raster, args.tiles, args.manifest, params.prepare, shard)
    label = "prepare" if shard.is_whole else f"prepare shard {shard}"
    manifest = part_uri(args.manifest, shard, ".json")
    print(
        f"{label}: {summary.planned} windows, {summary.uploaded} tiles uploaded, "
        f"{summary.unchanged} unchanged, {summary.skipped_nodata} skipped (all nodata); "
        f"manifest {manifest}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    return run_stage("prepare", run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
