"""Every rendered object validates against a real schema: custom kinds against the CRDs in
tests/k8s/crds (KServe, Prometheus Operator), core kinds against Kubernetes' OpenAPI schemas
(kubernetes-validate, strict). Without an API server, this is what `kubectl apply
--validate=strict` would check; admission webhooks (KServe's, Knative's) are not run here."""

from __future__ import annotations

import copy
import functools

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .kube import CRD_DIR, VALUES_DIR, helm_template

KUBERNETES_VERSION = "1.35.0"  # the kubectl the project installs; the chart needs >= 1.29
CORE_KINDS = {"ConfigMap", "Namespace", "NetworkPolicy", "Pod", "PodDisruptionBudget", "Service"}
RFC1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _strict(schema):
    """CRD schemas leave additionalProperties open and rely on the API server pruning
    unknown fields silently; kubectl's strict validation rejects them instead. Close every
    object schema that lists its properties, unless it preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            out[(f"{group}/{version['name']}", kind)] = schema
    return out


def validate_custom(obj: dict) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    schema = crd_schemas().get(key)
    assert schema is not None, f"no CRD schema for {key} in {CRD_DIR}"
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def validate_core(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.path))}: {e.message}"]
    return []


SCENARIOS = {
    "default": {"values": ()},
    "knative-canary": {"values": (VALUES_DIR / "knative-canary.yaml",)},
    "standard-canary": {"values": (VALUES_DIR / "standard-canary.yaml",)},
    "knative-podmonitor": {"values": (VALUES_DIR / "knative-canary.yaml",), "sets": ("metrics.monitor.kind=PodMonitor",)},
    "standard-servicemonitor-hpa-memory": {"values": (),
                                           "sets": ("metrics.monitor.kind=ServiceMonitor", "verticals.life.scaleMetric=memory",
                                                    "probes.startup.enabled=false", "servingRuntime.readOnlyRootFilesystem=false")},
    # every production option at once: KEDA on Prometheus, a canary, the payload logger, a name prefix
    "standard-production-options": {"values": (VALUES_DIR / "standard-canary.yaml",),
                                    "sets": ("autoscaling.keda.metricType=External",
                                             "autoscaling.keda.external.serverAddress=http://prometheus.monitoring:9090",
                                             "predictor.logger.enabled=true", "predictor.logger.url=http://audit/events",
                                             "inferenceServiceNamePrefix=blue-", "ingress.namespaces={gateways}")},
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_rendered_object_validates(name):
    spec = SCENARIOS[name]
    objs = helm_template(*spec["values"], sets=spec.get("sets", ()))
    kinds = set()
    failures = []
    for obj in objs:
        kinds.add(obj["kind"])
        errors = validate_core(obj) if obj["kind"] in CORE_KINDS else validate_custom(obj)
        failures += [f"{obj['kind']}/{obj['metadata']['name']}: {e}" for e in errors]
    assert not failures, "\n".join(failures)
    assert {"InferenceService", "PrometheusRule", "NetworkPolicy", "ConfigMap", "Pod"} <= kinds


def test_the_validators_reject_bad_objects():
    """The checks above would catch mistakes: a misspelt field, a wrong type, a bad enum."""
    isvc = next(o for o in helm_template() if o["kind"] == "InferenceService")
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["scaleMetrics"] = "cpu"
    assert any("scaleMetrics" in e for e in validate_custom(typo))
    wrong = copy.deepcopy(isvc)
    wrong["spec"]["predictor"]["scaleMetric"] = "gpu"
    assert validate_custom(wrong)
    canary = copy.deepcopy(isvc)
    canary["spec"]["canary"] = [{"trafficPercent": 150, "predictor": {"name": "v2"}}]
    assert any("150" in e for e in validate_custom(canary))
    np = next(o for o in helm_template() if o["kind"] == "NetworkPolicy")
    bad_np = copy.deepcopy(np)
    bad_np["spec"]["ingress"][0]["ports"][0]["port"] = {"nope": 1}
    assert validate_core(bad_np)
    bad_np = copy.deepcopy(np)
    bad_np["spec"]["podSelectr"] = {}
    assert validate_core(bad_np)


@pytest.mark.parametrize("name", ["default", "knative-canary", "standard-canary"])
def test_names_and_labels_are_valid_kubernetes_names(name):
    import re

    objs = helm_template(*SCENARIOS[name]["values"])
    for obj in objs:
        meta = obj["metadata"]
        assert re.match(RFC1123_SUBDOMAIN, meta["name"]) and len(meta["name"]) <= 253, meta["name"]
        if obj["kind"] in ("InferenceService", "Service"):
            # KServe derives Service names <isvc>-predictor, <isvc>-<canary>-predictor (DNS labels)
            assert len(meta["name"]) <= 63 - len("-predictor")
        for k, v in meta.get("labels", {}).items():
            assert len(str(v)) <= 63 and re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", str(v)), (k, v)
