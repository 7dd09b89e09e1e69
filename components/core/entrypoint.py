"""``python -m components.<tool>`` for the CLI's tools that also run as a container entrypoint.

A tool module exposes ``configure(parser)`` (options, ``handler``) for ``solarpipe <tool>``;
this runs the same parser standalone, with ``-v`` and the one-line error contract.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from components.core.logs import setup_logging
from components.core.stage import expand_environment, run_guarded


def run_tool(
    program: str,
    configure: Callable[[argparse.ArgumentParser], None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` with ``configure``'s options and run the handler; returns the exit status."""
    parser = argparse.ArgumentParser(prog=f"python -m {program}")
    configure(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")
    # $(KFP_RUN_ID) in a Kubeflow task's arguments: Kubernetes expands it, local runners do not
    args = parser.parse_args(expand_environment(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    return run_guarded(program, args.verbose, lambda: args.handler(args))
