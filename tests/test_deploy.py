"""``solarpipe deploy`` against a fake Kubernetes API server.

No Kubernetes cluster can run here, so ``tests/fake_kube_api.py`` fakes only the remote API: a
real HTTP server on loopback that answers the Deployment GET and PATCH the ``kubernetes`` client
sends, records them, and plays the Deployment controller (a rollout that becomes ready, or one
that never does and hits its progress deadline). The deploy code, the client and its kubeconfig
handling are the real ones.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.cli import main as solarpipe
from tests.fake_kube_api import (
    FakeKubernetes,
    serving_deployment,
    start_fake_kubernetes,
    write_kubeconfig,
)

pytestmark = pytest.mark.timeout(60)

OLD_MODEL = "s3://solarpipe/runs/run-1/export"
NEW_MODEL = "s3://solarpipe/runs/run-2/export"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    """The fake API with the serving Deployment on OLD_MODEL; the kubeconfig points at it."""
    state = start_fake_kubernetes(FakeKubernetes(serving_deployment(OLD_MODEL)))
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, state)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield state
    state.stop()


def deploy(*extra: str, model_uri: str = NEW_MODEL) -> int:
    return solarpipe(
        [
            "deploy",
            "--model-uri", model_uri,
            "--run-id", "run-2",
            "--poll-interval", "0.01",
            "--timeout", "20",
            *extra,
        ]
    )  # fmt: skip


def error_line(err: str) -> str:
    """The one error line (progress lines may come before it)."""
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]
    return errors[0]


def template_env(state: FakeKubernetes) -> dict[str, str]:
    container = state.deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def test_ready_rollout_patches_the_model_uri_and_records_the_run(kube, capsys) -> None:
    assert deploy() == 0

    (patch,) = kube.calls("PATCH")
    assert patch.path == "/apis/apps/v1/namespaces/solarpipe/deployments/solarpipe-serve"
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    recorded = {"solarpipe.io/run-id": "run-2", "solarpipe.io/model-uri": NEW_MODEL}
    assert patch.body == {
        "metadata": {
            "annotations": {
                **recorded,
                "kubernetes.io/change-cause": f"solarpipe deploy: run run-2: {NEW_MODEL}",
            },
            "resourceVersion": "100",
        },
        "spec": {
            "template": {
                "metadata": {"annotations": recorded},
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "env": [{"name": "SOLARPIPE_MODEL_URI", "value": NEW_MODEL}],
                        }
                    ]
                },
            }
        },
    }
    assert template_env(kube) == {
        "SOLARPIPE_MODEL_URI": NEW_MODEL,
        "SOLARPIPE_SERVE_HOST": "0.0.0.0",
    }
    # polling: the controller's lag, the surge pod, then the new ReplicaSet fully available
    polled = [
        (s["observedGeneration"], s["updatedReplicas"], s["availableReplicas"], s["replicas"])
        for s in (request.status for request in kube.calls("GET")[1:])
    ]
    assert polled == [(1, 2, 2, 2), (2, 1, 2, 3), (2, 2, 2, 2)]
    assert not kube.calls("DELETE")
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(
        f"deploy: deployment solarpipe/solarpipe-serve serves {NEW_MODEL} (run run-2): "
        "2 of 2 replicas available after"
    )


def test_rollout_that_never_becomes_ready_fails_and_the_old_model_is_restored(kube, capsys) -> None:
    kube.ready_after, kube.deadline_after = None, 4
    template_before = copy.deepcopy(kube.deployment["spec"]["template"])

    assert deploy() == 1

    error = error_line(capsys.readouterr().err)
    assert error.startswith(
        f"solarpipe deploy: error: deployment solarpipe/solarpipe-serve did not become ready "
        f"with {NEW_MODEL}: ProgressDeadlineExceeded: "
    )
    assert f"rolled the Deployment back to {OLD_MODEL}" in error
    assert error.endswith("the pods of the previous model keep serving")
    _forward, back = kube.calls("PATCH")
    assert back.body == {
        "metadata": {
            "annotations": {
                "solarpipe.io/run-id": None,
                "solarpipe.io/model-uri": OLD_MODEL,
                "kubernetes.io/change-cause": None,
            }
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "solarpipe.io/run-id": None,
                        "solarpipe.io/model-uri": OLD_MODEL,
                    }
                },
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "env": [{"name": "SOLARPIPE_MODEL_URI", "value": OLD_MODEL}],
                        }
                    ]
                },
            }
        },
    }
    # the pod template is the old one again, except the model annotation the old one lacked
    restored = kube.deployment["spec"]["template"]
    assert restored["spec"] == template_before["spec"]
    assert restored["metadata"]["annotations"] == {"solarpipe.io/model-uri": OLD_MODEL}
    assert not kube.calls("DELETE")
    # while it waited, the old pods were available all along
    assert all(request.status["availableReplicas"] == 2 for request in kube.calls("GET"))


def test_first_deploy_adds_the_model_variable_the_manifest_leaves_out(kube) -> None:
    container = kube.deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [item for item in container["env"] if item["name"] != "SOLARPIPE_MODEL_URI"]

    assert deploy() == 0

    assert template_env(kube) == {
        "SOLARPIPE_SERVE_HOST": "0.0.0.0",
        "SOLARPIPE_MODEL_URI": NEW_MODEL,
    }


def test_failed_first_deploy_has_nothing_to_roll_back(kube, capsys) -> None:
    container = kube.deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [item for item in container["env"] if item["name"] != "SOLARPIPE_MODEL_URI"]
    kube.ready_after, kube.deadline_after = None, 3

    assert deploy() == 1

    assert len(kube.calls("PATCH")) == 1
    assert "it is the first model deployed" in error_line(capsys.readouterr().err)


def test_no_rollback_leaves_the_new_spec_and_says_how_to_undo(kube, capsys) -> None:
    kube.ready_after, kube.deadline_after = None, 3

    assert deploy("--no-rollback") == 1

    assert len(kube.calls("PATCH")) == 1
    assert template_env(kube)["SOLARPIPE_MODEL_URI"] == NEW_MODEL
    error = error_line(capsys.readouterr().err)
    assert "kubectl -n solarpipe rollout undo deployment/solarpipe-serve" in error


def test_rollout_still_progressing_at_the_timeout_fails_naming_the_wait(kube, capsys) -> None:
    kube.ready_after, kube.deadline_after = None, None

    assert deploy("--timeout", "0.3") == 1

    error = error_line(capsys.readouterr().err)
    assert "not ready within 0.3 s (1 of 2 new replicas updated)" in error
    assert len(kube.calls("PATCH")) == 2  # rolled back


def test_concurrent_change_is_read_again_and_patched(kube) -> None:
    kube.conflicts = 1

    assert deploy() == 0

    first, second = kube.calls("PATCH")
    assert first.body["metadata"]["resourceVersion"] == "100"
    assert second.body["metadata"]["resourceVersion"] == "100"  # re-read: unchanged here
    assert template_env(kube)["SOLARPIPE_MODEL_URI"] == NEW_MODEL


def test_api_hiccups_while_waiting_are_read_through(kube) -> None:
    kube.unavailable_reads = 2

    assert deploy() == 0

    reads = kube.calls("GET")
    assert sum(request.status is None for request in reads) == 2  # the two 503s
    assert template_env(kube)["SOLARPIPE_MODEL_URI"] == NEW_MODEL


def test_missing_deployment_says_how_to_create_it(kube, capsys) -> None:
    assert deploy("--deployment", "nope") == 1
    assert error_line(capsys.readouterr().err) == (
        "solarpipe deploy: error: deployment solarpipe/nope not found (HTTP 404): "
        "create it with `kubectl apply -k k8s/serving`"
    )


def test_forbidden_patch_names_the_permissions_needed(kube, capsys) -> None:
    kube.forbidden_verbs = {"patch"}
    assert deploy() == 1
    error = error_line(capsys.readouterr().err)
    assert error.startswith(
        "solarpipe deploy: error: deployment solarpipe/solarpipe-serve: forbidden"
    )
    assert "get and patch on deployments" in error
    assert template_env(kube)["SOLARPIPE_MODEL_URI"] == OLD_MODEL


def test_rejected_token_is_one_line(kube, capsys) -> None:
    kube.token = "another"
    assert deploy() == 1
    assert "rejected the credentials (HTTP 401)" in error_line(capsys.readouterr().err)


def test_unknown_container_is_named(kube, capsys) -> None:
    assert deploy("--container", "server") == 1
    assert "has no container 'server' (containers: serve)" in error_line(capsys.readouterr().err)
    assert not kube.calls("PATCH")


def test_without_any_kubernetes_configuration_says_what_it_needs(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert deploy() == 1
    error = error_line(capsys.readouterr().err)
    assert "needs the Kubernetes API: run it in a pod, or give a kubeconfig" in error


def test_missing_run_id_is_a_usage_error(kube, monkeypatch, capsys) -> None:
    monkeypatch.delenv("KFP_RUN_ID", raising=False)
    status = solarpipe(["deploy", "--model-uri", NEW_MODEL])
    assert status == 2
    assert "--run-id" in capsys.readouterr().err
    assert not kube.requests


def test_module_entrypoint_reads_the_run_id_from_kubeflow(kube, tmp_path: Path) -> None:
    """`python -m components.deploy` (what the pipeline task runs), run id from KFP_RUN_ID."""
    done = subprocess.run(
        [
            sys.executable, "-m", "components.deploy",
            "--model-uri", NEW_MODEL, "--poll-interval", "0.01",
        ],
        cwd=REPO,
        env={**os.environ, "KFP_RUN_ID": "run-kfp"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(run run-kfp)" in done.stdout
    (patch,) = kube.calls("PATCH")
    assert patch.body["metadata"]["annotations"]["solarpipe.io/run-id"] == "run-kfp"


def test_unreachable_api_is_one_line(kube, capsys) -> None:
    kube.stop()
    assert deploy() == 1
    error = error_line(capsys.readouterr().err)
    assert f"Kubernetes API at {kube.url} unreachable" in error
