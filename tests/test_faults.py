"""Every stage through a misbehaving S3 (``tests/fault_proxy.py``: 503 SlowDown, connections
reset before the answer, bodies cut in the middle, late answers, at 15% of requests) writes
exactly what a clean run writes; and when every try fails, the stage says so in one line, exits
1 and leaves its previous output as it was.

The clean runs and the scene come from ``tests/fault_scenario.py``. Stages run as subprocesses
through the proxy: prepare reads the raster with GDAL and uploads tiles, preprocess lists and
reads export objects, train streams tiles in a DataLoader worker and publishes its checkpoints,
export reads the checkpoint, evaluate and detect read the model (and tiles or the raster).
"""

from __future__ import annotations

import pytest

from components.core import uri as uri_io
from tests.fault_proxy import CUT, RESET, SLOWDOWN, FaultProxy, FaultRates
from tests.fault_scenario import BUCKET, STAGES, Scenario, fingerprint, output_of, run_stage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

FAULT_RATE = 0.15
# At 15% faults a request fails 8 times in a row once in 400 million tries: a run of the suite
# (a few thousand requests) does not fail by chance. The default policy is 5 tries.
ATTEMPTS = "8"


# Every run meets each fault at least once (its first GETs and PUTs), then 15% by chance.
FIRST_FAULTS = {"GET": [CUT, RESET, SLOWDOWN], "PUT": [RESET, SLOWDOWN]}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_through_a_faulty_s3_writes_what_a_clean_run_writes(
    stage: str, scenario: Scenario
) -> None:
    expected = scenario.clean(stage)
    root = f"s3://{BUCKET}/faulty"
    rates = FaultRates.uniform(FAULT_RATE)
    with FaultProxy(scenario.endpoint, rates, seed=14, first=FIRST_FAULTS) as proxy:
        done = run_stage(stage, root, proxy.endpoint, SOLARPIPE_S3_MAX_ATTEMPTS=ATTEMPTS)

    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(stage, root) == expected
    assert proxy.counts[CUT] >= 1 and proxy.counts[RESET] >= 2, dict(proxy.counts)
    assert proxy.counts[SLOWDOWN] >= 2, dict(proxy.counts)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def _gets(method: str, path: str) -> bool:
    return method == "GET"


def _puts(method: str, path: str) -> bool:
    return method == "PUT"


@pytest.mark.parametrize(
    ("stage", "rates", "selector", "words"),
    [
        ("preprocess", FaultRates(slowdown=1.0), _gets, ["SlowDown", "/clean/manifest.json"]),
        ("preprocess", FaultRates(reset=1.0), _puts, ["annotations.json"]),
        ("prepare", FaultRates(cut=1.0), _gets, [f"s3://{BUCKET}/scene.tif"]),
        ("train", FaultRates(slowdown=1.0), _gets, ["SlowDown", f"s3://{BUCKET}/clean/tiles/"]),
    ],
    ids=["preprocess-reads", "preprocess-writes", "prepare-raster", "train-tiles-in-a-worker"],
)
def test_when_every_try_fails_the_stage_says_so_in_one_line_and_keeps_its_output(
    stage: str,
    rates: FaultRates,
    selector,
    words: list[str],
    scenario: Scenario,
) -> None:
    """The previous output is a clean run's; the failing run must leave it byte for byte."""
    scenario.clean("preprocess")
    root = f"s3://{BUCKET}/always-{stage}"
    assert run_stage(stage, root, scenario.endpoint).returncode == 0
    kept = _output_bytes(stage, root)
    allowed = selector
    if stage == "train":  # reads of annotations.json must pass for train to reach the tiles
        allowed = lambda method, path: method == "GET" and "/tiles/" in path  # noqa: E731
    with FaultProxy(scenario.endpoint, rates, seed=1, selector=allowed) as proxy:
        done = run_stage(stage, root, proxy.endpoint, SOLARPIPE_S3_MAX_ATTEMPTS="3")

    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    line = _last_line(done.stderr)
    assert line.startswith(f"components.{stage}: error: ")
    assert "gave up after 3 attempts" in line
    assert all(word in line for word in words), line
    assert _output_bytes(stage, root) == kept


def _output_bytes(stage: str, root: str) -> dict[str, bytes]:
    out = uri_io.join(root, "manifest.json") if stage == "prepare" else output_of(stage, root)
    if stage in ("prepare", "preprocess"):
        return {out: uri_io.read_bytes(out)}
    return {info.uri: uri_io.read_bytes(info.uri) for info in uri_io.list_objects(out)}
