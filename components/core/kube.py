"""The Kubernetes API as solarpipe's tools reach it, with the ``kubernetes`` client.

Configuration: inside a pod (``KUBERNETES_SERVICE_HOST`` set) its service account; elsewhere
the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``). API failures become one-line errors
naming the object, the HTTP status and, for 403, what the caller may not do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from components.core.errors import NotFoundError, SolarpipeError

IN_CLUSTER_VARIABLE = "KUBERNETES_SERVICE_HOST"
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


def load_configuration(purpose: str) -> str:
    """Configure the client for this process; returns the namespace it defaults to."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    quiet_connection_retries()
    if os.environ.get(IN_CLUSTER_VARIABLE):
        try:
            config.load_incluster_config()
        except ConfigException as exc:
            raise SolarpipeError(
                f"{purpose}: this pod's service account is unusable: {exc}"
            ) from exc
        return POD_NAMESPACE_FILE.read_text().strip() if POD_NAMESPACE_FILE.is_file() else "default"
    # read now: the client reads KUBECONFIG once, when it is imported
    kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        config.load_kube_config(config_file=kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError) as exc:
        raise SolarpipeError(
            f"{purpose} needs the Kubernetes API: run it in a pod, or give a kubeconfig "
            f"(KUBECONFIG or ~/.kube/config): {exc}"
        ) from exc
    return str((context or {}).get("context", {}).get("namespace") or "default")


def quiet_connection_retries() -> None:
    """urllib3 logs each retry of a refused connection as a warning; the error that ends the
    retries says it once (and ``-v`` still shows every retry)."""
    pool_logger = logging.getLogger("urllib3.connectionpool")
    if pool_logger.getEffectiveLevel() > logging.DEBUG:
        pool_logger.setLevel(logging.ERROR)


def api_host() -> str:
    from kubernetes import client

    return str(client.Configuration.get_default_copy().host)


def describe_api_error(exc: Exception, what: str, needs: str = "") -> SolarpipeError:
    """One line for a failed call about ``what``; ``needs`` says which permission 403 lacks."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    if status == 404:
        return NotFoundError(f"{what} not found (HTTP 404)")
    if status == 401:
        return SolarpipeError(f"{what}: the Kubernetes API rejected the credentials (HTTP 401)")
    if status == 403:
        hint = f": the caller needs {needs}" if needs else ""
        return SolarpipeError(f"{what}: forbidden (HTTP 403){hint}")
    if status is not None:
        return SolarpipeError(f"{what}: Kubernetes answered HTTP {status} {reason}".rstrip())
    return SolarpipeError(f"{what}: Kubernetes API at {api_host()} unreachable: {exc}")


def is_connection_error(exc: Exception) -> bool:
    return type(exc).__module__.startswith("urllib3")  # refused, DNS, TLS, read timeout


def api_status(error: SolarpipeError) -> int | None:
    """The HTTP status behind an error from :func:`call_api` (None: no answer at all)."""
    return getattr(error.__cause__, "status", None)


def is_transient(error: SolarpipeError) -> bool:
    """No answer, or a 5xx/429: worth asking again."""
    status = api_status(error)
    return status is None or status == 429 or status >= 500


def call_api(
    what: str, function: Callable[..., T], *args: Any, needs: str = "", **kwargs: Any
) -> T:
    """``function(*args, **kwargs)`` with API and connection failures as one-line errors."""
    from kubernetes.client.exceptions import ApiException

    try:
        return function(*args, **kwargs)
    except ApiException as exc:
        raise describe_api_error(exc, what, needs) from exc
    except Exception as exc:
        if is_connection_error(exc):
            raise describe_api_error(exc, what, needs) from exc
        raise
