"""``solarpipe annotations-listing``: the keys and ETags of the annotation objects, as one file.

DVC cannot hash an S3 prefix that Label Studio writes to behind its back; this listing is the
dependency that makes ``preprocess`` rerun when (and only when) the annotations change.
"""

from __future__ import annotations

import argparse

from components.core import uri as uri_io
from components.core.errors import SolarpipeError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="URI prefix of the export objects")
    parser.add_argument("--out", required=True, help="listing JSON to write (local path or URI)")
    parser.set_defaults(handler=write_annotations_listing)


def annotations_listing(prefix: str) -> list[dict[str, object]]:
    """Every object under the prefix: key relative to the prefix, ETag and size, sorted."""
    root = prefix.rstrip("/") + "/"
    return [
        {
            "key": info.uri[len(root) :] if info.uri.startswith(root) else info.uri,
            "etag": info.etag,
            "size": info.size,
        }
        for info in uri_io.list_objects(prefix)
    ]


def write_annotations_listing(args: argparse.Namespace) -> None:
    listing = annotations_listing(args.annotations)
    if not listing:
        raise SolarpipeError(
            f"no annotation objects under {args.annotations}: run `solarpipe labelstudio setup` "
            "and label some tiles (or `solarpipe labelstudio annotate-from-truth`)"
        )
    uri_io.write_json(args.out, {"prefix": args.annotations.rstrip("/"), "objects": listing})
    print(f"annotations-listing: {len(listing)} objects under {args.annotations}")
