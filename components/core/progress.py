"""Progress reporting: a tqdm bar on a terminal, periodic log lines otherwise (CI, Kubeflow)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

# Seconds between progress lines when stderr is not a terminal (logs of pods and CI).
PLAIN_INTERVAL_S = float(os.environ.get("SOLARPIPE_PROGRESS_INTERVAL", "10"))


def _is_tty() -> bool:
    return sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
) -> tqdm:
    """A tqdm bar; without a tty it prints a plain line every ``PLAIN_INTERVAL_S`` seconds."""
    if _is_tty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        mininterval=PLAIN_INTERVAL_S,
        maxinterval=PLAIN_INTERVAL_S,
        ncols=100,
        ascii=True,
        file=sys.stderr,
    )
