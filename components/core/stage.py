"""The stage contract: ``python -m components.<stage> [--params P] [--set k=v ...] [-v] <io options>``.

Every stage entrypoint goes through :func:`run_stage`, which parses the common options, loads
and validates params, sets up logging, and turns expected failures into one line on stderr and
exit status 2 (usage) or 1 (runtime). Programming errors stay tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from components.core.errors import SolarpipeError, is_runtime_fault, one_line
from components.core.logs import get_logger, redact, setup_logging
from components.core.params import Params, load_params

StageFunction = Callable[[argparse.Namespace, Params], None]


def add_params_options(parser: argparse.ArgumentParser) -> None:
    """``--params`` and ``--set``: the params half of the stage contract."""
    parser.add_argument(
        "--params",
        default=None,
        metavar="FILE",
        help="params file (default: ./params.yaml when present, else built-in defaults)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one param (repeatable), e.g. --set train.epochs=3",
    )


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The stage contract's common options: ``--params``, ``--set`` and ``-v``."""
    add_params_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")


def report_error(program: str, exc: BaseException, verbose: bool) -> None:
    """Print one line naming the cause (secrets masked); the traceback only with ``-v``."""
    if verbose:
        get_logger(program).exception("failed")
    print(f"{program}: error: {redact(one_line(exc))}", file=sys.stderr)


def run_guarded(program: str, verbose: bool, body: Callable[[], None]) -> int:
    """Run ``body`` and map expected failures (ours, and the I/O, S3 and raster faults of the
    libraries, also from worker threads and DataLoader workers) to exit statuses."""
    try:
        body()
    except SolarpipeError as exc:
        report_error(program, exc, verbose)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_runtime_fault(exc):
            raise
        report_error(program, exc, verbose)
        return 1
    return 0


def run_stage(
    name: str,
    description: str,
    add_io_options: Callable[[argparse.ArgumentParser], None],
    stage_function: StageFunction,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the stage contract's command line and run one stage; returns the exit status."""
    program = f"components.{name}"
    parser = argparse.ArgumentParser(prog=f"python -m {program}", description=description)
    add_io_options(parser)
    add_common_options(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> None:
        params = load_params(args.params, args.overrides)
        stage_function(args, params)

    return run_guarded(program, args.verbose, body)
