"""A fake of two remote APIs that cannot run here: Kubeflow Pipelines' v2beta1 REST API and the
Kubernetes API's Secret calls. It is a real HTTP server on loopback that answers the calls
``kfp.Client`` and the ``kubernetes`` client make for ``pipeline.py submit``, records what they
sent, and checks the bearer token like a real server would. Nothing of solarpipe is faked.

KFP calls: ``GET /apis/v2beta1/healthz``, ``GET|POST /apis/v2beta1/experiments``,
``POST /apis/v2beta1/runs``. Kubernetes calls: ``POST /api/v1/namespaces/<ns>/secrets`` (409
when it exists) and ``PUT /api/v1/namespaces/<ns>/secrets/<name>``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.json_http import JsonHandler, Recorded, ServedOnLoopback

KFP = "/apis/v2beta1"
SECRETS = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")


@dataclass
class FakeKubeflow(ServedOnLoopback):
    """What the fake server holds; ``token`` None means no authentication."""

    token: str | None = None
    multi_user: bool = False
    requests: list[Recorded] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None


def _handler(state: FakeKubeflow) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _record(self) -> Recorded | None:
            request = self._read_request()
            state.requests.append(request)
            if state.token and request.headers.get("authorization") != f"Bearer {state.token}":
                self._reply(401, {"code": 16, "message": "Unauthenticated: invalid bearer token"})
                return None
            return request

        def do_GET(self) -> None:
            if self._record() is None:
                return
            url = urlparse(self.path)
            if url.path == f"{KFP}/healthz":
                self._reply(
                    200, {"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": state.multi_user}
                )
            elif url.path == f"{KFP}/experiments":
                query = parse_qs(url.query)
                wanted = None
                for predicate in json.loads(query.get("filter", ["{}"])[0]).get("predicates", []):
                    if predicate.get("key") == "display_name":
                        wanted = predicate.get("stringValue") or predicate.get("string_value")
                found = [e for e in state.experiments if wanted in (None, e["display_name"])]
                self._reply(200, {"experiments": found, "total_size": len(found)})
            else:
                self._reply(404, {"code": 5, "message": f"no route {url.path}"})

        def do_POST(self) -> None:
            request = self._record()
            if request is None:
                return
            path = urlparse(self.path).path
            if path == f"{KFP}/experiments":
                experiment = {**request.body, "experiment_id": str(uuid.uuid4())}
                state.experiments.append(experiment)
                self._reply(200, experiment)
            elif path == f"{KFP}/runs":
                run = {**request.body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
                state.runs.append(run)
                self._reply(200, {k: v for k, v in run.items() if k != "pipeline_spec"})
            elif match := SECRETS.match(path):
                key = (match["namespace"], request.body["metadata"]["name"])
                if key in state.secrets:
                    self._reply(409, _status(409, "AlreadyExists", f"secrets {key[1]!r} exists"))
                    return
                state.secrets[key] = request.body
                self._reply(201, request.body)
            else:
                self._reply(404, {"code": 5, "message": f"no route {path}"})

        def do_PUT(self) -> None:
            request = self._record()
            if request is None:
                return
            match = SECRETS.match(urlparse(self.path).path)
            if not match or not match["name"]:
                self._reply(404, {"code": 5, "message": "no route"})
                return
            key = (match["namespace"], match["name"])
            if key not in state.secrets:
                self._reply(404, _status(404, "NotFound", f"secrets {key[1]!r} not found"))
                return
            state.secrets[key] = request.body
            self._reply(200, request.body)

    return Handler


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def start_fake_kubeflow(token: str | None = None, multi_user: bool = False) -> FakeKubeflow:
    """Serve the fake APIs on 127.0.0.1 (a free port) in a background thread."""
    state = FakeKubeflow(token=token, multi_user=multi_user)
    state.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=state.server.serve_forever, daemon=True).start()
    return state


def kubeconfig_for(fake: FakeKubeflow, token: str = "kube-token") -> str:
    """A kubeconfig (YAML text) whose cluster is the fake server."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
    )
