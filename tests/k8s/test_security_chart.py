"""The chart's security objects: Istio RequestAuthentication / AuthorizationPolicy (off by
default), the runtime's credentials wiring, the NetworkPolicy, and no key material anywhere
in what the chart renders. Istio kinds are checked against hand-written structural schemas
(tests/k8s/istio_schemas.py: no Istio CRD was provided), everything else against the real
schemas like test_schemas.py."""

from __future__ import annotations

import pytest
import yaml

from .istio_schemas import decide, validate_istio
from .kube import VALUES_DIR, by_kind, helm_template, helm_template_error, one
from .test_schemas import CORE_KINDS, validate_core, validate_custom

ISTIO = VALUES_DIR / "istio-jwt.yaml"
ISTIO_KINDS = ("AuthorizationPolicy", "RequestAuthentication")
ISSUER = "https://login.insurance.example"


def _istio(objs):
    return [o for o in objs if o["kind"] in ISTIO_KINDS]


@pytest.fixture(scope="module")
def istio_objs():
    return helm_template(ISTIO)


@pytest.fixture(scope="module")
def knative_istio_objs():
    return helm_template(ISTIO, sets=("deploymentMode=Knative", "ingress.kind=istio"))


def test_istio_objects_are_off_by_default(default_objs, knative_objs, standard_objs):
    for objs in (default_objs, knative_objs, standard_objs):
        assert not _istio(objs)
    assert not _istio(helm_template(sets=("auth.jwt.issuer=https://x", "auth.jwt.audiences[0]=a",
                                          "auth.jwt.jwksConfigMap=c")))


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_every_object_validates_with_security_on(mode):
    kind = "ingress" if mode == "Standard" else "istio"
    objs = helm_template(ISTIO, sets=(f"deploymentMode={mode}", f"ingress.kind={kind}"))
    failures = []
    for obj in objs:
        if obj["kind"] in ISTIO_KINDS:
            errors = validate_istio(obj)
        elif obj["kind"] in CORE_KINDS:
            errors = validate_core(obj)
        else:
            errors = validate_custom(obj)
        failures += [f"{obj['kind']}/{obj['metadata']['name']}: {e}" for e in errors]
    assert not failures, "\n".join(failures)
    assert sorted(o["kind"] for o in _istio(objs)) == ["AuthorizationPolicy", "AuthorizationPolicy",
                                                       "RequestAuthentication"]


def test_the_istio_schemas_reject_mistakes(istio_objs):
    import copy

    deny = next(o for o in _istio(istio_objs) if o["spec"].get("action") == "DENY")
    for change in (lambda o: o["spec"].update(action="REJECT"),
                   lambda o: o["spec"]["rules"][0]["to"][0]["operation"].update(paths=["/v2/*/load"]),
                   lambda o: o["spec"]["rules"][0]["to"][0]["operation"].update(ports=[8080]),
                   lambda o: o["spec"].update(rule=[])):
        bad = copy.deepcopy(deny)
        change(bad)
        assert validate_istio(bad), bad["spec"]
    ra = one(istio_objs, "RequestAuthentication")
    bad = copy.deepcopy(ra)
    bad["spec"]["jwtRules"][0]["jwks"] = "{}"
    assert validate_istio(bad), "jwks and jwksUri together"


def _predictor_selects(policy, objs) -> bool:
    labels = policy["spec"]["selector"]["matchLabels"]
    isvcs = by_kind(objs, "InferenceService")
    return bool(isvcs) and all(all(i["spec"]["predictor"]["labels"].get(k) == v for k, v in labels.items())
                               for i in isvcs)


def test_policies_mean_what_the_docs_say(istio_objs):
    policies = by_kind(istio_objs, "AuthorizationPolicy")
    assert all(_predictor_selects(p, istio_objs) for p in _istio(istio_objs))
    jwt = "https://login.insurance.example/client-1"
    cases = [
        # the repository API: closed for everyone, token or not, REST and gRPC
        ("POST", "/v2/repository/models/auto/unload", 8080, jwt, "deny"),
        ("POST", "/v2/repository/models/auto/load", 8080, None, "deny"),
        ("POST", "/v2/repository/index", 8080, jwt, "deny"),
        ("POST", "/inference.GRPCInferenceService/RepositoryModelLoad", 8081, jwt, "deny"),
        ("POST", "/inference.model_repository.ModelRepositoryService/RepositoryModelUnload", 8081, jwt, "deny"),
        # inference needs a token
        ("POST", "/v2/models/auto/infer", 8080, None, "deny"),
        ("POST", "/v2/models/auto/infer", 8080, jwt, "allow"),
        ("POST", "/v2/models/auto/versions/1.0.0/infer", 8080, None, "deny"),
        ("POST", "/inference.GRPCInferenceService/ModelInfer", 8081, None, "deny"),
        ("POST", "/inference.GRPCInferenceService/ModelInfer", 8081, jwt, "allow"),
        ("GET", "/v2/models/auto", 8080, None, "deny"),
        # open: health, readiness, metrics
        ("GET", "/v2/health/live", 8080, None, "allow"),
        ("GET", "/v2/health/ready", 8080, None, "allow"),
        ("GET", "/v2/models/auto/ready", 8080, None, "allow"),
        ("GET", "/v2/models/auto/versions/1.0.0/ready", 8080, None, "allow"),
        ("POST", "/inference.GRPCInferenceService/ModelReady", 8081, None, "allow"),
        ("GET", "/metrics", 8082, None, "allow"),
        # ... but a POST on a ready path is not an open door
        ("POST", "/v2/models/auto/ready", 8080, None, "deny"),
    ]
    wrong = [(m, p, port, bool(who), want, decide(policies, m, p, port, who))
             for m, p, port, who, want in cases if decide(policies, m, p, port, who) != want]
    assert not wrong, wrong
    ra = one(istio_objs, "RequestAuthentication")
    [rule] = ra["spec"]["jwtRules"]
    assert rule == {"issuer": ISSUER, "audiences": ["insurance-serving", "insurance-backoffice"],
                    "jwksUri": "https://login.insurance.example/.well-known/jwks.json", "forwardOriginalToken": True}


