"""``solarpipe serve`` / ``python -m components.serving``: serve an exported model over HTTP.

Every option has an environment default, so the serving image is configured by env alone
(``SOLARPIPE_MODEL_URI``, ``SOLARPIPE_SERVE_HOST``, ``SOLARPIPE_SERVE_PORT``).
"""

from __future__ import annotations

import argparse
import os

DEFAULT_PORT = 3000


def env_port() -> int | str:
    value = os.environ.get("SOLARPIPE_SERVE_PORT", "")
    return int(value) if value.isdigit() else value or DEFAULT_PORT


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fetch the exported BentoML model archive (local or s3://), import it and serve it: "
        "POST PNG/JPEG tiles to /detect; /readyz and /livez answer probes."
    )
    parser.epilog = (
        "example: solarpipe serve --model out/export --port 3000, then "
        "curl -F images=@tile.png http://127.0.0.1:3000/detect"
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("SOLARPIPE_MODEL_URI", ""),
        metavar="URI",
        help="the export stage's output folder or its archive (*.tar.gz, *.bentomodel), "
        "local or s3:// (default: $SOLARPIPE_MODEL_URI)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("SOLARPIPE_SERVE_HOST", "127.0.0.1"),
        help="address to listen on (default: $SOLARPIPE_SERVE_HOST, else 127.0.0.1; "
        "0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env_port(),
        help=f"port (default: $SOLARPIPE_SERVE_PORT, else {DEFAULT_PORT})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from components.serving.server import serve_model

    serve_model(args.model, args.host, args.port)
