"""``solarpipe kfp``: the Kubeflow pipeline's commands (compile, submit, run-local) from pipeline.py.

The pipeline lives in ``pipeline.py`` at the project root (orchestration stays out of the
package); this module loads the project's own file, next to the package's source (never a
``pipeline.py`` that happens to be in the current folder), and hands it the subcommand's parser.
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
    """The project's ``pipeline.py``, beside the ``components`` package of a source checkout."""
    candidate = Path(__file__).resolve().parents[2] / PIPELINE_FILE
    return candidate if candidate.is_file() else None


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
        f"{PIPELINE_FILE} is not beside this install of solarpipe "
        f"({Path(__file__).resolve().parents[2]}): `solarpipe kfp` needs a source checkout "
        "(pip install -e .)"
    )
