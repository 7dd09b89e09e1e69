"""``solarpipe shards merge-manifests|merge-detections``: join the parts shards wrote.

Also ``python -m components.shards ...`` (the prepare image, which has no torch, runs both).
Parts are URIs, a JSON list of URIs (Kubeflow's ``dsl.Collected``), or a prefix ending in ``/``.
Every shard's part must be there, or nothing is written.
"""

from __future__ import annotations

import argparse

PARTS_HELP = (
    "part URIs, a JSON list of them (dsl.Collected), or a prefix ending in / "
    "(every shard-IIII-of-NNNN part under it)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="shards_action", metavar="ACTION", required=True)
    manifests = actions.add_parser(
        "merge-manifests", help="join prepare's shard manifests into one manifest"
    )
    manifests.add_argument("--parts", nargs="+", required=True, help=PARTS_HELP)
    manifests.add_argument("--out", required=True, help="URI of the merged manifest JSON")
    add_uri_file_option(manifests)
    manifests.set_defaults(handler=run_merge_manifests)
    detections = actions.add_parser(
        "merge-detections", help="merge detect's shard parts into one GeoJSON (seams deduplicated)"
    )
    detections.add_argument("--parts", nargs="+", required=True, help=PARTS_HELP)
    detections.add_argument("--out", required=True, help="URI of the GeoJSON to write")
    add_uri_file_option(detections)
    detections.set_defaults(handler=run_merge_detections)


def add_uri_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uri-file",
        metavar="PATH",
        help="when done, write --out's URI to PATH (a Kubeflow output, as the stages do)",
    )


def publish(args: argparse.Namespace) -> None:
    from components.core.stage import write_uri_file

    if args.uri_file:
        write_uri_file(args.uri_file, args.out)


def run_merge_manifests(args: argparse.Namespace) -> None:
    from components.shards.manifests import merge_manifests

    merged = merge_manifests(args.parts, args.out)
    print(f"shards merge-manifests: {len(merged.tiles)} tiles → {args.out}")
    publish(args)


def run_merge_detections(args: argparse.Namespace) -> None:
    from components.shards.detections import merge_detections

    summary = merge_detections(args.parts, args.out)
    print(
        f"shards merge-detections: {summary.panels} panels from {summary.windows} windows "
        f"({summary.merged} duplicates merged at seams) → {args.out}"
    )
    publish(args)
