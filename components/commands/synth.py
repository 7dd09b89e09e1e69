"""``solarpipe synth``: write a synthetic georeferenced town scene with solar panels."""

from __future__ import annotations

import argparse

from components.core.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="GeoTIFF URI (local path or s3://)")
    parser.add_argument("--size", type=int, default=2048, help="edge in pixels (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--parts",
        type=int,
        default=1,
        help="towns per side: 2 sets 2x2 towns of their own seeds (street angle, sun) side by "
        "side (default 1)",
    )
    parser.set_defaults(handler=write_synthetic_scene)


def write_synthetic_scene(args: argparse.Namespace) -> None:
    if args.size < 64:
        raise UsageError(f"--size must be at least 64 pixels, got {args.size}")
    from components.synth.geotiff import write_scene

    info = write_scene(args.out, size=args.size, seed=args.seed, parts=args.parts)
    print(f"scene: {info.raster_uri} ({info.width}x{info.height} px, {info.panel_count} panels)")
    print(f"truth: {info.truth_uri}")
