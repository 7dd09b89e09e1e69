import time
from tests.fault_scenario import run_stage, fingerprint, CLEAN, BUCKET

def test_determinism(scenario):
    scenario.clean("train")
    for stage in ("train",):
        t = time.time()
        done = run_stage(stage, f"s3://{BUCKET}/again", scenario.server.endpoint)
        assert done.returncode == 0, done.stderr[-2000:]
        a, b = fingerprint(stage, f"s3://{BUCKET}/again"), scenario.clean(stage)
        print(stage, time.time() - t, a[0] == b[0], a[1] == b[1], a[0], b[0])
