"""The ``solarpipe`` command: subcommands for the data plane, Label Studio, images and runs.

Each subcommand lives in its own module exposing ``configure(parser)``, which adds its options
and sets ``handler``; modules import heavy libraries only inside their handlers so that
``solarpipe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from components.core.logs import setup_logging
from components.core.stage import run_guarded

# name → (module with configure(parser), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "components.commands.quickstart",
        "run the whole pipeline on the embedded default (S3, synthetic scene)",
    ),
    "s3": ("components.commands.s3", "embedded S3 server: `solarpipe s3 serve`"),
    "synth": ("components.commands.synth", "write a synthetic georeferenced scene + ground truth"),
    "labelstudio": (
        "components.labelstudio.commands",
        "Label Studio: `setup`, `predict` (pre-annotations), `next`, `annotate-from-truth`",
    ),
    "params": ("components.commands.params", "print the effective params or their reference"),
    "annotations-listing": (
        "components.commands.annotations_listing",
        "write the keys and ETags of the annotation objects (DVC dependency)",
    ),
    "mosaic": (
        "components.commands.mosaic",
        "write the VRT of a prefix of GeoTIFFs once (shards then open only their files)",
    ),
    "shards": (
        "components.shards.cli",
        "join the parts of sharded prepare/detect runs: `merge-manifests`, `merge-detections`",
    ),
    "images": ("components.images.commands", "build the stage container images"),
    "run-stage": ("components.images.run_stage", "run one stage's container locally"),
    "kfp": ("components.commands.kfp", "Kubeflow pipeline: compile, submit, run-local"),
    "serve": ("components.serving.commands", "serve an exported model over HTTP (BentoML)"),
    "deploy": (
        "components.deploy.commands",
        "roll the serving Deployment to a new model and wait until it is ready",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solarpipe",
        description="Detect solar panels in aerial images: pipeline tools and stages.",
        epilog="Stages run as `python -m components.<stage> --help` "
        "(prepare, preprocess, preview, train, export, evaluate, detect).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not module_name.startswith(exc.name):
                raise
            subparser.set_defaults(handler=None, missing=module_name)
            continue
        module.configure(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"{args.command}: not available in this install ({args.missing})")
    return run_guarded(f"solarpipe {args.command}", args.verbose, lambda: handler(args))


if __name__ == "__main__":
    sys.exit(main())
