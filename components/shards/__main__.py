"""``python -m components.shards merge-manifests|merge-detections ...`` (see ``cli.py``)."""

from __future__ import annotations

import argparse
import sys

from components.core.logs import setup_logging
from components.core.stage import run_guarded
from components.shards.cli import __doc__ as description
from components.shards.cli import configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.shards", description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")
    configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_guarded("components.shards", args.verbose, lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