def test_knative_mode_keeps_the_queue_proxy_probes_open(knative_istio_objs):
    policies = by_kind(knative_istio_objs, "AuthorizationPolicy")
    for path in ("/healthz", "/metrics"):
        assert decide(policies, "GET", path, 8012) == "allow"
    assert decide(policies, "POST", "/v2/models/auto/infer", 8012) == "deny"
    assert decide(policies, "POST", "/v2/repository/models/auto/load", 8012, "x") == "deny"


def test_only_the_repository_deny_without_jwt():
    objs = helm_template(sets=("istio.enabled=true",))
    [deny] = _istio(objs)
    assert deny["spec"]["action"] == "DENY"
    assert decide([deny], "POST", "/v2/models/auto/infer", 8080) == "allow"
    assert decide([deny], "POST", "/v2/repository/models/auto/load", 8080) == "deny"
    assert not _istio(helm_template(sets=("istio.enabled=true", "istio.denyRepositoryApi=false")))
    older = helm_template(sets=("istio.enabled=true", "istio.apiVersion=security.istio.io/v1beta1"))
    assert _istio(older)[0]["apiVersion"] == "security.istio.io/v1beta1"


def test_the_runtime_gets_its_credentials_by_reference(istio_objs):
    for isvc in by_kind(istio_objs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        env = {e["name"]: e for e in predictor["model"]["env"]}
        assert env["INSURANCE_API_KEYS_FILE"]["value"] == "/var/run/secrets/insurance-serving/api-keys"
        assert env["INSURANCE_JWT_JWKS_FILE"]["value"] == "/var/run/insurance-serving/jwks/jwks.json"
        assert env["INSURANCE_JWT_ISSUER"]["value"] == ISSUER
        assert env["INSURANCE_JWT_AUDIENCE"]["value"] == "insurance-serving,insurance-backoffice"
        volumes = {v["name"]: v for v in predictor["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == "insurance-api-keys"
        assert volumes["jwks"]["configMap"]["name"] == "insurance-jwks"
        assert all(m["readOnly"] for m in predictor["model"]["volumeMounts"])
    pod = one(istio_objs, "Pod")
    assert {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}["INFER"] == "false"


def test_no_key_material_in_rendered_manifests(tmp_path):
    """Keys live only in the Secret the user creates: the chart takes its name, renders no
    Secret, passes the env variant by secretKeyRef, and refuses keys in values."""
    sentinel = "sk-live-SENTINEL-0123456789abcdef"
    values = tmp_path / "keys.yaml"
    values.write_text(yaml.safe_dump({"auth": {"apiKeys": {"enabled": True, "existingSecret": "insurance-api-keys",
                                                           "source": "env", "secretKey": "api-keys"}}}))
    for objs in (helm_template(values), helm_template(ISTIO), helm_template(ISTIO, sets=("deploymentMode=Knative", "ingress.kind=istio"))):
        text = yaml.safe_dump_all(objs)
        assert "SENTINEL" not in text and not by_kind(objs, "Secret")
        for isvc in by_kind(objs, "InferenceService"):
            for e in isvc["spec"]["predictor"]["model"].get("env", []):
                if e["name"] == "INSURANCE_API_KEYS":
                    assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "insurance-api-keys"
    # a key typed into values anywhere the chart knows is refused, and not echoed
    for sets in (f"auth.apiKeys.keys[0]={sentinel}", f"auth.apiKeys.apiKey={sentinel}", f"auth.jwt.secret={sentinel}",
                 f"istio.apiKey={sentinel}"):
        err = helm_template_error(sets=(sets,))
        assert "additional properties" in err and "SENTINEL" not in err, err


def test_network_policy_admits_only_ingress_and_scrapers_with_istio(istio_objs):
    np = one(istio_objs, "NetworkPolicy")
    ports = {frozenset(p["port"] for p in r["ports"]): r.get("from") for r in np["spec"]["ingress"]}
    assert set(ports) == {frozenset({8080, 8081}), frozenset({8082})}
    assert all(ports.values()), "every rule names its peers: an empty `from` admits everybody"
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}} in ports[
        frozenset({8080, 8081})]
