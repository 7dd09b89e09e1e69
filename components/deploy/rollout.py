"""What a deploy changes in the serving Deployment, and how far a rollout has come.

Pure functions over the ``kubernetes`` client's ``V1Deployment``: the strategic-merge patch
that points the serving container at a model (``SOLARPIPE_MODEL_URI``) and records the run
in annotations, and the rollout state read the way ``kubectl rollout status`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODEL_URI_VARIABLE = "SOLARPIPE_MODEL_URI"
RUN_ID_ANNOTATION = "solarpipe.io/run-id"
MODEL_URI_ANNOTATION = "solarpipe.io/model-uri"
# `kubectl rollout history` shows it (the controller copies it onto the ReplicaSet).
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class ServedModel:
    """What the Deployment serves: the model URI and the annotations that record it."""

    model_uri: str
    run_id: str | None
    change_cause: str | None


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands: finished, failed for good, or still going (``message`` says)."""

    done: bool
    failed: bool
    message: str


def serving_container(deployment: Any, container_name: str) -> Any:
    """The container named ``container_name`` (or the only one when the name is empty)."""
    containers = deployment.spec.template.spec.containers
    if not container_name and len(containers) == 1:
        return containers[0]
    for container in containers:
        if container.name == container_name:
            return container
    names = ", ".join(container.name for container in containers)
    raise LookupError(f"has no container {container_name!r} (containers: {names})")


def served_model(deployment: Any, container_name: str) -> ServedModel:
    """The model the Deployment's pod template serves now."""
    container = serving_container(deployment, container_name)
    variable = next((e for e in container.env or [] if e.name == MODEL_URI_VARIABLE), None)
    if variable is not None and variable.value_from is not None:
        raise LookupError(f"sets {MODEL_URI_VARIABLE} with valueFrom; deploy sets it by value")
    template_annotations = deployment.spec.template.metadata.annotations or {}
    annotations = deployment.metadata.annotations or {}
    return ServedModel(
        model_uri=(variable.value or "") if variable is not None else "",
        run_id=template_annotations.get(RUN_ID_ANNOTATION),
        change_cause=annotations.get(CHANGE_CAUSE_ANNOTATION),
    )


def model_patch(
    container_name: str, model: ServedModel, resource_version: str | None = None
) -> dict[str, Any]:
    """The strategic-merge patch that makes the pod template serve ``model``.

    A ``None`` annotation is removed, so patching the previous model back restores the
    previous pod template exactly (and Kubernetes scales its ReplicaSet back up). With
    ``resource_version`` the patch applies only to that version (409 Conflict otherwise).
    """
    recorded = {RUN_ID_ANNOTATION: model.run_id, MODEL_URI_ANNOTATION: model.model_uri or None}
    metadata: dict[str, Any] = {
        "annotations": {**recorded, CHANGE_CAUSE_ANNOTATION: model.change_cause}
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    container = {
        "name": container_name,
        "env": [{"name": MODEL_URI_VARIABLE, "value": model.model_uri}],
    }
    return {
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {"annotations": recorded},
                "spec": {"containers": [container]},
            }
        },
    }


def rollout_state(deployment: Any, generation: int) -> RolloutState:
    """The rollout of spec ``generation``, judged as ``kubectl rollout status`` does."""
    status = deployment.status
    if (status.observed_generation or 0) < generation:
        return RolloutState(False, False, "waiting for the controller to see the new spec")
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == PROGRESS_DEADLINE_EXCEEDED:
            return RolloutState(False, True, f"{PROGRESS_DEADLINE_EXCEEDED}: {condition.message}")
    desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    available = status.available_replicas or 0
    if updated < desired:
        return RolloutState(False, False, f"{updated} of {desired} new replicas updated")
    if total > updated:
        return RolloutState(False, False, f"{total - updated} old replicas pending termination")
    if available < updated:
        return RolloutState(False, False, f"{available} of {updated} new replicas available")
    return RolloutState(True, False, f"{available} of {desired} replicas available")
