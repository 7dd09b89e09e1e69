"""The S3 Secret every task reads its endpoint and keys from: built from the local AWS variables
and created or updated in the cluster with the ``kubernetes`` client (components/core/kube.py)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from components.core.errors import SolarpipeError, UsageError
from components.core.kube import api_status, call_api, load_configuration

# Secret keys, each the name of the environment variable it becomes in the pods. The first two
# must exist; AWS S3 itself needs no endpoint, and the region has a default.
REQUIRED_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_S3_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def s3_secret_data(endpoint: str | None) -> dict[str, str]:
    """The Secret's keys from the local AWS variables; the endpoint must be reachable in-cluster."""
    missing = [name for name in REQUIRED_S3_KEYS if not os.environ.get(name)]
    if missing:
        raise UsageError(f"--ensure-secret needs {' and '.join(missing)} in the environment")
    data = {name: os.environ[name] for name in REQUIRED_S3_KEYS}
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        if urlparse(endpoint).scheme not in ("http", "https"):
            raise UsageError(f"S3 endpoint {endpoint!r} must start with http:// or https://")
        if is_loopback(endpoint):
            raise UsageError(
                f"S3 endpoint {endpoint} is loopback, which pods cannot reach: pass "
                "--s3-endpoint with an address the cluster reaches"
            )
        data["AWS_ENDPOINT_URL"] = endpoint
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        data["AWS_DEFAULT_REGION"] = region
    return data


def ensure_s3_secret(namespace: str, name: str, endpoint: str | None) -> str:
    """Create the Secret, or replace it when it exists; returns one line saying which (no values)."""
    from kubernetes import client

    data = s3_secret_data(endpoint)
    load_configuration("--ensure-secret")
    core = client.CoreV1Api()
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "solarpipe"}),
        type="Opaque",
        string_data=data,
    )
    where = f"secret {namespace}/{name}"
    try:
        call_api(where, core.create_namespaced_secret, namespace, body)
        action = "created"
    except SolarpipeError as exc:
        if api_status(exc) != 409:
            raise
        call_api(where, core.replace_namespaced_secret, name, namespace, body)
        action = "updated"
    return f"{where} {action} (keys {', '.join(sorted(data))})"
