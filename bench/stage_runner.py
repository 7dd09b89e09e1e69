"""Run a stage through its contract (``python -m components.<stage>``) for the benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time


def run_stage(name: str, *options: str, overrides: list[str]) -> float:
    """Run one stage with ``--set`` overrides, echoing the command; its wall time in seconds.
    A failed stage raises ``RuntimeError`` naming its exit status."""
    command = [sys.executable, "-m", f"components.{name}", *options]
    for override in overrides:
        command += ["--set", override]
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} failed with exit status {completed.returncode}")
    return time.perf_counter() - started
