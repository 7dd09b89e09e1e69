"""``solarpipe labelstudio``: ``setup`` (project and storages) and ``annotate-from-truth``."""

from __future__ import annotations

import argparse
import importlib

from components.core.errors import SolarpipeError, UsageError
from components.core.stage import add_params_options
from components.labelstudio.export_objects import EXPORT_FORMATS

SETUP_MODULE = "components.labelstudio.setup"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="labelstudio_action", metavar="ACTION", required=True)
    configure_annotate(
        actions.add_parser(
            "annotate-from-truth",
            help="write Label Studio export objects for the tiles from the synthetic truth",
            description="Play the annotator: for every tile of the manifest, write the export "
            "object Label Studio would write for an annotation boxing the true panels.",
        )
    )
    setup_parser = actions.add_parser(
        "setup",
        help="create or update the project, its S3 import and export storages, and sync",
    )
    try:
        setup_module = importlib.import_module(SETUP_MODULE)
    except ModuleNotFoundError as exc:
        setup_parser.set_defaults(handler=setup_not_available, missing=exc.name or SETUP_MODULE)
        return
    setup_module.configure_setup(setup_parser)


def setup_not_available(args: argparse.Namespace) -> None:
    raise SolarpipeError(f"labelstudio setup: not available in this install (no {args.missing})")


def configure_annotate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="prepare manifest URI")
    parser.add_argument("--truth", required=True, help="ground-truth GeoJSON URI (from synth)")
    parser.add_argument(
        "--annotations", required=True, help="URI prefix of the export objects to write"
    )
    parser.add_argument(
        "--format",
        dest="export_format",
        choices=EXPORT_FORMATS,
        default=None,
        help="one object per annotation or per task (default: labelstudio.export_format)",
    )
    parser.add_argument(
        "--min-size",
        type=float,
        default=None,
        help="drop visible parts narrower than this, px (default: preprocess.min_box_size)",
    )
    parser.add_argument("--workers", type=int, default=16, help="concurrent uploads")
    add_params_options(parser)
    parser.set_defaults(handler=run_annotate)


def run_annotate(args: argparse.Namespace) -> None:
    from components.core.params import load_params
    from components.labelstudio.annotate import annotate_from_truth

    params = load_params(args.params, args.overrides)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if not params.labelstudio.labels:
        raise UsageError("labelstudio.labels is empty: name at least one label")
    min_size = params.preprocess.min_box_size if args.min_size is None else args.min_size
    summary = annotate_from_truth(
        manifest_uri=args.manifest,
        truth_uri=args.truth,
        annotations_prefix=args.annotations,
        export_format=args.export_format or params.labelstudio.export_format,
        label=params.labelstudio.labels[0],
        min_size=min_size,
        workers=args.workers,
    )
    print(
        f"annotate-from-truth: {summary.objects} export objects ({summary.uploaded} written, "
        f"{summary.unchanged} unchanged), {summary.boxes} boxes, {summary.empty_tiles} tiles "
        f"without panels, {summary.slivers_dropped} slivers dropped; under {args.annotations}"
    )
