"""The chart's values for the runtime's roles, tenants and rate limits (issue 12) reach every
predictor container as the environment the runtime reads, and the runtime accepts what is
rendered: each rendered env is loaded into runtime.settings.RuntimeSettings (the same
pydantic-settings class the server builds from INSURANCE_* variables), whose rate_limits() is
what runtime.ratelimit.Policy applies (runtime.ratelimit itself imports MLServer, whose gRPC
protos cannot share this process with tritonclient's). Bad values fail `helm template` (schema or chart) naming the key: those
cases are files in tests/k8s/values/bad/ (test_chart.py runs them); here the ones about how the
runtime would read a value. Real helm; no cluster (KServe's merge of the canary predictor is
emulated by tests/k8s/kserve_emulation.py)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runtime.settings import RuntimeSettings

from .kserve_emulation import build_canary_predictor
from .kube import CHART, RELEASE, VALUES_DIR, VERTICALS, by_kind, helm_template, helm_template_error, run, tool

ISTIO = VALUES_DIR / "istio-jwt.yaml"
NEW_VARS = ("INSURANCE_JWT_ROLES_CLAIM", "INSURANCE_JWT_TENANT_CLAIM", "INSURANCE_RATE_LIMIT",
            "INSURANCE_RATE_LIMIT_BURST", "INSURANCE_RATE_LIMIT_ROLES")


def _values(tmp_path, values: dict):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def _containers_env(objs) -> dict[str, dict[str, str]]:
    """{predictor: {name: value}} of every model container, stable and (Standard) canary predictors
    as KServe builds them; variables from a Secret (valueFrom) are left out."""
    out = {}
    for isvc in by_kind(objs, "InferenceService"):
        stable = isvc["spec"]["predictor"]
        preds = {isvc["metadata"]["name"]: stable}
        for c in isvc["spec"].get("canary", []):
            preds[f"{isvc['metadata']['name']}-{c['predictor']['name']}"] = build_canary_predictor(stable, c)
        for name, pred in preds.items():
            out[name] = {e["name"]: e["value"] for e in pred["model"].get("env", []) if "value" in e}
    return out


def _settings(env: dict[str, str], monkeypatch) -> RuntimeSettings:
    """RuntimeSettings as the server builds it from exactly this environment."""
    import os

    for k in [k for k in os.environ if k.startswith("INSURANCE_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return RuntimeSettings()


def test_off_by_default(default_objs, knative_objs, standard_objs):
    """Nothing new is rendered unless asked for: the default manifests stay as they were."""
    for objs in (default_objs, knative_objs, standard_objs):
        for name, env in _containers_env(objs).items():
            assert not set(env) & set(NEW_VARS), (name, env)
    rt = by_kind(default_objs, "ClusterServingRuntime")[0]
    assert not {e["name"] for e in rt["spec"]["containers"][0]["env"]} & set(NEW_VARS)


@pytest.mark.parametrize("extra", [(), ("deploymentMode=Knative", "ingress.kind=istio")], ids=["standard", "knative"])
def test_every_value_reaches_every_predictor_as_the_runtime_reads_it(tmp_path, monkeypatch, extra):
    values = _values(tmp_path, {
        "auth": {"jwt": {"rolesClaim": "https://insurance.example/roles", "tenantClaim": "org_id"}},
        "rateLimit": {"requestsPerSecond": 2.5, "burst": 10,
                      "roles": {"outcomes": "5/10", "admin": 1, "inference": 0.5}},
        # a Standard canary gets its env from the stable predictor (KServe's merge; split by Gateway API)
        "ingress": {"kind": "gatewayApi"},
        "verticals": {"auto": {"canary": {"enabled": True, "version": "1.1.0",
                                          "storageUri": "pvc://insurance-models/auto/1.1.0"}}},
    })
    objs = helm_template(ISTIO, values, sets=extra)
    envs = _containers_env(objs)
    assert set(VERTICALS) <= set(envs)
    if not extra:
        assert "auto-v1-1-0" in envs, "the Standard canary predictor is checked too"
    for name, env in envs.items():
        assert env["INSURANCE_JWT_ROLES_CLAIM"] == "https://insurance.example/roles", name
        assert env["INSURANCE_JWT_TENANT_CLAIM"] == "org_id", name
        assert env["INSURANCE_RATE_LIMIT"] == "2.5" and env["INSURANCE_RATE_LIMIT_BURST"] == "10", name
        assert json.loads(env["INSURANCE_RATE_LIMIT_ROLES"]) == {"outcomes": "5/10", "admin": "1", "inference": "0.5"}
        s = _settings(env, monkeypatch)
        assert (s.jwt_roles_claim, s.jwt_tenant_claim) == ("https://insurance.example/roles", "org_id")
        assert (s.rate_limit, s.rate_limit_burst) == (2.5, 10.0)
        default, roles = s.rate_limits()
        assert default == (2.5, 10.0)
        assert roles == {"outcomes": (5.0, 10.0), "admin": (1.0, 1.0), "inference": (0.5, 1.0)}


@pytest.mark.parametrize("rate, burst, rendered, want", [
    (1, 0, "1", (1.0, 1.0)),                 # burst 0: not rendered, the runtime's max(rate, 1)
    (0.001, 0, "0.001", (0.001, 1.0)),
    (10_000_000, 20_000_000, "10000000", (1e7, 2e7)),  # not Go's 1e+07
    ("2.5", "3", "2.5", (2.5, 3.0)),         # what `--set rateLimit.requestsPerSecond=2.5` passes (a string)
])
def test_rendered_rates_parse_in_the_runtime(tmp_path, monkeypatch, rate, burst, rendered, want):
    objs = helm_template(_values(tmp_path, {"rateLimit": {"requestsPerSecond": rate, "burst": burst}}))
    env = _containers_env(objs)["auto"]
    assert env["INSURANCE_RATE_LIMIT"] == rendered
    assert ("INSURANCE_RATE_LIMIT_BURST" in env) == (float(burst) > 0)
    assert "INSURANCE_RATE_LIMIT_ROLES" not in env
    assert _settings(env, monkeypatch).rate_limits()[0] == want


def test_set_passes_fractions_as_strings_and_the_chart_takes_them(monkeypatch):
    objs = helm_template(sets=("rateLimit.requestsPerSecond=0.5", "rateLimit.roles.outcomes=5/10"))
    env = _containers_env(objs)["home"]
    assert env["INSURANCE_RATE_LIMIT"] == "0.5"
    assert _settings(env, monkeypatch).rate_limits()[1] == {"outcomes": (5.0, 10.0)}


def test_roles_alone_turn_the_limit_on_without_a_default(tmp_path, monkeypatch):
    objs = helm_template(_values(tmp_path, {"rateLimit": {"roles": {"admin": "1/5"}}}))
    env = _containers_env(objs)["claims"]
    assert "INSURANCE_RATE_LIMIT" not in env and json.loads(env["INSURANCE_RATE_LIMIT_ROLES"]) == {"admin": "1/5"}
    default, roles = _settings(env, monkeypatch).rate_limits()
    assert default is None and roles == {"admin": (1.0, 5.0)}


@pytest.mark.parametrize("roles", ["outcomes=5", "{outcomes: 5}", '{"outcomes": "5/10"}'])
def test_roles_as_a_string_fail_the_schema(roles):
    """INSURANCE_RATE_LIMIT_ROLES is JSON the chart writes from a map: a string (JSON or not) is refused."""
    err = helm_template_error(sets=(f"rateLimit.roles={roles}",))
    assert "/rateLimit/roles" in err and "want object" in err, err


@pytest.mark.parametrize("sets, message", [
    (("rateLimit.requestsPerSecond=-5",), "at '/rateLimit/requestsPerSecond'"),
    (("rateLimit.requestsPerSecond=fast",), "'fast' does not match pattern"),
    (("rateLimit.requestsPerSecond=1e3",), "at '/rateLimit/requestsPerSecond'"),
    (("rateLimit.burst=-1",), "at '/rateLimit/burst'"),
    (("rateLimit.requestsPerSecond=1", "rateLimit.burst=0.25"), "rateLimit.burst=0.25: the bucket must hold"),
    (("rateLimit.roles.admin=-1",), "at '/rateLimit/roles/admin'"),
    (("rateLimit.roles.outcomes=5/",), "at '/rateLimit/roles/outcomes'"),
    (("rateLimit.roles.outcomes=5/0",), "rateLimit.roles.outcomes=5/0: the burst after / must be >= 1"),
    (("rateLimit.rate=5",), "additional properties 'rate' not allowed"),
    (("auth.jwt.rolesClaim=my roles",), "at '/auth/jwt/rolesClaim'"),
    (("auth.jwt.tenantClaim=org",), "auth.jwt.rolesClaim / auth.jwt.tenantClaim are read by the runtime's JWT"),
])
def test_bad_values_fail_naming_the_key(sets, message):
    err = helm_template_error(sets=sets)
    assert message in err, err


@pytest.mark.parametrize("rate", ["0", "0/1", "3", "1.5/2", "100/1000", "0.25/1.0"])
def test_what_the_schema_admits_the_runtime_accepts(monkeypatch, rate):
    """The chart's checks are no looser than runtime.settings.parse_rate: a role rate the chart
    renders never fails the model's load."""
    objs = helm_template(sets=(f"rateLimit.roles.outcomes={rate}",))
    env = _containers_env(objs)["life"]
    assert _settings(env, monkeypatch).rate_limit_roles == {"outcomes": rate}


