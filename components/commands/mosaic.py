"""``solarpipe mosaic``: write the VRT of a prefix of GeoTIFFs once, for many shards to open.

Every shard given a prefix reads every file's header to build the mosaic (41,000 files for
Switzerland: 41 million header reads over 1,000 pods). Given this VRT instead, a shard reads one
document and GDAL opens only the files its windows touch.
"""

from __future__ import annotations

import argparse

from components.core.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raster", required=True, help="prefix ending in / of the GeoTIFFs")
    parser.add_argument("--out", required=True, help="URI of the .vrt to write")
    parser.set_defaults(handler=write_mosaic_vrt)


def write_mosaic_vrt(args: argparse.Namespace) -> None:
    from components.core import uri as uri_io
    from components.raster.mosaic import is_mosaic_prefix, resolve_raster

    if not is_mosaic_prefix(args.raster):
        raise UsageError(f"--raster {args.raster}: expected a prefix ending in /")
    if not args.out.lower().endswith(".vrt"):
        raise UsageError(f"--out {args.out}: expected a .vrt URI")
    source = resolve_raster(args.raster)
    uri_io.write_text(args.out, source.dataset, content_type="application/xml")
    print(
        f"mosaic: {len(source.footprints or ())} files, {source.info.width}x{source.info.height} "
        f"px, {source.info.crs} → {args.out}"
    )
