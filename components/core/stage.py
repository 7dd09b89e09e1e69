"""The stage contract: ``python -m components.<stage> [--params P] [--set k=v ...] [-v] <io options>``.

Every stage entrypoint goes through :func:`run_stage`, which builds the command line from the
stage's declaration (:mod:`components.core.stages`), loads and validates params, keeps the ones
the stage declares, sets up logging, and turns expected failures into one line on stderr and
exit status 2 (usage) or 1 (runtime). Programming errors stay tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.core import uri as uri_io
from components.core.errors import SolarpipeError, UsageError, is_runtime_fault, one_line
from components.core.logs import get_logger, redact, setup_logging
from components.core.params import Section, load_params, params_digest, stage_params
from components.core.stages import Stage, stage

# A stage's work: (options, its params) → None, or the URI it handed down when that is not its
# declared output (a shard's part)
StageFunction = Callable[[argparse.Namespace, Any], str | None]
VARIABLE_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
log = get_logger("components.stage")


def add_params_options(parser: argparse.ArgumentParser) -> None:
    """``--params`` and ``--set``: the params half of the stage contract."""
    parser.add_argument(
        "--params",
        default=None,
        metavar="URI",
        help="params document, a path or s3:// URI (default: ./params.yaml when present, else "
        "built-in defaults)",
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


def expand_environment(argv: Sequence[str]) -> list[str]:
    """Replace ``$(NAME)`` with the variable's value, as Kubernetes does in a container's args.

    On a cluster the kubelet has already done it (a Kubeflow task's outputs live under
    ``s3://<bucket>/runs/$(KFP_RUN_ID)/``); local runners (kfp's DockerRunner, ``docker run``)
    pass the text through, so the stage does it. ``$$`` is a literal ``$``. A name that is not
    set is a usage error.
    """

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in os.environ:
            raise UsageError(f"$({name}) in the arguments, but {name} is not set")
        return os.environ[name]

    return [VARIABLE_REFERENCE.sub(value, argument) for argument in argv]


def handed_down_uri(declared: Stage, args: argparse.Namespace) -> str:
    """The URI downstream stages read: the run-folder output, or ``hands_down`` inside it."""
    for option in declared.outputs:
        if not option.in_run_folder:
            continue
        value = getattr(args, option.name)
        if option.source == "." and declared.hands_down != ".":
            return uri_io.join(value, declared.hands_down)
        return value
    raise AssertionError(f"stage {declared.name} declares no output in its run folder")


def write_uri_file(path: str, uri: str) -> None:
    """Hand ``uri`` to the orchestrator: the file of a Kubeflow output parameter."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(uri)


def stage_parser(declared: Stage, description: str) -> argparse.ArgumentParser:
    """The stage's command line: its declared I/O options, the params options, ``-v``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {declared.module}",
        description=description or declared.summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in declared.options:
        parser.add_argument(f"--{option.name}", required=True, metavar="URI", help=option.help)
    for flag in declared.flags:
        parser.add_argument(f"--{flag.name}", action="store_true", help=flag.help)
    if declared.shardable:
        parser.add_argument(
            "--shard", default=None, metavar="I/N", help="do shard I (from 0) of N; default 0/1"
        )
    add_common_options(parser)
    orchestrator = parser.add_argument_group("set by orchestrators")
    orchestrator.add_argument(
        "--params-digest",
        metavar="SHA256",
        help="run only if the params this stage reads have this digest (Kubeflow: the task's "
        "cache key follows it)",
    )
    orchestrator.add_argument(
        "--uri-file",
        metavar="PATH",
        help="when done, write the URI downstream stages read to PATH (a Kubeflow output)",
    )
    if declared.reports:
        kinds = "; ".join(f"{r.name}: {r.kind}, {r.help}" for r in declared.reports)
        orchestrator.add_argument(
            "--report",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "PATH"),
            help=f"also write report NAME to the file PATH ({kinds})",
        )
    return parser


def requested_reports(declared: Stage, args: argparse.Namespace) -> dict[str, Path]:
    """``--report NAME PATH`` pairs, each NAME one the stage declares."""
    known = [report.name for report in declared.reports]
    reports = {}
    for name, path in getattr(args, "report", None) or []:
        if name not in known:
            raise UsageError(f"--report {name}: {declared.name} has reports {', '.join(known)}")
        reports[name] = Path(path)
    return reports


def resolve_stage_params(declared: Stage, args: argparse.Namespace) -> Section:
    """Load the params document, keep what the stage reads, check and log their digest."""
    values = stage_params(declared.name, load_params(args.params, args.overrides))
    digest = params_digest(values)
    if args.params_digest and args.params_digest != digest:
        raise UsageError(
            f"the params {', '.join(declared.params)} in {args.params or 'the defaults'} have "
            f"digest {digest[:12]}, the orchestrator expected {args.params_digest[:12]}: the "
            "params document changed after the run resolved it"
        )
    log.debug(
        "params %s (%s) from %s", digest[:12], ", ".join(declared.params), args.params or "defaults"
    )
    return values


def run_stage(
    name: str,
    stage_function: StageFunction,
    argv: Sequence[str] | None = None,
    *,
    description: str = "",
) -> int:
    """Parse the stage contract's command line and run one stage; returns the exit status.

    ``stage_function(args, params)`` gets the parsed options and the params the stage declares
    (the same attributes as :class:`Params`, holding only those sections and keys).
    """
    declared = stage(name)
    program = declared.module
    parser = stage_parser(declared, description)
    raw = sys.argv[1:] if argv is None else argv
    verbose = "-v" in raw or "--verbose" in raw
    try:
        args = parser.parse_args(expand_environment(raw))
        args.reports = requested_reports(declared, args)
    except UsageError as exc:
        report_error(program, exc, verbose)
        return exc.exit_code
    setup_logging(args.verbose)

    def body() -> None:
        handed_down = stage_function(args, resolve_stage_params(declared, args))
        if args.uri_file:
            write_uri_file(args.uri_file, handed_down or handed_down_uri(declared, args))

    return run_guarded(program, args.verbose, body)
