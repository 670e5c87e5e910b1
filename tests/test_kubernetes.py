"""deploy/kubernetes: every kustomization renders with `kubectl kustomize`, every rendered object validates
offline against the Kubernetes schemas (kubernetes-validate) and KEDA's ScaledObjects against KEDA's
published CRD (vendored in tests/kubernetes), and what the manifests point at is what the code exposes:
probe paths and ports, drain periods, the autoscaling metric and the model it counts."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from modelport.gateway.app import create_app
from modelport.gateway.metrics import GatewayMetrics
from modelport.gateway.settings import GatewaySettings
from modelport.workers.runtime import OUTBOX_FLUSH_S

REPOSITORY = Path(__file__).resolve().parent.parent
KUBERNETES = REPOSITORY / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(path.parent.relative_to(KUBERNETES).as_posix()
                        for path in KUBERNETES.rglob("kustomization.yaml"))
KUBERNETES_VERSION = "1.32.0"
MARGIN_S = 5  # beyond the drain, for the process to close its connections and exit


@cache
def rendered(kustomization: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not installed; run `make deps`"
    run = subprocess.run([kubectl, "kustomize", str(KUBERNETES / kustomization)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return [document for document in yaml.safe_load_all(run.stdout) if document]


def objects(kind: str, kustomization: str = "overlays/example") -> list[dict[str, Any]]:
    return [document for document in rendered(kustomization) if document["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    [found] = [document for document in objects(kind) if document["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def environment(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's plain settings: its ConfigMaps' and its own literal values."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env |= named("ConfigMap", source["configMapRef"]["name"])["data"]
    return env | {item["name"]: item["value"] for item in container(deployment).get("env", []) if "value" in item}


def port(deployment: dict[str, Any], name: str) -> int:
    [number] = [item["containerPort"] for item in container(deployment)["ports"] if item["name"] == name]
    return int(number)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_validates_against_the_kubernetes_schemas(kustomization: str) -> None:
    crd = yaml.safe_load((REPOSITORY / "tests" / "kubernetes" / "keda.sh_scaledobjects.yaml").read_text())
    [version] = [version for version in crd["spec"]["versions"] if version["name"] == "v1alpha1"]
    documents = rendered(kustomization)
    assert documents
    for document in documents:
        if document["kind"] == "ScaledObject":
            assert document["apiVersion"] == "keda.sh/v1alpha1"
            jsonschema.validate(document, version["schema"]["openAPIV3Schema"])
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_example_has_what_an_installation_needs() -> None:
    kinds = Counter(document["kind"] for document in rendered("overlays/example"))
    assert kinds["Job"] == 1 and kinds["HorizontalPodAutoscaler"] == 1
    assert kinds["ScaledObject"] == kinds["Deployment"] - 2 == 2, "one ScaledObject per worker Deployment"
    for deployment in objects("Deployment"):
        name = deployment["metadata"]["name"]
        pdbs = [pdb for pdb in objects("PodDisruptionBudget")
                if pdb["spec"]["selector"]["matchLabels"].items() <= labels(deployment).items()]
        policies = [policy for policy in objects("NetworkPolicy")
                    if policy["spec"]["podSelector"]["matchLabels"].items() <= labels(deployment).items()]
        assert pdbs and policies, f"{name} lacks a PodDisruptionBudget or a NetworkPolicy"
        assert all({"Ingress", "Egress"} & set(policy["spec"]["policyTypes"]) for policy in policies)


def labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def test_gateway_probes_and_drain_match_the_gateway() -> None:
    gateway = named("Deployment", "modelport-gateway")
    env = environment(gateway)
    paths = {route.path for route in create_app(GatewaySettings()).routes if isinstance(route, Route)}
    probes = container(gateway)
    for probe in ("livenessProbe", "readinessProbe"):
        assert probes[probe]["httpGet"]["path"] in paths
        assert port(gateway, probes[probe]["httpGet"]["port"]) == int(env["MODELPORT_PORT"])
    assert (probes["livenessProbe"]["httpGet"]["path"], probes["readinessProbe"]["httpGet"]["path"]) == \
        ("/healthz", "/readyz")
    assert env["MODELPORT_HOST"] == "0.0.0.0"
    pause = int(probes["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = GatewaySettings(gateway_drain_s=float(env["MODELPORT_GATEWAY_DRAIN_S"])).gateway_drain_s
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pause + drain + MARGIN_S
    service = named("Service", "modelport-gateway")
    assert service["spec"]["selector"].items() <= labels(gateway).items()
    hpa = named("HorizontalPodAutoscaler", "modelport-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "modelport-gateway"
    assert "cpu" in container(gateway)["resources"]["requests"], "CPU autoscaling needs a CPU request"


def test_workers_drain_probe_and_scale_on_their_own_models_queue() -> None:
    exposed = {family.name for family in text_string_to_metric_families(
        GatewayMetrics().exposition({"m": (1, Counter({"default": 1}))}).decode())}
    for scaled in objects("ScaledObject"):
        worker = named("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        llm = container(worker)["args"][1]
        assert container(worker)["args"][0] == "worker" and labels(worker)["modelport.io/llm"] == llm
        [trigger] = scaled["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        assert trigger["type"] == "prometheus" and query == f'max(modelport_queue_depth{{model="{llm}"}})'
        assert "modelport_queue_depth" in exposed
        env = environment(worker)
        assert port(worker, container(worker)["livenessProbe"]["httpGet"]["port"]) == int(env["MODELPORT_METRICS_PORT"])
        assert env["MODELPORT_METRICS_HOST"] == "0.0.0.0"
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= float(env["MODELPORT_DRAIN_S"]) + OUTBOX_FLUSH_S + MARGIN_S
        secrets = {item["valueFrom"]["secretKeyRef"]["name"] for item in container(worker)["env"]
                   if "valueFrom" in item}
        assert secrets == {f"modelport-worker-{worker['metadata']['name'].rsplit('-', 1)[1]}"}, \
            "a worker reads only its own Secret: never the database URL or the admin key"
        assert "envFrom" not in container(worker)


def test_workers_reach_redis_and_their_upstreams_only() -> None:
    for policy in objects("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        if selector.get("app.kubernetes.io/name") != "modelport-worker":
            continue
        for rule in policy["spec"].get("egress", []):
            ports = {item["port"] for item in rule["ports"]}
            assert ports <= {53, 6379} or (ports == {443} and all("ipBlock" in peer for peer in rule["to"])), rule
