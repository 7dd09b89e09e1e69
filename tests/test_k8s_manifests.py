"""The k8s/ kustomizations: rendered with kustomize, valid against the Kubernetes schemas, and in
step with the pipeline's params (namespace, Secret, service account, GPU pool); the least
privilege of every solarpipe container (read-only root, no capabilities) and the admission
policy that enforces it on the pipeline's pods.

Rendering uses the kustomize built into ``kubectl`` (``kubectl kustomize``: no cluster needed);
validation uses ``kubernetes-validate`` (the API's OpenAPI schemas, strict: unknown fields fail).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.core.params import load_params

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZATIONS = [
    "base",
    "stage-job",
    "overlays/gpu",
    "secret",
    "policy",
    "serving",
    "overlays/serving-gpu",
]
PROFILE_OVERLAY = "overlays/kubeflow-profile"
# MutatingAdmissionPolicy is admissionregistration.k8s.io/v1 from Kubernetes 1.36.
MUTATING_POLICY_VERSION = "1.36.0"
CLUSTER_SCOPED = {
    "Namespace",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
}
KUBEFLOW = load_params(REPO / "params.yaml").kubeflow

# scripts/test.sh installs kubectl and sets SOLARPIPE_REQUIRE_KUBECTL=1: in CI this never skips.
pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None and not os.environ.get("SOLARPIPE_REQUIRE_KUBECTL"),
    reason="kubectl (with its built-in kustomize) not installed",
)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered; the Secret one from its committed ``*.env.example`` files."""
    secret_copy = tmp_path_factory.mktemp("k8s") / "secret"
    shutil.copytree(K8S / "secret", secret_copy)
    for example in secret_copy.glob("*.env.example"):
        shutil.copy(example, example.with_name(example.name.removesuffix(".example")))
    folders = {name: K8S / name for name in KUSTOMIZATIONS}
    folders["secret"] = secret_copy
    return {name: kustomize(folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def profile_overlay() -> list[dict[str, Any]]:
    return kustomize(K8S / PROFILE_OVERLAY)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return find(docs, kind, name)["spec"]["template"]["spec"]


def test_every_rendered_manifest_is_valid_for_kubernetes(rendered) -> None:
    checked = 0
    for name, docs in rendered.items():
        assert docs, f"{name} rendered nothing"
        for doc in docs:
            version = (
                MUTATING_POLICY_VERSION
                if doc["kind"].startswith("MutatingAdmissionPolicy")
                else KUBERNETES_VERSION
            )
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
            checked += 1
    assert checked >= 13


def test_namespaced_objects_live_in_the_pipeline_namespace(rendered) -> None:
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == KUBEFLOW.namespace
            elif doc["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in doc["metadata"], (name, doc["kind"])
            else:
                assert doc["metadata"]["namespace"] == KUBEFLOW.namespace, (name, doc["kind"])


def test_secret_template_carries_no_values_but_the_pipeline_keys(rendered) -> None:
    secret = find(rendered["secret"], "Secret", KUBEFLOW.s3_secret)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])
    assert secret["data"]["AWS_ACCESS_KEY_ID"] == ""
    assert secret["data"]["AWS_SECRET_ACCESS_KEY"] == ""
    ignored = (REPO / ".gitignore").read_text()
    assert "/k8s/secret/*.env" in ignored, "the filled-in env files must stay out of git"


def test_pipeline_service_account_is_bound_to_its_role(rendered) -> None:
    base = rendered["base"]
    find(base, "ServiceAccount", KUBEFLOW.service_account)
    binding = find(base, "RoleBinding", KUBEFLOW.service_account)
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": KUBEFLOW.service_account,
            "namespace": KUBEFLOW.namespace,
        }
    ]
    role = find(base, "Role", binding["roleRef"]["name"])
    granted = {
        (group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert ("", "pods") in granted
    assert ("argoproj.io", "workflowtaskresults") in granted


def test_pipeline_role_grants_only_what_the_runs_pods_do(rendered) -> None:
    """KFP's driver and launcher read their pod, kfp-launcher and the artifact Secret; Argo's
    executor reports results. No writes to pods, no other Secret, nothing cluster-wide."""
    role = find(rendered["base"], "Role", KUBEFLOW.service_account)
    rules = {
        (tuple(rule["apiGroups"]), tuple(rule["resources"])): (
            sorted(rule["verbs"]),
            rule.get("resourceNames"),
        )
        for rule in role["rules"]
    }
    assert rules == {
        (("",), ("pods",)): (["get"], None),
        (("",), ("configmaps",)): (["get"], ["kfp-launcher"]),
        (("",), ("secrets",)): (["get"], ["mlpipeline-minio-artifact"]),
        (("argoproj.io",), ("workflowtaskresults",)): (["create", "patch"], None),
    }
    everything = [doc["kind"] for docs in rendered.values() for doc in docs]
    assert "ClusterRole" not in everything and "ClusterRoleBinding" not in everything


def test_profile_overlay_creates_no_namespace_and_deploys_into_the_profile(
    profile_overlay,
) -> None:
    """Multi-user Kubeflow: the profile controller owns the namespace; we only add to it."""
    kinds = [doc["kind"] for doc in profile_overlay]
    assert "Namespace" not in kinds
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"} <= set(kinds)
    namespaces = {doc["metadata"]["namespace"] for doc in profile_overlay}
    assert namespaces == {"kubeflow-user-example-com"}
    binding = find(profile_overlay, "RoleBinding", KUBEFLOW.service_account)
    assert binding["subjects"][0]["namespace"] == "kubeflow-user-example-com"
    for doc in profile_overlay:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_labelstudio_reads_s3_from_the_secret_and_keeps_its_data(rendered) -> None:
    base = rendered["base"]
    spec = pod_spec(base, "Deployment", "labelstudio")
    container = spec["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == KUBEFLOW.s3_secret
        assert "value" not in env[key]
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    find(base, "PersistentVolumeClaim", claim)
    pod_labels = find(base, "Deployment", "labelstudio")["spec"]["template"]["metadata"]["labels"]
    selector = find(base, "Service", "labelstudio")["spec"]["selector"]
    assert selector.items() <= pod_labels.items()
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_stage_job_runs_the_stage_image_as_non_root_with_s3_from_the_secret(rendered) -> None:
    spec = pod_spec(rendered["stage-job"], "Job", "solarpipe-stage")
    container = spec["containers"][0]
    assert container["image"] == f"solarpipe-prepare:{version('solarpipe')}"
    assert "command" not in container, "the image's entrypoint is the stage contract"
    assert container["envFrom"] == [{"secretRef": {"name": KUBEFLOW.s3_secret}}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == KUBEFLOW.run_as_user
    assert spec["restartPolicy"] == "Never"


def test_gpu_overlay_matches_the_pipeline_gpu_params(rendered) -> None:
    gpu = KUBEFLOW.gpu
    spec = pod_spec(rendered["overlays/gpu"], "Job", "solarpipe-stage-gpu")
    container = spec["containers"][0]
    assert container["image"] == f"solarpipe-train:{version('solarpipe')}"
    assert spec["nodeSelector"] == gpu.node_selector
    wanted = [
        {k: v for k, v in toleration.model_dump().items() if v} for toleration in gpu.tolerations
    ]
    assert spec["tolerations"] == wanted
    assert container["resources"]["limits"][gpu.accelerator_type] == str(gpu.accelerator_limit)
    shm = next(volume for volume in spec["volumes"] if volume["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": gpu.shm_size}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert spec["securityContext"]["runAsNonRoot"] is True


def serving_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(docs, "Deployment", "solarpipe-serve")["containers"]
    return container


def test_serving_pods_run_locked_down_like_the_stage_pods(rendered) -> None:
    docs = rendered["serving"]
    spec = pod_spec(docs, "Deployment", "solarpipe-serve")
    container = serving_container(docs)
    assert container["image"] == f"solarpipe-serve:{version('solarpipe')}"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == KUBEFLOW.run_as_user
    assert spec["securityContext"]["runAsGroup"] == KUBEFLOW.run_as_group
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    tmp = next(volume for volume in spec["volumes"] if volume["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert spec["automountServiceAccountToken"] is False
    assert container["envFrom"] == [{"secretRef": {"name": KUBEFLOW.s3_secret}}]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


def test_serving_probes_use_bentomls_endpoints_and_rollouts_keep_old_pods(rendered) -> None:
    deployment = find(rendered["serving"], "Deployment", "solarpipe-serve")
    container = serving_container(rendered["serving"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert {"name": "http", "containerPort": 3000} in container["ports"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    # the deploy step owns the model URI: an apply must not reset it
    assert "SOLARPIPE_MODEL_URI" not in {item["name"] for item in container["env"]}


def test_service_autoscaler_and_budget_select_the_serving_pods(rendered) -> None:
    docs = rendered["serving"]
    pod_labels = find(docs, "Deployment", "solarpipe-serve")["spec"]["template"]["metadata"][
        "labels"
    ]
    service = find(docs, "Service", "solarpipe-serve")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    budget = find(docs, "PodDisruptionBudget", "solarpipe-serve")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = find(docs, "HorizontalPodAutoscaler", "solarpipe-serve")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "solarpipe-serve",
    }
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_deploy_step_may_get_and_patch_only_the_serving_deployment(rendered) -> None:
    from components.deploy.commands import DEFAULT_DEPLOYMENT

    docs = rendered["serving"]
    binding = find(docs, "RoleBinding", "solarpipe-deploy")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": KUBEFLOW.service_account,
            "namespace": KUBEFLOW.namespace,
        }
    ]
    (rule,) = find(docs, "Role", binding["roleRef"]["name"])["rules"]
    assert rule == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": [DEFAULT_DEPLOYMENT],
        "verbs": ["get", "patch"],
    }


def test_serving_gpu_overlay_matches_the_pipeline_gpu_params(rendered) -> None:
    gpu = KUBEFLOW.gpu
    docs = rendered["overlays/serving-gpu"]
    spec = pod_spec(docs, "Deployment", "solarpipe-serve")
    container = serving_container(docs)
    assert spec["nodeSelector"] == gpu.node_selector
    wanted = [
        {k: v for k, v in toleration.model_dump().items() if v} for toleration in gpu.tolerations
    ]
    assert spec["tolerations"] == wanted
    assert container["resources"]["limits"][gpu.accelerator_type] == str(gpu.accelerator_limit)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the base, patched
    assert spec["securityContext"]["runAsNonRoot"] is True


def _stage_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a pod spec that run a solarpipe image (what the policy selects)."""
    return [c for c in spec["containers"] if c["image"].rsplit("/", 1)[-1].startswith("solarpipe-")]


def _least_privilege_problems(container: dict[str, Any]) -> list[str]:
    """What the admission policy would refuse in one container (its rules, read by hand)."""
    context = container.get("securityContext", {})
    problems = []
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem writable")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation allowed")
    if "ALL" not in context.get("capabilities", {}).get("drop", []) or context.get(
        "capabilities", {}
    ).get("add"):
        problems.append("capabilities kept")
    mounts = container.get("volumeMounts", [])
    if not any(m["mountPath"] == "/tmp" and not m.get("readOnly") for m in mounts):
        problems.append("no writable /tmp")
    return problems


def test_every_solarpipe_container_runs_with_least_privilege(rendered) -> None:
    checked = 0
    for name in ("stage-job", "overlays/gpu", "base"):
        for doc in rendered[name]:
            if doc["kind"] not in ("Job", "Deployment"):
                continue
            spec = doc["spec"]["template"]["spec"]
            volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
            for container in _stage_containers(spec):
                assert _least_privilege_problems(container) == [], (name, doc["kind"])
                tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
                assert "emptyDir" in volumes[tmp["name"]]
                checked += 1
    assert checked >= 2


def test_labelstudio_runs_on_a_read_only_root_without_capabilities(rendered) -> None:
    spec = pod_spec(rendered["base"], "Deployment", "labelstudio")
    container = spec["containers"][0]
    assert _least_privilege_problems(container) == []
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in container["volumeMounts"]:
        assert "emptyDir" in volumes[mount["name"]] or mount["mountPath"] == "/label-studio/data"


def test_policy_binds_to_the_pipeline_namespace_and_denies(rendered) -> None:
    policy = rendered["policy"]
    selector = {"matchLabels": {"kubernetes.io/metadata.name": KUBEFLOW.namespace}}
    for kind in ("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy"):
        (definition,) = [doc for doc in policy if doc["kind"] == kind]
        (binding,) = [doc for doc in policy if doc["kind"] == f"{kind}Binding"]
        assert binding["spec"]["policyName"] == definition["metadata"]["name"]
        assert binding["spec"]["matchResources"]["namespaceSelector"] == selector
        assert definition["spec"]["failurePolicy"] == "Fail"
        rules = definition["spec"]["matchConstraints"]["resourceRules"]
        assert any("pods" in rule["resources"] and "CREATE" in rule["operations"] for rule in rules)
    (validating,) = [doc for doc in policy if doc["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert validating["spec"]["validationActions"] == ["Deny"]


def test_policy_requires_what_the_mutation_sets(rendered) -> None:
    """Each rule of the validating policy names a field that the mutating policy sets."""
    policy = {doc["kind"]: doc for doc in rendered["policy"]}
    rules = " ".join(
        check["expression"] for check in policy["ValidatingAdmissionPolicy"]["spec"]["validations"]
    )
    (mutation,) = policy["MutatingAdmissionPolicy"]["spec"]["mutations"]
    applied = mutation["applyConfiguration"]["expression"]
    for required, set_by_mutation in (
        ("readOnlyRootFilesystem == true", "readOnlyRootFilesystem: true"),
        ("allowPrivilegeEscalation == false", "allowPrivilegeEscalation: false"),
        ("drop.exists(d, d == 'ALL')", 'drop: ["ALL"]'),
        ("m.mountPath == '/tmp'", 'mountPath: "/tmp"'),
    ):
        assert required in rules and set_by_mutation in applied, required
