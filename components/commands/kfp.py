"""``solarpipe kfp``: the Kubeflow pipeline's commands (compile, submit, run-local) from pipeline.py.

The pipeline lives in ``pipeline.py`` at the project root (orchestration stays out of the
package); this module finds that file, in the current folder or next to the package's source,
and hands it the subcommand's parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from components.core.errors import UsageError

PIPELINE_FILE = "pipeline.py"


def locate_pipeline() -> Path | None:
    """``./pipeline.py``, else the one beside the ``components`` package (a source checkout)."""
    package_root = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / PIPELINE_FILE, package_root / PIPELINE_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_pipeline_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("solarpipe_pipeline", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise UsageError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def configure(parser: argparse.ArgumentParser) -> None:
    path = locate_pipeline()
    if path is None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.set_defaults(handler=pipeline_not_found)
        return
    load_pipeline_module(path).configure(parser)


def pipeline_not_found(args: argparse.Namespace) -> None:
    raise UsageError(
        f"{PIPELINE_FILE} not found in {Path.cwd()}: run `solarpipe kfp` from the project root"
    )
