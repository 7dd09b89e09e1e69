"""Run a stage through its contract from a benchmark: ``python -m components.<stage> …``."""

from __future__ import annotations

import subprocess
import sys
import time


def run_stage(name: str, *options: str, overrides: list[str], bench: str) -> float:
    """Run one stage with ``--set`` overrides, echoing the command; its wall time in seconds."""
    command = [sys.executable, "-m", f"components.{name}", *options]
    for override in overrides:
        command += ["--set", override]
    print(f"{bench}: $ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} failed with exit status {completed.returncode}")
    return time.perf_counter() - started
