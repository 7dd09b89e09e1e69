"""A fake of the Kubernetes API's Deployment calls, for ``solarpipe deploy``: no cluster can run
here, so this real HTTP server on loopback answers the two calls the ``kubernetes`` client makes
(``GET`` and ``PATCH /apis/apps/v1/namespaces/<ns>/deployments/<name>``), records them, and
plays the Deployment controller. Nothing of solarpipe is faked.

What it does like the API server: bearer-token authentication (401), per-verb authorization
(403), 404 for unknown Deployments, strategic-merge patches (maps merged, ``null`` removes a
key, ``containers`` and ``env`` merged by ``name``), ``metadata.resourceVersion`` preconditions
(409), ``metadata.generation`` bumped on every spec change. What it does like the controller:
``status`` lags one read behind a new generation, then follows a scenario: ``ready_after``
reads until the new ReplicaSet is fully available (a surge pod first, then the old one gone),
or never ready, with ``ProgressDeadlineExceeded`` after ``deadline_after`` reads. A pod
template that served before (patched back) is ready at once: its old ReplicaSet still runs.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.json_http import JsonHandler, Recorded, ServedOnLoopback

DEPLOYMENT_PATH = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments/(?P<name>[^/?]+)$"
)
MERGED_BY_NAME = ("containers", "env")


@dataclass
class FakeKubernetes(ServedOnLoopback):
    """The fake's state: one Deployment and the controller's scenario for new generations."""

    deployment: dict[str, Any]
    token: str = "fake-token"
    ready_after: int | None = 3  # reads after a change until ready; None: never
    deadline_after: int | None = None  # reads until ProgressDeadlineExceeded; None: never
    forbidden_verbs: set[str] = field(default_factory=set)
    conflicts: int = 0  # PATCHes to answer 409 before accepting one
    unavailable_reads: int = 0  # GETs after the first PATCH to answer 503 (an API hiccup)
    requests: list[Recorded] = field(default_factory=list)
    served_templates: list[dict[str, Any]] = field(default_factory=list)
    reads_since_change: int = 0
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str) -> list[Recorded]:
        return [request for request in self.requests if request.method == method]

    # -- the controller -------------------------------------------------------------------

    def observe(self) -> dict[str, Any]:
        """Advance the controller by one read; the status it shows."""
        self.reads_since_change += 1
        spec, status = self.deployment["spec"], self.deployment["status"]
        desired = spec.get("replicas", 1)
        generation = self.deployment["metadata"]["generation"]
        template = spec["template"]
        if self.reads_since_change == 1 and status.get("observedGeneration", 0) < generation:
            return copy.deepcopy(status)  # the controller has not seen the new spec yet
        status["observedGeneration"] = generation
        reads = self.reads_since_change
        if template in self.served_templates or (self.ready_after and reads >= self.ready_after):
            status.update(replicas=desired, updatedReplicas=desired, availableReplicas=desired)
            status.update(readyReplicas=desired, unavailableReplicas=0)
            status["conditions"] = [progressing("True", "NewReplicaSetAvailable", "complete")]
            if template not in self.served_templates:
                self.served_templates.append(copy.deepcopy(template))
            return copy.deepcopy(status)
        # a surge pod of the new ReplicaSet, not ready; the old pods keep serving
        status.update(replicas=desired + 1, updatedReplicas=1, availableReplicas=desired)
        status.update(readyReplicas=desired, unavailableReplicas=1)
        status["conditions"] = [progressing("True", "ReplicaSetUpdated", "progressing")]
        if self.deadline_after is not None and reads >= self.deadline_after:
            status["conditions"] = [
                progressing(
                    "False",
                    "ProgressDeadlineExceeded",
                    'ReplicaSet "solarpipe-serve-new" has timed out progressing.',
                )
            ]
        return copy.deepcopy(status)

    def apply_patch(self, patch: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        metadata = self.deployment["metadata"]
        wanted_version = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflicts > 0 or (wanted_version and wanted_version != metadata["resourceVersion"]):
            self.conflicts = max(0, self.conflicts - 1)
            return 409, status_object(409, "Conflict", "the object has been modified")
        patch = copy.deepcopy(patch)
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        spec_before = copy.deepcopy(self.deployment["spec"])
        strategic_merge(self.deployment, patch)
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        if self.deployment["spec"] != spec_before:
            metadata["generation"] += 1
            self.reads_since_change = 0
        return 200, copy.deepcopy(self.deployment)


def progressing(status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Kubernetes' strategic merge, for what a Deployment patch here uses."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif key in MERGED_BY_NAME and isinstance(value, list):
            items = target.setdefault(key, [])
            for item in value:
                same = next((old for old in items if old.get("name") == item.get("name")), None)
                if same is None:
                    items.append(copy.deepcopy(item))
                else:
                    strategic_merge(same, item)
        else:
            target[key] = copy.deepcopy(value)


def _handler(state: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _serve(self, verb: str) -> None:
            request = self._read_request()
            with state.lock:
                state.requests.append(request)
                code, payload = self._answer(verb, request)
            self._reply(code, payload)

        def _answer(self, verb: str, request: Recorded) -> tuple[int, Any]:
            if request.headers.get("authorization") != f"Bearer {state.token}":
                return 401, status_object(401, "Unauthorized", "Unauthorized")
            match = DEPLOYMENT_PATH.match(self.path.split("?")[0])
            metadata = state.deployment["metadata"]
            if not match or (match["namespace"], match["name"]) != (
                metadata["namespace"],
                metadata["name"],
            ):
                return 404, status_object(404, "NotFound", "deployments.apps not found")
            if verb in state.forbidden_verbs:
                return 403, status_object(
                    403, "Forbidden", f"cannot {verb} resource deployments in API group apps"
                )
            if verb == "patch":
                if request.headers.get("content-type") != "application/strategic-merge-patch+json":
                    return 415, status_object(415, "UnsupportedMediaType", "patch type")
                return state.apply_patch(request.body)
            if state.unavailable_reads > 0 and state.calls("PATCH"):
                state.unavailable_reads -= 1
                return 503, status_object(503, "ServiceUnavailable", "etcd is busy")
            request.status = state.observe()
            return 200, copy.deepcopy(state.deployment)

        def do_GET(self) -> None:
            self._serve("get")

        def do_PATCH(self) -> None:
            self._serve("patch")

        def do_DELETE(self) -> None:
            self._serve("delete")

    return Handler


def serving_deployment(model_uri: str, replicas: int = 2) -> dict[str, Any]:
    """The serving Deployment as the API returns it after ``kubectl apply -k k8s/serving``."""
    labels = {"app.kubernetes.io/name": "solarpipe-serve"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "solarpipe-serve",
            "namespace": "solarpipe",
            "generation": 1,
            "resourceVersion": "100",
            "annotations": {},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "image": "solarpipe-serve:0.1.0",
                            "env": [
                                {"name": "SOLARPIPE_MODEL_URI", "value": model_uri},
                                {"name": "SOLARPIPE_SERVE_HOST", "value": "0.0.0.0"},
                            ],
                        }
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def start_fake_kubernetes(state: FakeKubernetes) -> FakeKubernetes:
    state.served_templates.append(copy.deepcopy(state.deployment["spec"]["template"]))
    state.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=state.server.serve_forever, daemon=True).start()
    return state


def write_kubeconfig(path: Any, state: FakeKubernetes, namespace: str = "solarpipe") -> None:
    """A kubeconfig whose current context is the fake server, with its token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": state.url}}],
        "users": [{"name": "deployer", "user": {"token": state.token}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "deployer", "namespace": namespace},
            }
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
