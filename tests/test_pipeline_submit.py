"""``pipeline.py submit`` against a fake Kubeflow Pipelines API (tests/fake_kfp_api.py: a local
HTTP server speaking the v2beta1 REST calls and the Kubernetes Secret calls, because neither
server can run here). The command under test runs for real, as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.core.params import load_params
from components.core.stages import STAGE_NAMES
from components.s3server import free_port
from tests.fake_kfp_api import FakeKubeflow, kubeconfig_for, start_fake_kubeflow

REPO = Path(__file__).resolve().parents[1]
TOKEN = "good-token"
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"


@pytest.fixture()
def fake() -> Iterator[FakeKubeflow]:
    server = start_fake_kubeflow(token=TOKEN)
    yield server
    server.stop()


def submit(
    *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "KF_PIPELINES", "KFP_", "KUBECONFIG"))
    }
    environment.update({"AWS_SECRET_ACCESS_KEY": SECRET_VALUE, "AWS_ACCESS_KEY_ID": "key-id"})
    if token:
        environment["KF_PIPELINES_TOKEN"] = token
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "submit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=120,
    )


def test_submit_uploads_the_compiled_spec_with_the_set_parameters(fake: FakeKubeflow) -> None:
    done = submit(
        "--host",
        fake.url,
        "--experiment",
        "nightly",
        "--run-name",
        "first run",
        "--set",
        "train.epochs=3",
        "--set",
        "data.bucket=other-bucket",
    )
    assert done.returncode == 0, done.stderr
    [run] = fake.runs
    assert done.stdout.strip().endswith(f"{fake.url}/#/runs/details/{run['run_id']}")
    assert run["display_name"] == "first run"
    [experiment] = fake.experiments
    assert experiment["display_name"] == "nightly"
    assert run["experiment_id"] == experiment["experiment_id"]
    shipped = load_params(REPO / "params.yaml")
    sent = run["runtime_config"]["parameters"]
    assert sorted(sent) == ["data", "train"], "the sections the run changes, whole"
    assert sent["train"] == {**shipped.train.model_dump(mode="json"), "epochs": 3}
    assert sent["data"] == {**shipped.data.model_dump(mode="json"), "bucket": "other-bucket"}
    assert run["service_account"] == "solarpipe-pipeline"

    spec = run["pipeline_spec"]["pipeline_spec"]
    executors = spec["deploymentSpec"]["executors"]
    assert {f"exec-{name}" for name in ["params", *STAGE_NAMES]} <= set(executors)
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    train_default = defaults["train"]["defaultValue"]
    assert train_default["epochs"] == 3  # --set shapes the compiled defaults too
    assert train_default["batch_size"] == shipped.train.batch_size  # the rest from params.yaml
    executors = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert len(executors["deploymentSpec"]["executors"]) == len(STAGE_NAMES) + 3

    every_request = str([(r.path, r.headers, r.body) for r in fake.requests])
    assert SECRET_VALUE not in every_request
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake.requests)


def test_second_submit_reuses_the_experiment(fake: FakeKubeflow) -> None:
    for _ in range(2):
        done = submit("--host", fake.url)
        assert done.returncode == 0, done.stderr
    assert len(fake.experiments) == 1
    assert fake.experiments[0]["display_name"] == "solarpipe"
    assert len(fake.runs) == 2


def test_no_cache_turns_caching_off_for_every_task(fake: FakeKubeflow) -> None:
    assert submit("--host", fake.url).returncode == 0
    assert submit("--host", fake.url, "--no-cache").returncode == 0
    cached, uncached = (
        run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"] for run in fake.runs
    )
    assert cached["prepare"]["cachingOptions"] == {"enableCache": True}
    assert cached["preprocess"]["cachingOptions"] in ({}, {"enableCache": False})
    assert all(task["cachingOptions"] in ({}, {"enableCache": False}) for task in uncached.values())


def test_multi_user_run_goes_to_the_namespace() -> None:
    fake = start_fake_kubeflow(token=TOKEN, multi_user=True)
    try:
        done = submit("--host", fake.url, "--namespace", "team-solar")
    finally:
        fake.stop()
    assert done.returncode == 0, done.stderr
    assert fake.experiments[0]["namespace"] == "team-solar"


def test_rejected_token_is_one_line_and_exit_1(fake: FakeKubeflow) -> None:
    done = submit("--host", fake.url, token="expired-token")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "HTTP 401" in line and "token was rejected" in line
    assert not fake.runs


def test_missing_token_says_it_needs_one(fake: FakeKubeflow) -> None:
    done = submit("--host", fake.url, token=None)
    assert done.returncode == 1
    assert "needs a token" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_unreachable_host_is_one_line_and_exit_1() -> None:
    done = submit("--host", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "unreachable" in line


def test_unknown_parameter_is_exit_2_naming_it(fake: FakeKubeflow) -> None:
    done = submit("--host", fake.url, "--set", "train.epoch=3")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "train.epoch: unknown key" in line
    assert not fake.requests


def test_wrong_value_type_is_exit_2_naming_the_key(fake: FakeKubeflow) -> None:
    done = submit("--host", fake.url, "--set", "train.epochs=many")
    assert done.returncode == 2
    assert "train.epochs" in done.stderr


def test_ensure_secret_creates_then_updates_the_s3_secret(fake: FakeKubeflow, tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(fake, token=TOKEN))
    env = {"KUBECONFIG": str(kubeconfig), "AWS_DEFAULT_REGION": "eu-central-2"}
    endpoint = "http://minio.minio.svc.cluster.local:9000"
    first = submit("--host", fake.url, "--ensure-secret", "--s3-endpoint", endpoint, env=env)
    assert first.returncode == 0, first.stderr
    assert "secret solarpipe/solarpipe-s3 created" in first.stdout
    assert SECRET_VALUE not in first.stdout + first.stderr
    secret = fake.secrets[("solarpipe", "solarpipe-s3")]
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": SECRET_VALUE,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "eu-central-2",
    }
    second = submit("--host", fake.url, "--ensure-secret", "--s3-endpoint", endpoint, env=env)
    assert second.returncode == 0, second.stderr
    assert "secret solarpipe/solarpipe-s3 updated" in second.stdout
    assert len(fake.runs) == 2


def test_ensure_secret_refuses_a_loopback_endpoint(fake: FakeKubeflow, tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(fake, token=TOKEN))
    env = {"KUBECONFIG": str(kubeconfig), "AWS_ENDPOINT_URL": "http://127.0.0.1:9555"}
    done = submit("--host", fake.url, "--ensure-secret", env=env)
    assert done.returncode == 2
    assert "loopback" in done.stderr and "--s3-endpoint" in done.stderr
    assert not fake.secrets and not fake.runs


def test_a_gpu_run_with_the_quickstarts_time_cap_is_warned_about(fake: FakeKubeflow) -> None:
    capped = submit("--host", fake.url)
    assert capped.returncode == 0, capped.stderr
    assert "warning: train.max_minutes=7.5 caps training on the GPU pool" in capped.stderr
    profiled = submit("--host", fake.url, "--profile", "gpu")
    assert profiled.returncode == 0, profiled.stderr
    assert "warning" not in profiled.stderr
    spec = fake.runs[-1]["pipeline_spec"]["pipeline_spec"]
    train = spec["root"]["inputDefinitions"]["parameters"]["train"]["defaultValue"]
    assert train["arch"] == "fasterrcnn_resnet50_fpn_v2"
