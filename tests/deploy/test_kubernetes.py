"""The Kubernetes recipe (``deploy/kubernetes/``): every core manifest validates against the Kubernetes
API schemas (``kubernetes-validate``, strict, the newest release it carries); the Prometheus Operator's
kinds validate against the operator's own API schemas (``@kubernetes-models/prometheus-operator`` from
npm, run by node; ``make test`` installs it into ``.cache/kube-models``), and are checked for what they
must hold: the PrometheusRule's rules pass ``promtool`` and are ``dashboards/alerts.yml``'s, the
PodMonitor selects the DaemonSet's pods on a port they have.  The configuration in the ConfigMap is
one kvwatch accepts, reading ``/var/log/pods`` as the DaemonSet mounts it.  (The image itself is not
built here: no container runtime runs on this machine.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from agent import __version__
from agent.config import load
from tests.support.harness import REPO

RECIPE = REPO / "deploy" / "kubernetes"
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}


def documents() -> list[dict]:
    kustomization = yaml.safe_load((RECIPE / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((RECIPE / name).read_text()) if d]
    return found


def one(kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def test_every_file_is_in_the_kustomization_and_every_core_manifest_validates() -> None:
    listed = yaml.safe_load((RECIPE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in RECIPE.glob("*.yaml") if p.name != "kustomization.yaml")
    version = kubernetes_validate.latest_version()
    kinds = set()
    for document in documents():
        kinds.add(document["kind"])
        assert document["metadata"]["namespace"] == "monitoring"
        if document["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)  # raises ValidationError
    assert kinds == {"ConfigMap", "DaemonSet", "PodMonitor", "PrometheusRule"}


KUBE_MODELS = REPO / ".cache" / "kube-models"


def operator_validation(objects: list[dict]) -> subprocess.CompletedProcess:
    """The operator's kinds through tests/deploy/validate_crds.mjs, run beside the installed schemas."""
    installed = KUBE_MODELS / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if shutil.which("node") is None or not installed.is_dir():
        if os.environ.get("CI"):
            pytest.fail("node or the operator's schemas are missing: make test installs them (make kube-schemas)")
        pytest.skip("node or the operator's schemas are missing (make kube-schemas installs them)")
    script = KUBE_MODELS / "validate_crds.mjs"  # beside its node_modules, where node resolves the package
    shutil.copyfile(Path(__file__).with_name("validate_crds.mjs"), script)
    return subprocess.run(["node", str(script)], input=json.dumps(objects), capture_output=True, text=True, timeout=120)


def test_the_operator_kinds_validate_against_the_operators_schemas() -> None:
    objects = [d for d in documents() if d["kind"] in OPERATOR_KINDS]
    checked = operator_validation(objects)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(checked.stdout.split("\n")[:-1]) == ["valid PodMonitor kvwatch", "valid PrometheusRule kvwatch"]
    # And it can fail: a port given as a number where the schema wants the port's name.
    broken = one("PodMonitor")
    broken["spec"]["podMetricsEndpoints"][0]["port"] = 10067
    rejected = operator_validation([broken])
    assert rejected.returncode == 1 and "port must be string" in rejected.stdout, rejected.stdout


def test_a_broken_manifest_is_caught() -> None:
    """The validator is strict: a misspelt field of the DaemonSet fails (so the test above can fail)."""
    daemonset = one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, kubernetes_validate.latest_version(), strict=True)


def test_the_configuration_is_one_kvwatch_accepts_and_reads_the_mounted_pod_logs(tmp_path: Path) -> None:
    text = one("ConfigMap", "kvwatch-config")["data"]["kvwatch.toml"]
    (tmp_path / "kvwatch.toml").write_text(text)
    config = load(tmp_path / "kvwatch.toml")
    (pods,) = config.pods
    assert (pods.log_dir, pods.container, pods.name) == ("/var/log/pods", "vllm", "{namespace}/{pod}")
    assert not config.servers and not config.follows  # Kubernetes supervises the pods; kvwatch only reads
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/log/pods"]["readOnly"] is True
    assert str(config.agent.state_dir) in mounts and not mounts[str(config.agent.state_dir)].get("readOnly")
    config_dir = container["args"][container["args"].index("--config") + 1].rsplit("/", 1)[0]
    assert config_dir in mounts
    port = tomllib.loads(text)["metrics"]["port"]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"] == [port]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_pod_monitor_scrapes_the_daemonset_pods_as_job_kvwatch_named_by_node() -> None:
    monitor = one("PodMonitor")["spec"]
    template = one("DaemonSet")["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert labels[monitor["jobLabel"]] == "kvwatch"  # the job the alert rules name
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "instance"} in endpoint["relabelings"]


def test_the_prometheus_rule_is_the_shipped_rules_and_promtool_accepts_it(tmp_path: Path) -> None:
    groups = one("PrometheusRule")["spec"]["groups"]
    assert groups == yaml.safe_load((REPO / "dashboards" / "alerts.yml").read_text())["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test` installs it)")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboards_are_config_maps_for_grafanas_sidecar() -> None:
    maps = [d for d in documents() if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    shipped = {p.name: json.loads(p.read_text()) for p in (REPO / "dashboards").glob("*.json")}
    assert {name for m in maps for name in m["data"]} == set(shipped)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for name, text in config_map["data"].items():
            assert json.loads(text) == shipped[name]


def test_the_image_holds_every_package_kvwatch_installs() -> None:
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) /src/\1$", (RECIPE / "Dockerfile").read_text(), re.MULTILINE))
    assert copied == {pattern.rstrip("*") for pattern in include}


def test_the_daemonset_runs_the_image_of_this_version() -> None:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"kvwatch:{__version__}"
    # The build commands beside it and in the docs tag that same image.
    for path in (RECIPE / "Dockerfile", RECIPE / "daemonset.yaml", REPO / "docs" / "running.md"):
        assert set(re.findall(r"REGISTRY/kvwatch:(\S+)", path.read_text())) == {__version__}, path