def _notes(*args: str) -> str:
    p = run([tool("helm"), "install", RELEASE, str(CHART), "--dry-run=client", "-n", RELEASE, *args])
    assert p.returncode == 0, p.stderr
    return re.sub(r"\s+", " ", p.stdout.split("NOTES:", 1)[1])


def test_notes_say_the_repository_api_needs_an_admin_credential():
    notes = _notes("-f", str(ISTIO), "--set", "auth.jwt.rolesClaim=groups")
    assert "repository API" in notes and "a key line `<key> admin` in api-keys" in notes
    assert "a JWT whose `groups` claim names admin" in notes and "other credentials get 403" in notes
    assert "Authentication is off" not in notes
    off = _notes()
    assert "Authentication is off: the model repository API (load/unload) is open" in off
    assert "a key line `<key> admin`" not in off
    assert "Rate limit" not in off
    assert "Rate limit per credential and pod: 5/s by default, per role {\"admin\":\"1/2\"}" in _notes(
        "--set", "rateLimit.requestsPerSecond=5", "--set", "rateLimit.roles.admin=1/2")


def test_retrain_job_holds_no_admin_credential(tmp_path):
    """The retrain CronJob registers candidates in the model store and rolls nothing out (no
    --rollout auto), so it never calls the repository API and gets no admin key."""
    objs = helm_template(sets=("retrain.enabled=true", "retrain.database.existingSecret=db", "auth.apiKeys.enabled=true",
                               "auth.apiKeys.existingSecret=insurance-api-keys"))
    jobs = by_kind(objs, "CronJob")
    assert jobs
    for job in jobs:
        [c] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert c["args"][0] == "retrain" and not any(a.startswith("--rollout") for a in c["args"])
        assert not any(e["name"].startswith("INSURANCE_ADMIN") for e in c["env"])
        assert "insurance-api-keys" not in yaml.safe_dump(job)
