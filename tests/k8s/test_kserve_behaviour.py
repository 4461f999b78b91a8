"""The chart as KServe's own code treats it (issue 11): each test renders the chart with the real
helm and runs the result through kserve_emulation.py, a small Python mirror of the KServe
controller and webhook functions named there (no KServe controller runs here). Each would have
failed on the chart before the fix it guards."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess

import pytest
import yaml

from lifecycle import rollout

from . import kserve_emulation as kserve
from .kube import CHART, NAMESPACE, RELEASE, REPO, VERTICALS, by_kind, helm_template, helm_template_error, isvcs, \
    one, run, tool
from .test_schemas import validate_core, validate_custom


def _runtime(objs: list[dict]) -> dict:
    [rt] = by_kind(objs, "ServingRuntime") + by_kind(objs, "ClusterServingRuntime")
    return rt


def _flat(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _flat(v, f"{path}[{i}]")
    else:
        yield path, node


def _diff(a: dict, b: dict) -> set[str]:
    fa, fb = dict(_flat(a)), dict(_flat(b))
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def _render(values: dict, chart=CHART, tmp=None) -> list[dict]:
    path = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    p = run([tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE, "-f", str(path)])
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _apply(values: dict, sets: list[str]) -> dict:
    """`helm upgrade --reset-then-reuse-values --set ...` as the rollout commands plan it."""
    out = json.loads(json.dumps(values))
    for s in sets:
        key, _, raw = s.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = raw if key.endswith((".version", ".storageUri")) else yaml.safe_load(raw)
    return out


def _stable_pod(objs: list[dict], vertical: str = "auto") -> dict:
    return kserve.pod_template(isvcs(objs)[vertical], _runtime(objs))


def _base(mode: str) -> dict:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    values["deploymentMode"] = mode
    if mode == "Knative":
        values["ingress"]["kind"] = "istio"
    return values


# ---- 1. pod templates stable across canary, rollback, promote and chart releases ------------

PROBE_PATHS = {"spec.containers[0].readinessProbe.httpGet.path", "spec.containers[0].startupProbe.httpGet.path"}
BUNDLE = PROBE_PATHS | {f"metadata.annotations.{kserve.STORAGE_URI_ANNOTATION}"}


def test_standard_stable_pods_change_only_when_promoted(tmp_path):
    base = _base("Standard")
    stable = _stable_pod(_render(base, tmp=tmp_path))
    canary = _apply(base, rollout.plan("canary", base, "auto", "1.1.0", 10))
    assert _diff(stable, _stable_pod(_render(canary, tmp=tmp_path))) == set(), "starting a canary rolls no stable pod"
    moved = _apply(canary, rollout.plan("canary", canary, "auto", "1.1.0", 50))
    assert _diff(stable, _stable_pod(_render(moved, tmp=tmp_path))) == set()
    rolled_back = _apply(canary, rollout.plan("rollback", canary, "auto"))
    assert _diff(stable, _stable_pod(_render(rolled_back, tmp=tmp_path))) == set()
    promoted = _apply(canary, rollout.plan("promote", canary, "auto", "1.1.0"))
    after = _stable_pod(_render(promoted, tmp=tmp_path))
    assert _diff(stable, after) == BUNDLE, "promoting swaps exactly the bundle"
    assert after["metadata"]["annotations"][kserve.STORAGE_URI_ANNOTATION].endswith("/auto/1.1.0")
    # the other verticals never move
    for v in VERTICALS[1:]:
        assert _diff(_stable_pod(_render(base, tmp=tmp_path), v), _stable_pod(_render(promoted, tmp=tmp_path), v)) == set()


def test_knative_revisions_only_when_the_bundle_changes(tmp_path):
    base = _base("Knative")
    stable = _stable_pod(_render(base, tmp=tmp_path))
    canary = _apply(base, rollout.plan("canary", base, "auto", "1.1.0", 10))
    at_10 = _stable_pod(_render(canary, tmp=tmp_path))
    assert _diff(stable, at_10) == BUNDLE, "the canary revision differs by its bundle only"
    moved = _apply(canary, rollout.plan("canary", canary, "auto", "1.1.0", 50))
    assert _diff(at_10, _stable_pod(_render(moved, tmp=tmp_path))) == set(), "shifting traffic makes no revision"
    promoted = _apply(canary, rollout.plan("promote", canary, "auto", "1.1.0"))
    assert _diff(at_10, _stable_pod(_render(promoted, tmp=tmp_path))) == set(), "promote: no new revision"
    rolled_back = _apply(canary, rollout.plan("rollback", canary, "auto"))
    assert _diff(stable, _stable_pod(_render(rolled_back, tmp=tmp_path))) == set(), \
        "rollback puts the stable template back: the canary revision leaves the route"
    assert isvcs(_render(rolled_back, tmp=tmp_path))["auto"]["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_a_chart_release_restarts_no_predictor(tmp_path):
    bumped = tmp_path / "chart"
    shutil.copytree(CHART, bumped)
    meta = yaml.safe_load((bumped / "Chart.yaml").read_text(encoding="utf-8"))
    meta["version"], meta["appVersion"] = "9.9.9", "9.9.9"
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    values = _base("Standard")
    values["image"]["tag"] = "0.1.0"  # the image stays; only the chart is new
    before, after = _render(values, tmp=tmp_path), _render(values, chart=bumped, tmp=tmp_path)
    for v in VERTICALS:
        assert _diff(_stable_pod(before, v), _stable_pod(after, v)) == set(), v
    # other objects still carry the chart and app versions
    assert one(after, "NetworkPolicy")["metadata"]["labels"]["helm.sh/chart"] == "insurance-serving-9.9.9"
    for isvc in isvcs(after).values():
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(isvc["metadata"]["labels"])
        assert not [k for k in isvc["metadata"]["annotations"] if k.startswith("insurance-serving.io/")]


# ---- 2. ingress kind: a Standard canary needs Gateway API ------------------------------------

@pytest.mark.parametrize("kind", ["ingress", "none"])
def test_standard_canary_without_gateway_api_is_refused(kind):
    err = helm_template_error(sets=(f"ingress.kind={kind}", "verticals.auto.canary.enabled=true",
                                    "verticals.auto.canary.version=1.1.0",
                                    "verticals.auto.canary.storageUri=pvc://insurance-models/auto/1.1.0"))
    assert "a Standard-mode canary is split only by KServe's Gateway API HTTPRoute" in err
    assert f"with ingress.kind {kind} KServe starts the canary Deployment but sends it 0 % of the traffic" in err
    assert "ingress.kind=gwapi" not in err
    # Knative splits in its own route, whatever the ingress
    objs = helm_template(sets=("deploymentMode=Knative", "ingress.kind=kourier", "verticals.auto.canary.enabled=true",
                               "verticals.auto.canary.version=1.1.0",
                               "verticals.auto.canary.storageUri=pvc://insurance-models/auto/1.1.0"))
    assert isvcs(objs)["auto"]["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_ingress_kind_must_exist_in_the_mode():
    err = helm_template_error(sets=("ingress.kind=istio",))
    assert "ingress.kind=istio does not exist in Standard mode; use one of gatewayApi, ingress, none" in err


def _run_helm_test_script(pod: dict, tmp_path) -> list[str]:
    """Run the helm test pod's shell script with a `curl` on PATH that records its URLs and
    answers like a ready model: which Services does the test really call?"""
    log = tmp_path / "urls"
    curl = tmp_path / "bin" / "curl"
    curl.parent.mkdir()
    curl.write_text(f'#!/bin/sh\nfor a; do case "$a" in http*) echo "$a" >> {log};; esac; done\n'
                    'echo \'{"outputs": []}\'\n')
    curl.chmod(curl.stat().st_mode | stat.S_IEXEC)
    c = pod["spec"]["containers"][0]
    env = {**os.environ, "PATH": f"{curl.parent}:{os.environ['PATH']}",
           **{e["name"]: e["value"] for e in c["env"]}}
    script = c["args"][0].replace("/requests/", str(tmp_path) + "/")
    p = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return log.read_text().split()


def test_helm_test_checks_the_canary_through_its_own_service(tmp_path):
    """`<isvc>-predictor` selects the stable Deployment's pods only (app: isvc.<isvc>-predictor);
    the canary pods carry app: isvc.<isvc>-<name>-predictor, so the test must call that Service."""
    objs = helm_template(sets=("verticals.auto.canary.enabled=true", "verticals.auto.canary.version=1.1.0",
                               "verticals.auto.canary.storageUri=pvc://insurance-models/auto/1.1.0",
                               "inferenceServiceNamePrefix=blue-"))
    urls = _run_helm_test_script(one(objs, "Pod"), tmp_path)
    assert "http://blue-auto-v1-1-0-predictor.insurance-serving.svc.cluster.local" \
           "/v2/models/auto/versions/1.1.0/ready" in urls
    assert "http://blue-auto-predictor.insurance-serving.svc.cluster.local/v2/models/auto/ready" in urls
    isvc = isvcs(objs)["blue-auto"]
    canary = kserve.build_canary_predictor(isvc["spec"]["predictor"], isvc["spec"]["canary"][0])
    cpod = kserve.pod_template(isvc, _runtime(objs), canary, canary["name"])
    assert cpod["service"] == "blue-auto-v1-1-0-predictor"
    assert cpod["metadata"]["labels"]["app"] != _stable_pod(objs, "blue-auto")["metadata"]["labels"]["app"]
    assert "stable and canary alike" not in json.dumps(one(objs, "Pod"))


# ---- 3. NetworkPolicy admits the pods that really connect -----------------------------------

def _inference_peers(objs) -> list:
    np = one(objs, "NetworkPolicy")
    [rule] = [r for r in np["spec"]["ingress"] if 8080 in {p["port"] for p in r["ports"]}
              or 8012 in {p["port"] for p in r["ports"]}]
    return rule["from"]


def _ns(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


@pytest.mark.parametrize("sets, namespaces", [
    ((), ["envoy-gateway-system"]),  # KServe's Gateway API setup: Envoy Gateway's proxies
    (("ingress.kind=ingress",), ["istio-system"]),  # KServe's default ingressClassName istio
    (("ingress.kind=ingress", "ingress.namespaces={ingress-nginx}"), ["ingress-nginx"]),
    (("deploymentMode=Knative", "ingress.kind=istio"), ["istio-system"]),
    (("deploymentMode=Knative", "ingress.kind=kourier"), ["kourier-system"]),
])
def test_network_policy_admits_the_ingress_namespace(sets, namespaces):
    peers = _inference_peers(helm_template(sets=sets))
    assert [p for p in peers if "namespaceSelector" in p and p != _ns("knative-serving")] == [_ns(n) for n in namespaces]
    assert {"podSelector": {}} in peers, "pods of the release namespace (helm test, in-cluster callers)"


def test_network_policy_without_peers_admits_nobody():
    np = one(helm_template(sets=("ingress.kind=none", "networkPolicy.inferenceFrom=null")), "NetworkPolicy")
    assert [{p["port"] for p in r["ports"]} for r in np["spec"]["ingress"]] == [{8082}]


def test_logger_port_is_admitted_and_rendered_where_kserve_reads_it():
    objs = helm_template(sets=("predictor.logger.enabled=true", "predictor.logger.url=http://audit.logging/events",
                               "predictor.logger.mode=request"))
    ports = {p["port"] for r in one(objs, "NetworkPolicy")["spec"]["ingress"] for p in r["ports"]}
    assert 9081 in ports, "with the logger KServe's Service targets the agent port (service_reconciler.go)"
    isvc = isvcs(objs)["auto"]
    assert isvc["spec"]["predictor"]["logger"] == {"mode": "request", "url": "http://audit.logging/events"}
    assert validate_custom(isvc) == []
    pod = _stable_pod(objs)
    assert pod["metadata"]["annotations"]["internal.serving.kserve.io/logger-sink-url"] == "http://audit.logging/events"
    assert "predictor.logger.url is empty" in helm_template_error(sets=("predictor.logger.enabled=true",))


# ---- 4. deployment mode names ----------------------------------------------------------------

@pytest.mark.parametrize("given, written", [("RawDeployment", "Standard"), ("Serverless", "Knative"),
                                             ("Standard", "Standard"), ("Knative", "Knative")])
def test_only_current_mode_names_are_written(given, written):
    sets = (f"deploymentMode={given}",) + (("ingress.kind=istio",) if written == "Knative" else ())
    objs = helm_template(sets=sets)
    for isvc in isvcs(objs).values():
        assert isvc["metadata"]["annotations"][kserve.DEPLOYMENT_MODE] == written
        # KServe stores the normalised mode in the status; every later update (canary, promote,
        # rollback, even an unchanged re-apply) is compared with it (kserve#5885)
        assert kserve.validate_deployment_mode_update(isvc, kserve.parse_deployment_mode(given)) is None
    legacy = {"metadata": {"annotations": {kserve.DEPLOYMENT_MODE: given}}}
    if given != written:
        assert "update rejected" in kserve.validate_deployment_mode_update(legacy, written), "what the fix avoids"


def test_standard_canary_passes_the_webhooks_mode_check():
    objs = helm_template(sets=("deploymentMode=RawDeployment", "verticals.auto.canary.enabled=true",
                               "verticals.auto.canary.version=1.1.0",
                               "verticals.auto.canary.storageUri=pvc://insurance-models/auto/1.1.0"))
    assert kserve.validate_canary_mode(isvcs(objs)["auto"]) is None


# ---- 5. KEDA -----------------------------------------------------------------------------------

KEDA = ("autoscalerClass=keda", "autoscaling.keda.metricType=External",
        "autoscaling.keda.external.serverAddress=http://prometheus-operated.monitoring.svc:9090")


def test_keda_prometheus_trigger_on_the_request_rate():
    objs = helm_template(sets=KEDA)
    isvc = isvcs(objs)["auto"]
    assert validate_custom(isvc) == []
    [trigger] = kserve.keda_triggers(isvc["spec"]["predictor"])
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus-operated.monitoring.svc:9090", "threshold": "20",
        "query": 'sum(rate(ml_scoring_latency_seconds_count{namespace="insurance-serving",'
                 'serving_kserve_io_inferenceservice="auto"}[1m]))'}
    # the series the query reads: the runtime's counter, labelled by the PodMonitor's podTargetLabels
    from observability.contract import ML_METRICS
    assert "ml_scoring_latency_seconds" in {m.name for m in ML_METRICS}
    assert "serving.kserve.io/inferenceservice" in one(objs, "PodMonitor")["spec"]["podTargetLabels"]


def test_keda_canary_runs_fixed_replicas_without_a_scaled_object():
    objs = helm_template(sets=KEDA + ("verticals.auto.canary.enabled=true", "verticals.auto.canary.version=1.1.0",
                                      "verticals.auto.canary.storageUri=pvc://insurance-models/auto/1.1.0"))
    isvc = isvcs(objs)["auto"]
    entry = isvc["spec"]["canary"][0]
    canary = kserve.build_canary_predictor(isvc["spec"]["predictor"], entry)
    assert kserve.keda_triggers(canary) == [], "KServe clears the canary's autoScaling"
    cpod = kserve.pod_template(isvc, _runtime(objs), canary, canary["name"])
    assert kserve.autoscaler_class(cpod) == "none", "no trigger-less ScaledObject (KEDA 2.14+ rejects it)"
    assert kserve.autoscaler_class(_stable_pod(objs)) == "keda"
    # without the chart's annotation the canary would inherit keda with zero triggers
    bare = {**entry, "predictor": {k: v for k, v in entry["predictor"].items() if k != "annotations"}}
    bare_pred = kserve.build_canary_predictor(isvc["spec"]["predictor"], bare)
    assert kserve.autoscaler_class(kserve.pod_template(isvc, _runtime(objs), bare_pred, "x")) == "keda"


@pytest.mark.parametrize("sets, message", [
    (("autoscalerClass=keda", "verticals.life.minReplicas=0"),
     "verticals.life: minReplicas 0 (scale to zero) with autoscalerClass keda on cpu: KEDA's cpu and memory scalers "
     "cannot scale to zero"),
    (KEDA + ("verticals.life.minReplicas=0",), "at zero pods that metric is gone and nothing scales the vertical up"),
    (("autoscalerClass=keda", "autoscaling.keda.metricType=External"),
     "autoscaling.keda.metricType=External needs autoscaling.keda.external.serverAddress"),
])
def test_keda_combinations_that_cannot_work_are_refused(sets, message):
    assert message in helm_template_error(sets=sets)


def test_keda_scale_to_zero_with_a_gateway_query_renders():
    q = "sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name=~\".*life-predictor.*\"}[1m]))"
    objs = helm_template(sets=KEDA + ("verticals.life.minReplicas=0", f"autoscaling.keda.external.query={q}"))
    assert kserve.keda_triggers(isvcs(objs)["life"]["spec"]["predictor"])[0]["metadata"]["query"] == q


# ---- 6. s3 prefixes ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["verticals.auto.storageUri", "verticals.auto.canary.storageUri"])
def test_s3_uris_without_a_trailing_slash_are_refused(key):
    sets = [f"{key}=s3://bucket/models/auto/1.1.0"]
    if "canary" in key:
        sets += ["verticals.auto.canary.enabled=true", "verticals.auto.canary.version=1.1.0"]
    err = helm_template_error(sets=tuple(sets))
    assert f"at '/{key.replace('.', '/')}'" in err and "'/$'" in err
    ok = helm_template(sets=tuple(s.replace("1.1.0", "1.1.0/") if s.startswith(key) else s for s in sets))
    assert any(str(i["spec"]).count("s3://bucket/models/auto/1.1.0/") for i in isvcs(ok).values())


# ---- 7. scrape annotations reach the pods --------------------------------------------------------

@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_scrape_annotations_reach_the_pods(mode):
    objs = helm_template(sets=(f"deploymentMode={mode}",) + (("ingress.kind=istio",) if mode == "Knative" else ()))
    ann = _stable_pod(objs)["metadata"]["annotations"]
    env = {e["name"]: e["value"] for e in _runtime(objs)["spec"]["containers"][0]["env"]}
    assert ann["prometheus.kserve.io/port"] == env["MLSERVER_METRICS_PORT"] == "8082"
    assert ann["prometheus.kserve.io/path"] == "/metrics"


# ---- 8. shared model volume ------------------------------------------------------------------------

def test_read_write_once_claims_are_refused():
    err = helm_template_error(sets=("modelStorage.pvcAccessMode=ReadWriteOnce",))
    assert "claim(s) insurance-models serve pods on several nodes" in err and "ReadWriteMany" in err
    # object storage needs no claim
    objs = helm_template(sets=("modelStorage.pvcAccessMode=ReadWriteOnce",) + tuple(
        f"verticals.{v}.storageUri=gs://bucket/{v}/1.0.0" for v in VERTICALS))
    assert len(isvcs(objs)) == len(VERTICALS)


# ---- 9. names --------------------------------------------------------------------------------------

def test_runtime_names_never_collide_across_namespaces():
    def names(ns, *sets):
        p = run([tool("helm"), "template", RELEASE, str(CHART), "-n", ns, "--skip-tests", *[
            a for s in sets for a in ("--set", s)]])
        assert p.returncode == 0, p.stderr
        rt = _runtime([d for d in yaml.safe_load_all(p.stdout) if d])
        return rt["kind"], rt["metadata"]["name"], rt["metadata"].get("namespace")
    a, b = names("team-a"), names("team-b")
    assert a == ("ClusterServingRuntime", "insurance-serving-team-a-mlserver", None)
    assert b[1] == "insurance-serving-team-b-mlserver", "two namespaces, two cluster-wide runtimes"
    assert names("team-a", "servingRuntime.kind=ServingRuntime") == ("ServingRuntime", "insurance-serving-mlserver",
                                                                     "team-a")


def test_a_second_release_gets_its_own_inference_service_names():
    first, second = helm_template(), helm_template(sets=("inferenceServiceNamePrefix=blue-",))
    assert set(isvcs(first)) == set(VERTICALS)
    assert set(isvcs(second)) == {f"blue-{v}" for v in VERTICALS}
    blue = isvcs(second)["blue-auto"]
    assert blue["spec"]["predictor"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "blue-auto"}
    assert one(second, "PodDisruptionBudget", "blue-auto-predictor")
    # the model name MLServer serves is still the vertical: probes and examples keep it
    assert blue["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"]["path"] == \
        "/v2/models/auto/versions/1.0.0/ready"
    assert "already exists (release" in (CHART / "templates" / "validate.yaml").read_text(), \
        "on a live install a taken name is refused (lookup; helm template cannot exercise it)"


# ---- 10. what a production install needs ----------------------------------------------------------

def test_pod_disruption_budget_selects_exactly_the_stable_pods(default_objs):
    isvc = isvcs(default_objs)["auto"]
    pdb = one(default_objs, "PodDisruptionBudget", "auto-predictor")
    assert validate_core(pdb) == []
    sel = pdb["spec"]["selector"]["matchLabels"]
    stable = _stable_pod(default_objs)["metadata"]["labels"]
    assert all(stable.get(k) == v for k, v in sel.items())
    canary = kserve.pod_template(isvc, _runtime(default_objs), kserve.build_canary_predictor(
        isvc["spec"]["predictor"], {"trafficPercent": 10, "predictor": {"name": "v1-1-0"}}), "v1-1-0")
    assert not all(canary["metadata"]["labels"].get(k) == v for k, v in sel.items())
    assert pdb["spec"]["maxUnavailable"] == 1
    knative = helm_template(sets=("deploymentMode=Knative", "ingress.kind=istio"))
    assert not by_kind(knative, "PodDisruptionBudget")
    assert "topologySpreadConstraints" not in isvcs(knative)["auto"]["spec"]["predictor"]


def test_topology_spread_matches_the_vertical_pods(default_objs):
    pod = _stable_pod(default_objs)
    [tsc] = pod["spec"]["topologySpreadConstraints"]
    assert tsc["topologyKey"] == "kubernetes.io/hostname" and tsc["whenUnsatisfiable"] == "ScheduleAnyway"
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in tsc["labelSelector"]["matchLabels"].items())
    assert tsc["matchLabelKeys"] == ["pod-template-hash"]


RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _restricted(pod_sc: dict, container_sc: dict) -> list[str]:
    """Pod Security `restricted` checks that a container inherits from the pod or sets itself."""
    sc = {**pod_sc, **container_sc}
    problems = []
    if sc.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot")
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile")
    if container_sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if "ALL" not in (container_sc.get("capabilities") or {}).get("drop", []):
        problems.append("capabilities")
    return problems


def test_every_container_runs_restricted_including_the_storage_initializer(default_objs, knative_objs):
    pod = _stable_pod(default_objs)
    pod_sc = pod["spec"]["securityContext"]
    assert _restricted(pod_sc, pod["spec"]["containers"][0]["securityContext"]) == []
    # KServe's storage-initializer: the securityContext of KServe's own chart
    # (charts/kserve-resources/values.yaml storage.containerSecurityContext) and no seccomp profile
    storage_initializer = {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                           "capabilities": {"drop": ["ALL"]}}
    assert _restricted(pod_sc, storage_initializer) == []
    assert _restricted({}, storage_initializer) == ["seccompProfile"], "what it lacked without the pod-level context"
    # Knative's webhook would reject the field (PodSecurityContextMask without its feature flag)
    assert "securityContext" not in isvcs(knative_objs)["auto"]["spec"]["predictor"]


def test_standard_pods_leave_the_endpoints_before_the_server_stops(default_objs, knative_objs):
    c = _stable_pod(default_objs)["spec"]["containers"][0]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert _stable_pod(default_objs)["spec"]["terminationGracePeriodSeconds"] == 30
    assert "lifecycle" not in _runtime(knative_objs)["spec"]["containers"][0], "Knative's queue-proxy drains"
    assert "terminationGracePeriodSeconds" not in isvcs(knative_objs)["auto"]["spec"]["predictor"]
    err = helm_template_error(sets=("servingRuntime.preStopSleepSeconds=30",))
    assert "predictor.terminationGracePeriodSeconds (30) must exceed servingRuntime.preStopSleepSeconds (30)" in err


def test_request_timeout(default_objs):
    assert isvcs(default_objs)["auto"]["spec"]["predictor"]["timeout"] == 30
    assert "timeout" not in isvcs(helm_template(sets=("predictor.timeout=0",)))["auto"]["spec"]["predictor"]


# ---- ports and verticals in one place ---------------------------------------------------------------

def test_ports_are_written_once_in_the_templates():
    found = {}
    for path in (CHART / "templates").rglob("*"):
        if path.is_file() and path.name != "_helpers.tpl":
            hits = re.findall(r"\b808[0-2]\b", path.read_text(encoding="utf-8"))
            if hits:
                found[path.name] = hits
    assert found == {}, "ports belong in _helpers.tpl"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    assert [m for m in re.findall(r"\b808[0-2]\b", helpers)] == ["8080", "8081", "8082"]


def test_vertical_lists_follow_the_config():
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    names = re.search(r'define "insurance-serving.verticalNames" -}}([a-z,]+)', helpers).group(1)
    assert tuple(names.split(",")) == VERTICALS == rollout.VERTICALS
    assert "VERTICALS = (" not in (REPO / "lifecycle" / "rollout.py").read_text()
