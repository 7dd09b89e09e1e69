"""Benchmark every stage through a misbehaving S3 against the same stage on a clean one.

The embedded S3 server runs in its own process (``solarpipe s3 serve``); the fault proxy of the
tests (``tests/fault_proxy.py``) runs here, in front of it, and answers ``--rate`` of the
requests with a fault (503 SlowDown, a reset before the answer, a body cut in the middle, in
equal shares) and ``--rate`` of them late (``--latency-s``). Each stage runs as a subprocess, as
orchestrators run it, on the scene of the fault tests (``--size`` px, 128 px tiles), under the
default retry policy (``core/retry.py``: 5 attempts, backoff from 0.25 s with full jitter);
clean and faulty runs alternate, ``--repeat`` times, and the median wall time of each is
compared. The clean run is the bound: the retries can only add to it. The cost of the retries
should stay under 1.5x.

Usage: nice python bench/faults.py [--rate 0.1] [--repeat 3] [--stages prepare,detect]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/

from components.core.retry import (
    BACKOFF_VARIABLE,
    MAX_BACKOFF_VARIABLE,
    RetryPolicy,
)
from components.s3server import start_embedded_s3_process
from tests.fault_proxy import FaultProxy, FaultRates
from tests.fault_scenario import (
    BUCKET,
    STAGES,
    Scenario,
    fingerprint,
    put_scene_and_detector,
    run_stage,
)

LIMIT = 1.5


@dataclass
class Timing:
    stage: str
    clean_s: list[float]
    faulty_s: list[float]
    faults: int = 0
    requests: int = 0
    same_output: bool = True

    @property
    def ratio(self) -> float:
        return statistics.median(self.faulty_s) / statistics.median(self.clean_s)


def default_policy_env() -> dict[str, str]:
    """The default retry policy (the tests' fast backoff undone)."""
    policy = RetryPolicy()
    return {
        BACKOFF_VARIABLE: f"{policy.backoff_s:g}",
        MAX_BACKOFF_VARIABLE: f"{policy.max_backoff_s:g}",
    }


def timed_run(stage: str, root: str, endpoint: str) -> float:
    started = time.perf_counter()
    done = run_stage(stage, root, endpoint, **default_policy_env())
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{stage} failed through {endpoint}:\n{done.stderr[-3000:]}")
    return elapsed


def measure(stage: str, scenario: Scenario, proxy: FaultProxy, repeat: int) -> Timing:
    expected = scenario.clean(stage)  # also makes the stage's inputs; not timed
    timing = Timing(stage, [], [])
    for _ in range(repeat):
        timing.clean_s.append(timed_run(stage, f"s3://{BUCKET}/bench-clean", scenario.endpoint))
        faults, requests = proxy.injected(), proxy.requests
        timing.faulty_s.append(timed_run(stage, f"s3://{BUCKET}/bench-faulty", proxy.endpoint))
        timing.faults += proxy.injected() - faults
        timing.requests += proxy.requests - requests
        found = fingerprint(stage, f"s3://{BUCKET}/bench-faulty")
        if found != expected:
            print(f"{stage}: output differs from the clean run: {difference(found, expected)}")
        timing.same_output &= found == expected
    return timing


def difference(found: object, expected: object, where: str = "") -> str:
    """Where two fingerprints part: the first differing key or position, with both values."""
    if isinstance(found, dict) and isinstance(expected, dict):
        for key in sorted(set(found) | set(expected), key=str):
            if found.get(key) != expected.get(key):
                return difference(found.get(key), expected.get(key), f"{where}[{key!r}]")
    if isinstance(found, list | tuple) and isinstance(expected, list | tuple):
        if len(found) != len(expected):
            return f"{where}: {len(found)} items vs {len(expected)}"
        for index, (left, right) in enumerate(zip(found, expected, strict=True)):
            if left != right:
                return difference(left, right, f"{where}[{index}]")
    return f"{where}: {str(found)[:80]} vs {str(expected)[:80]}"


def report(timings: list[Timing], rate: float) -> bool:
    print(f"\nwall time per stage, median of runs, clean S3 vs {rate:.0%} faults + {rate:.0%} late")
    print(
        f"{'stage':<11}{'clean s':>9}{'faulty s':>10}{'ratio':>7}{'faults':>8}{'requests':>10}  output"
    )
    within = True
    for t in timings:
        ok = t.ratio <= LIMIT and t.same_output
        within &= ok
        print(
            f"{t.stage:<11}{statistics.median(t.clean_s):>9.1f}{statistics.median(t.faulty_s):>10.1f}"
            f"{t.ratio:>6.2f}x{t.faults:>8}{t.requests:>10}  "
            f"{'same as clean' if t.same_output else 'DIFFERENT'}{'' if ok else '  <-- over'}"
        )
    total_clean = sum(statistics.median(t.clean_s) for t in timings)
    total_faulty = sum(statistics.median(t.faulty_s) for t in timings)
    print(f"{'all':<11}{total_clean:>9.1f}{total_faulty:>10.1f}{total_faulty / total_clean:>6.2f}x")
    print(f"limit {LIMIT}x per stage: {'met' if within else 'NOT met'}")
    return within


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.1, help="share of requests that fail")
    parser.add_argument("--latency-s", type=float, default=0.05, help="delay of a late answer")
    parser.add_argument("--repeat", type=int, default=3, help="clean and faulty runs per stage")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--size", type=int, default=1024, help="scene edge in pixels")
    args = parser.parse_args(argv)
    server = start_embedded_s3_process((BUCKET,))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-faults-") as scratch:
            put_scene_and_detector(Path(scratch), args.size)
        scenario = Scenario(os.environ["AWS_ENDPOINT_URL"])
        rates = FaultRates.uniform(args.rate, latency_s=args.latency_s)
        with FaultProxy(scenario.endpoint, rates, seed=10) as proxy:
            timings = [
                measure(stage, scenario, proxy, args.repeat) for stage in args.stages.split(",")
            ]
        return 0 if report(timings, args.rate) else 1
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
