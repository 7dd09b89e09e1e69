"""Roll the serving Deployment to a new model, wait for the rollout, report how it ended.

The patch changes the pod template (model URI, run annotations), so Kubernetes starts a new
ReplicaSet and scales the old one down only as new pods become ready (the serving manifest
allows no unavailable pod): a model that never becomes ready never takes traffic. Then it
polls the Deployment until the rollout is complete, Kubernetes reports its progress deadline
exceeded, or ``timeout_s`` passes. On failure it patches the previous model back (unless
told not to), which returns the pod template to the old ReplicaSet's; nothing is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from components.core.errors import NotFoundError, SolarpipeError, UsageError
from components.core.kube import api_status, call_api, is_transient, load_configuration
from components.core.logs import get_logger
from components.deploy.rollout import (
    RolloutState,
    ServedModel,
    model_patch,
    rollout_state,
    served_model,
)

log = get_logger("components.deploy")
PERMISSIONS = "get and patch on deployments (apps) in the namespace (k8s/serving/deploy-rbac.yaml)"
CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class DeployRequest:
    """What to roll where, and how long to wait for it."""

    model_uri: str
    run_id: str
    deployment: str
    namespace: str
    container: str
    timeout_s: float
    poll_s: float
    rollback: bool

    def check(self) -> None:
        if not self.model_uri:
            raise UsageError("--model-uri is empty: pass the export stage's output URI")
        if not self.run_id:
            raise UsageError("no run id: pass --run-id (Kubeflow sets KFP_RUN_ID)")
        if self.timeout_s <= 0 or self.poll_s <= 0:
            raise UsageError("--timeout and --poll-interval must be positive")


class Deployments:
    """The Deployment calls a deploy makes, each failure a one-line error naming the object."""

    def __init__(self, name: str, namespace: str) -> None:
        from kubernetes import client

        self.api = client.AppsV1Api()
        self.name, self.namespace = name, namespace
        self.what = f"deployment {namespace}/{name}"

    def read(self) -> Any:
        return call_api(
            self.what,
            self.api.read_namespaced_deployment,
            self.name,
            self.namespace,
            needs=PERMISSIONS,
        )

    def patch(self, body: dict[str, Any]) -> Any:
        return call_api(
            self.what,
            self.api.patch_namespaced_deployment,
            self.name,
            self.namespace,
            body,
            needs=PERMISSIONS,
        )


def patch_model(deployments: Deployments, request: DeployRequest) -> tuple[ServedModel, int]:
    """Point the Deployment at the new model; returns (the model it served, the new generation).

    The patch carries the resourceVersion it was computed from, so a concurrent change (another
    deploy, an autoscaler) makes it fail with 409 instead of being overwritten; it is retried.
    """
    target = ServedModel(
        request.model_uri,
        request.run_id,
        f"solarpipe deploy: run {request.run_id}: {request.model_uri}",
    )
    for attempt in range(CONFLICT_RETRIES):
        current = deployments.read()
        try:
            previous = served_model(current, request.container)
        except LookupError as exc:
            raise SolarpipeError(f"{deployments.what} {exc}") from exc
        body = model_patch(request.container, target, current.metadata.resource_version)
        try:
            patched = deployments.patch(body)
        except SolarpipeError as exc:
            if api_status(exc) != 409:
                raise
            log.info(
                "%s changed meanwhile (attempt %d): reading it again", deployments.what, attempt + 1
            )
            continue
        return previous, int(patched.metadata.generation)
    raise SolarpipeError(f"{deployments.what} kept changing while being patched; try again")


def wait_for_rollout(
    deployments: Deployments, generation: int, request: DeployRequest
) -> RolloutState:
    """Poll until the rollout of ``generation`` is done or failed, or the timeout passes."""
    deadline = time.monotonic() + request.timeout_s
    last_message = ""
    while True:
        try:
            state = rollout_state(deployments.read(), generation)
        except SolarpipeError as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            log.warning("%s (reading it again)", exc)
            time.sleep(request.poll_s)
            continue
        if state.done or state.failed:
            return state
        if state.message != last_message:
            log.info("%s: %s", deployments.what, state.message)
            last_message = state.message
        if time.monotonic() >= deadline:
            return RolloutState(
                False, True, f"not ready within {request.timeout_s:g} s ({state.message})"
            )
        time.sleep(min(request.poll_s, max(0.0, deadline - time.monotonic())))


def undo(deployments: Deployments, request: DeployRequest, previous: ServedModel) -> str:
    """Patch the previous model back (or say how to); returns what happened, for the report."""
    if not previous.model_uri:
        return "it is the first model deployed, so there is nothing to roll back to"
    if not request.rollback:
        return (
            f"the Deployment still points at it (kubectl -n {request.namespace} rollout undo "
            f"deployment/{request.deployment} goes back)"
        )
    deployments.patch(model_patch(request.container, previous))
    return f"rolled the Deployment back to {previous.model_uri or 'its previous spec'}"


def deploy(request: DeployRequest) -> str:
    """Roll the Deployment to ``request.model_uri``; returns the success line, raises on failure."""
    request.check()
    default_namespace = load_configuration("solarpipe deploy")
    namespace = request.namespace or default_namespace
    request = DeployRequest(**{**request.__dict__, "namespace": namespace})
    deployments = Deployments(request.deployment, namespace)
    started = time.monotonic()
    try:
        previous, generation = patch_model(deployments, request)
    except NotFoundError as exc:
        raise NotFoundError(f"{exc}: create it with `kubectl apply -k k8s/serving`") from exc
    log.info(
        "%s: %s → %s (run %s)",
        deployments.what,
        previous.model_uri or "(none)",
        request.model_uri,
        request.run_id,
    )
    state = wait_for_rollout(deployments, generation, request)
    seconds = time.monotonic() - started
    if state.done:
        return (
            f"deploy: {deployments.what} serves {request.model_uri} (run {request.run_id}): "
            f"{state.message} after {seconds:.0f} s"
        )
    outcome = undo(deployments, request, previous)
    raise SolarpipeError(
        f"{deployments.what} did not become ready with {request.model_uri}: {state.message}; "
        f"{outcome}; the pods of the previous model keep serving"
    )
