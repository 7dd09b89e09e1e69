"""The Kubeflow Pipelines API for ``submit``: the token, a reachability check that fails in one
line, and the run request (kfp.Client)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any

from components.core.errors import SolarpipeError

TOKEN_VARIABLES = ("KF_PIPELINES_TOKEN", "KFP_TOKEN")
HOST_VARIABLE = "KF_PIPELINES_ENDPOINT"
UI_VARIABLE = "KF_PIPELINES_UI_ENDPOINT"


@dataclass(frozen=True)
class RunRequest:
    """One run of a compiled pipeline package."""

    package: str
    arguments: dict[str, Any]
    run_name: str
    experiment: str
    namespace: str
    service_account: str | None
    enable_caching: bool | None  # None: as compiled


def api_host(host: str | None) -> str | None:
    """``--host``, else ``$KF_PIPELINES_ENDPOINT``; None: through the kubeconfig's cluster."""
    return (host or os.environ.get(HOST_VARIABLE) or "").rstrip("/") or None


def api_token() -> str | None:
    return next((os.environ[name] for name in TOKEN_VARIABLES if os.environ.get(name)), None)


def check_api(host: str, token: str | None) -> dict[str, Any]:
    """GET the healthz endpoint: one clear error for an unreachable host or a rejected token."""
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = "the token was rejected" if token else "it needs a token"
            raise SolarpipeError(
                f"Kubeflow Pipelines at {host} answered HTTP {exc.code}: {hint} "
                f"(set {TOKEN_VARIABLES[0]})"
            ) from exc
        raise SolarpipeError(
            f"Kubeflow Pipelines at {host} answered HTTP {exc.code} {exc.reason}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SolarpipeError(f"Kubeflow Pipelines at {host} is unreachable: {reason}") from exc


def describe_api_error(exc: Exception, where: str) -> SolarpipeError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return SolarpipeError(
            f"Kubeflow Pipelines at {where} answered HTTP {status}: the token was rejected "
            f"(set {TOKEN_VARIABLES[0]})"
        )
    body = getattr(exc, "body", "") or ""
    try:
        message = json.loads(body).get("message") or body
    except (ValueError, AttributeError):
        message = body
    return SolarpipeError(f"Kubeflow Pipelines at {where} answered HTTP {status}: {message}")


def create_run(host: str | None, token: str | None, request: RunRequest) -> str:
    """Start the run (creating the experiment if new); returns the run's URL in the UI."""
    import kfp
    from kfp_server_api.exceptions import ApiException

    # In multi-user mode runs belong to a namespace; single-user servers refuse one.
    multi_user = bool(check_api(host, token).get("multi_user")) if host else False
    namespace = request.namespace if multi_user else None
    where = host or "the kubeconfig's cluster"
    try:
        # kfp.Client warns about server versions and prints its own links: keep ours alone
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
            run = client.create_run_from_pipeline_package(
                request.package,
                arguments=request.arguments,
                run_name=request.run_name,
                experiment_name=request.experiment,
                namespace=namespace,
                enable_caching=request.enable_caching,
                service_account=request.service_account,
            )
    except ApiException as exc:
        raise describe_api_error(exc, where) from exc
    except (OSError, TimeoutError) as exc:
        raise SolarpipeError(f"Kubeflow Pipelines at {where}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("urllib3"):  # connection refused, DNS, TLS
            raise SolarpipeError(f"Kubeflow Pipelines at {where} is unreachable: {exc}") from exc
        raise
    ui = (os.environ.get(UI_VARIABLE) or host or "").rstrip("/")
    return f"{ui}/#/runs/details/{run.run_id}"
