"""The Helm chart's ``values.schema.json``: the chart's own keys, and under ``config`` diurnal's
settings schema (from the pydantic model), so that a typo anywhere fails ``helm install`` with
the key's path instead of failing the pod at start. Written by ``python -m dashboards.generate``."""

from __future__ import annotations

from typing import Any

from controller.settings import Settings


def _obj(properties: dict[str, Any], description: str = "", required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if description:
        out["description"] = description
    if required:
        out["required"] = required
    return out


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _int(description: str, minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": minimum, "description": description}
    if maximum is not None:
        out["maximum"] = maximum
    return out


_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ANY_OBJ = {"type": "object"}
_INTERVAL = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$", "description": "A Prometheus duration, e.g. 30s."}


def values_schema() -> dict[str, Any]:
    settings = Settings.model_json_schema(ref_template="#/$defs/{model}")
    defs = settings.pop("$defs")
    defs["Settings"] = settings
    probe = _obj({"periodSeconds": _int("Period, seconds.", 1), "failureThreshold": _int("Failures allowed.", 1)})
    monitor = {"enabled": _bool("Create it."), "interval": _INTERVAL, "labels": _MAP}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "diurnal chart values",
        **_obj({
            "mode": {"enum": ["standalone", "sidecar", "fleet"], "description": "Deployment shape."},
            "fleet": _obj({"replicas": _int("Replicas in mode fleet.", 2, 10)}),
            "nameOverride": _str("Overrides the chart name."),
            "fullnameOverride": _str("Overrides the full name.", maxLength=63),
            "image": _obj({
                "repository": _str("Image repository.", minLength=1),
                "tag": _str("Image tag; empty: the appVersion."),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }, required=["repository"]),
            "imagePullSecrets": {"type": "array", "items": {"type": "string"}},
            "config": {"$ref": "#/$defs/Settings"},
            "secrets": _obj({
                "existingSecret": _str("Existing Secret name."),
                "apiToken": _str("API token."),
                "prometheusBearerToken": _str("Prometheus bearer token."),
                "prometheusBasicAuthPassword": _str("Prometheus basic-auth password."),
                "routerBearerToken": _str("Router bearer token."),
            }),
            "port": _int("API port.", 1, 65535),
            "service": _obj({
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": _int("Service port.", 1, 65535),
                "annotations": _MAP,
            }),
            "sidecar": _obj({
                "routerMetricsPort": _int("Router metrics port.", 1, 65535),
                "routerMetricsPath": _str("Router metrics path.", pattern="^/"),
                "decisionFile": _obj({
                    "enabled": _bool("Share the decision file."),
                    "mountPath": _str("Mount path.", pattern="^/"),
                    "fileName": _str("File name.", pattern=r"^[^/]+\.(json|ya?ml)$"),
                    "shape": {"enum": ["decision", "litellm"]},
                }),
            }),
            "litellmHook": _obj({
                "enabled": _bool("Create the ConfigMap holding the LiteLLM proxy hook."),
                "configDir": _str("Directory of the LiteLLM proxy's config.yaml in its container.", pattern="^/"),
                "url": _str("diurnal's API as the hook reaches it; empty: derived from the mode."),
            }),
            "persistence": _obj({
                "enabled": _bool("Use a PersistentVolumeClaim."),
                "storageClass": _str("StorageClass."),
                "accessMode": {"enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]},
                "size": _str("Claim size.", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)$"),
                "existingClaim": _str("Existing claim."),
            }),
            "resources": _ANY_OBJ,
            "terminationGracePeriodSeconds": _int("Pod grace period; diurnal stops within it minus 10 s.", 11, 3600),
            "extraEnv": {"type": "array", "items": _ANY_OBJ},
            "probes": _obj({"startup": probe, "liveness": probe, "readiness": probe}),
            "podSecurityContext": _ANY_OBJ,
            "securityContext": _ANY_OBJ,
            "serviceAccount": _obj({"create": _bool("Create one."), "name": _str("Name."), "annotations": _MAP}),
            "rbac": _obj({"scale": _obj({
                "enabled": _bool("Grant deployments/scale get and patch."),
                "namespaces": {"type": "array", "items": {"type": "string"}},
            })}),
            "monitoring": _obj({
                "serviceMonitor": _obj(monitor),
                "podMonitor": _obj({**monitor, "selector": _MAP, "portName": _str("Port name.", maxLength=15)}),
                "prometheusRule": _obj({"enabled": _bool("Create it."), "labels": _MAP}),
                "dashboards": _obj({
                    "enabled": _bool("Create the dashboard ConfigMaps."),
                    "label": _str("Label Grafana's sidecar watches.", minLength=1),
                    "labelValue": _str("Its value."),
                    "namespace": _str("Namespace of the ConfigMaps."),
                    "folder": _str("Grafana folder."),
                }),
            }),
            "nodeSelector": _MAP,
            "tolerations": {"type": "array", "items": _ANY_OBJ},
            "affinity": _ANY_OBJ,
            "podAnnotations": _MAP,
            "podLabels": _MAP,
        }, required=["mode", "image", "config"]),
        # mode fleet reads the router fleet from Prometheus, and each replica keeps its own store
        "allOf": [{
            "if": {"properties": {"mode": {"const": "fleet"}}, "required": ["mode"]},
            "then": {"properties": {
                "config": {"required": ["prometheus"], "properties": {"prometheus": {"required": ["url"]}}},
                "persistence": {"properties": {"enabled": {"const": False}}},
            }},
        }],
        "$defs": defs,
    }
