"""``solarpipe labelstudio``: ``setup`` (project and storages), ``predict`` (pre-annotations,
most useful tiles first), ``next`` (the tiles to label next) and ``annotate-from-truth``."""

from __future__ import annotations

import argparse
import importlib
import os

from components.core.errors import SolarpipeError, UsageError
from components.core.stage import add_params_options
from components.labelstudio.export_objects import EXPORT_FORMATS

SETUP_MODULE = "components.labelstudio.setup"
RUN_ID_VARIABLE = "SOLARPIPE_RUN_ID"
DEFAULT_PREDICT_OUT = "out/labelstudio-predict"


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
    configure_predict(
        actions.add_parser(
            "predict",
            help="upload the model's boxes as pre-annotations to the unlabeled tasks, "
            "uncertain tiles first",
            description="Run the exported model over the tiles of the project's unlabeled "
            "tasks and upload its boxes as predictions (model version = export name:version@run "
            "id); then Label Studio serves the most useful tiles first (labelstudio.priority). "
            "Rerunning adds nothing; an interrupted run resumes from its record.",
        )
    )
    configure_next(
        actions.add_parser(
            "next",
            help="print the tiles to label next, most useful first",
            description="The unlabeled tasks Label Studio serves first after predict: rank, "
            "task id, priority, tile and a link.",
        )
    )


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


def configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="the export's model.pt, or the folder/prefix holding it (export.json beside it "
        "names the model version)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_PREDICT_OUT,
        metavar="URI",
        help=f"folder or s3:// prefix for the run's record predict.json (default: "
        f"{DEFAULT_PREDICT_OUT})",
    )
    parser.add_argument(
        "--run-id",
        default=os.environ.get(RUN_ID_VARIABLE) or "local",
        help=f"run id in the model version; the same one resumes and adds nothing twice "
        f"(default: ${RUN_ID_VARIABLE}, else 'local')",
    )
    add_params_options(parser)
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    from components.core.params import load_params
    from components.labelstudio.predict import predict_to_labelstudio

    params = load_params(args.params, args.overrides).labelstudio
    summary = predict_to_labelstudio(args.model, args.out, args.run_id, params)
    record = summary.record
    missing = f", {len(record.missing_tiles)} tiles missing" if record.missing_tiles else ""
    print(
        f"predict: {record.tasks_predicted} tasks predicted ({record.boxes} boxes from score "
        f"{record.score_threshold:g}), {record.tasks_already_predicted} already had "
        f"{record.model_version}{missing}; record {summary.record_uri}"
    )
    changed = ", ".join(f"{name}={value}" for name, value in summary.project_changes.items())
    print(f"project: {changed or 'unchanged'}; tab {summary.view_action}")
    print(f"label next ({record.priority} priority, most useful first): {summary.queue_url}")


def configure_next(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=int, default=10, metavar="K", help="how many (default 10)")
    add_params_options(parser)
    parser.set_defaults(handler=run_next)


def run_next(args: argparse.Namespace) -> None:
    from components.core.params import load_params
    from components.labelstudio.queue import print_next_tasks

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    print_next_tasks(load_params(args.params, args.overrides).labelstudio, args.top)
