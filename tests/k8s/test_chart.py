"""The Helm chart with the real helm v4 binary: lint, bad values, and what the rendered
objects mean to KServe, Knative, Prometheus and Grafana (not just that they render)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .kube import (CHART, REPO, VALUES_DIR, VERTICALS, by_kind, helm_template, helm_template_error, isvcs, one,
                   run, tool, verticals_config)

BAD = sorted((VALUES_DIR / "bad").glob("*.yaml"))


# ---- helm lint and the values schema --------------------------------------------------------

@pytest.mark.parametrize("values", [None, "knative-canary.yaml", "standard-canary.yaml"])
def test_helm_lint_strict(values):
    cmd = [tool("helm"), "lint", "--strict", str(CHART)]
    if values:
        cmd += ["-f", str(VALUES_DIR / values)]
    p = run(cmd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout


@pytest.mark.parametrize("bad", BAD, ids=[b.stem for b in BAD])
def test_bad_values_fail_with_a_clear_message(bad: Path):
    expect = bad.read_text(encoding="utf-8").splitlines()[0]
    assert expect.startswith("# expect: "), f"{bad.name} must start with '# expect: <message>'"
    message = expect[len("# expect: "):]
    err = helm_template_error(bad)
    assert message in err, f"{bad.name}: expected {message!r} in:\n{err}"


def test_the_four_required_bad_cases_are_covered():
    names = {b.stem for b in BAD}
    assert {"canary-percent-150", "unknown-vertical", "missing-storage-uri", "min-above-max-replicas"} <= names


def test_every_value_is_documented():
    """Each leaf of values.yaml has a `# --` comment (helm-docs style) on it or on an ancestor."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented)
    prev_doc = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            prev_doc = True
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = prev_doc or any(d for _, d in stack)
        key, _, inline = stripped.partition(":")
        if inline.strip() and not documented:  # a leaf (sections are documented by their leaves)
            undocumented.append(key)
        stack.append((indent, documented))
        prev_doc = False
    assert not undocumented, f"values without a '# --' comment: {undocumented}"


def test_values_keys_are_camel_case():
    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if path.startswith(("predictor.labels", "predictor.annotations", "metrics.monitor.labels",
                                    "dashboards.annotations", "prometheusRule.")) or "Selector" in path:
                    continue
                assert re.fullmatch(r"[a-z][A-Za-z0-9]*", k), f"{path}{k} is not camelCase"
                walk(v, f"{path}{k}.")
    walk(yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8")))


# ---- InferenceServices ----------------------------------------------------------------------

def test_every_vertical_of_the_config_has_an_inference_service(default_objs):
    config = verticals_config()
    services = isvcs(default_objs)
    assert set(services) == set(config) == set(VERTICALS)
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for name, spec in config.items():
        fmt = services[name]["spec"]["predictor"]["model"]["modelFormat"]["name"]
        assert fmt == spec["framework"], f"{name}: modelFormat {fmt} but verticals.yaml says {spec['framework']}"
        assert values["verticals"][name]["modelFormat"] == spec["framework"]


def test_runtime_formats_cover_the_bundles(default_objs):
    rt = one(default_objs, "ClusterServingRuntime")
    formats = {f["name"]: f for f in rt["spec"]["supportedModelFormats"]}
    assert set(formats) == {c["framework"] for c in verticals_config().values()}
    assert all(f["autoSelect"] is False for f in formats.values()), "never auto-selected for foreign models"
    assert set(rt["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    for isvc in isvcs(default_objs).values():
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == rt["metadata"]["name"]
        assert model["protocolVersion"] == "v2"


def test_storage_uri_and_versions_land_where_kserve_reads_them(default_objs):
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["verticals"]
    for name, isvc in isvcs(default_objs).items():
        model = isvc["spec"]["predictor"]["model"]
        assert model["storageUri"] == values[name]["storageUri"]
        assert model["storageUri"].endswith(f"/{name}/{values[name]['version']}")
        assert "canary" not in isvc["spec"] and "canaryTrafficPercent" not in isvc["spec"]["predictor"]


def _scenario_values(name: str) -> dict:
    """The chart's values.yaml with the scenario's values file on top (as helm merges them)."""
    from .conftest import SCENARIOS

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k) or {}, v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for f in SCENARIOS[name]:
        merge(values, yaml.safe_load(Path(f).read_text(encoding="utf-8")))
    return values


def _probe_paths(model: dict) -> dict[str, str]:
    return {k: model[k]["httpGet"]["path"] for k in ("readinessProbe", "startupProbe", "livenessProbe") if k in model}


def test_probes_hit_the_v2_health_paths(scenario):
    name, objs = scenario
    rt = by_kind(objs, "ClusterServingRuntime") + by_kind(objs, "ServingRuntime")
    container = rt[0]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    values = _scenario_values(name)
    for vertical, isvc in isvcs(objs).items():
        model = isvc["spec"]["predictor"]["model"]
        v = values["verticals"][vertical]
        # Knative: the predictor describes the newest revision, the canary's while it takes traffic
        version = v["canary"]["version"] if isvc["spec"]["predictor"].get("canaryTrafficPercent") else v["version"]
        ready = f"/v2/models/{vertical}/versions/{version}/ready"
        assert _probe_paths(model) == {"readinessProbe": ready, "startupProbe": ready}, (name, vertical)
        assert model["readinessProbe"]["httpGet"]["port"] == 8080
        # the startup allowance covers a model load (measured ~2 s here; see test_image)
        sp = model["startupProbe"]
        assert sp["periodSeconds"] * sp["failureThreshold"] >= 60
        for canary in isvc["spec"].get("canary", []):
            cmodel = canary["predictor"]["model"]
            cversion = v["canary"]["version"]
            cready = f"/v2/models/{vertical}/versions/{cversion}/ready"
            assert _probe_paths(cmodel) == {"readinessProbe": cready, "startupProbe": cready}


def test_ports_match_the_runtime_settings(scenario):
    name, objs = scenario
    rt = (by_kind(objs, "ClusterServingRuntime") + by_kind(objs, "ServingRuntime"))[0]
    c = rt["spec"]["containers"][0]
    assert c["name"] == "kserve-container"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLSERVER_HTTP_PORT"] == "8080" and env["MLSERVER_GRPC_PORT"] == "8081"
    assert env["MLSERVER_METRICS_PORT"] == "8082"
    assert env["MLSERVER_HOST"] == "0.0.0.0"
    assert not any(k.startswith("MLSERVER_MODEL_") for k in env), "the bundle's model-settings.json names the model"
    ports = c["ports"]
    assert ports[0] == {"name": "http1", "containerPort": 8080, "protocol": "TCP"}, "the Service maps the first port"
    knative = name.startswith("knative")
    if knative:
        assert len(ports) == 1, "Knative allows a single container port"
    else:
        assert {p["name"]: p["containerPort"] for p in ports} == {"http1": 8080, "grpc": 8081, "metrics": 8082}
    # KServe copies a runtime's spec.annotations (not its metadata's) to the pods (buildObjectMeta)
    assert rt["spec"]["annotations"]["prometheus.kserve.io/port"] == env["MLSERVER_METRICS_PORT"]
    assert rt["spec"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert "prometheus.kserve.io/port" not in rt["metadata"].get("annotations", {})
    # the settings the image and the local server use agree
    local = json.loads((REPO / "models" / "settings.json").read_text(encoding="utf-8"))
    assert (local["http_port"], local["grpc_port"], local["metrics_port"]) == (8080, 8081, 8082)
    assert str(local["parallel_workers"]) == env["MLSERVER_PARALLEL_WORKERS"] or name == "standard-canary"


def test_standard_mode_autoscaling_and_rollout(default_objs):
    for isvc in isvcs(default_objs).values():
        ann = isvc["metadata"]["annotations"]
        assert ann["serving.kserve.io/deploymentMode"] == "Standard"
        assert ann["serving.kserve.io/autoscalerClass"] == "hpa"
        p = isvc["spec"]["predictor"]
        assert (p["minReplicas"], p["maxReplicas"], p["scaleMetric"], p["scaleTarget"]) == (1, 3, "cpu", 70)
        assert p["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_knative_canary_renders_canary_traffic_percent(knative_objs):
    services = isvcs(knative_objs)
    auto, claims, home, life = services["auto"], services["claims"], services["home"], services["life"]
    for isvc in services.values():
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]
        assert "canary" not in isvc["spec"], "spec.canary is Standard-mode only"
        assert "deploymentStrategy" not in isvc["spec"]["predictor"], "KServe rejects it outside raw mode"
    # the predictor describes the newest revision: the canary bundle, N % of the traffic
    assert auto["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert auto["spec"]["predictor"]["model"]["storageUri"] == "gs://insurance-models/models/auto/1.1.0"
    assert claims["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert claims["spec"]["predictor"]["model"]["storageUri"].endswith("/claims/1.0.1-rc.1/")
    assert "canaryTrafficPercent" not in home["spec"]["predictor"]
    assert (home["spec"]["predictor"]["scaleMetric"], home["spec"]["predictor"]["scaleTarget"]) == ("rps", 50)
    assert services["health"]["spec"]["predictor"]["scaleMetric"] == "concurrency"
    assert life["spec"]["predictor"]["minReplicas"] == 0, "scale to zero"


def test_standard_canary_renders_spec_canary_within_the_webhook_rules(standard_objs):
    services = isvcs(standard_objs)
    assert "home" not in services, "disabled vertical"
    auto = services["auto"]
    # the values say RawDeployment; KServe's webhook only accepts the current name on updates (kserve#5885)
    assert auto["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert auto["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    pred = auto["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred, "ignored by KServe in Standard mode"
    assert pred["model"]["storageUri"] == "pvc://insurance-models/auto/1.0.0", "stable keeps its bundle"
    assert "name" not in pred, "the stable predictor stays unnamed: Service auto-predictor never changes"
    # KEDA: a resource metric through autoScaling; scaleMetric is rejected by KServe for KEDA
    assert "scaleMetric" not in pred and "scaleTarget" not in pred
    assert pred["autoScaling"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    [entry] = auto["spec"]["canary"]
    assert entry["trafficPercent"] == 20
    cp = entry["predictor"]
    assert cp["name"] == "v1-1-0"
    assert cp["model"]["storageUri"] == "pvc://insurance-models/auto/1.1.0"
    assert cp["model"]["runtime"] == "insurance-mlserver"
    forbidden = {"maxReplicas", "scaleMetric", "scaleTarget", "autoScaling", "canaryTrafficPercent"}
    assert not forbidden & set(cp), "no autoscaling fields on a canary entry (KServe webhook)"
    assert cp["annotations"] == {"serving.kserve.io/autoscalerClass": "none"}, "fixed replicas, no trigger-less KEDA"
    assert cp["minReplicas"] <= pred["minReplicas"]
    health = services["health"]["spec"]
    assert health["canary"][0]["trafficPercent"] == 0 and "minReplicas" not in health["canary"][0]["predictor"]
    assert "canary" not in services["claims"]["spec"]


def test_canary_names_are_valid_predictor_names(standard_objs):
    pattern = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for isvc in isvcs(standard_objs).values():
        for entry in isvc["spec"].get("canary", []):
            name = entry["predictor"]["name"]
            assert pattern.match(name)
            # KServe names the canary Deployment and Service <isvc>-<name>-predictor (a DNS label)
            assert len(f"{isvc['metadata']['name']}-{name}-predictor") <= 63
    rendered = helm_template(VALUES_DIR / "standard-canary.yaml",
                             sets=("verticals.auto.canary.version=2.0.0-RC.1+build.7",))
    name = isvcs(rendered)["auto"]["spec"]["canary"][0]["predictor"]["name"]
    assert name == "v2-0-0-rc-1-build-7" and pattern.match(name)


def test_api_keys_come_from_the_secret_and_never_appear(knative_objs, standard_objs, default_objs):
    for objs in (default_objs,):
        assert "INSURANCE_API_KEYS" not in yaml.safe_dump_all(objs)
    auto = isvcs(knative_objs)["auto"]["spec"]["predictor"]
    [vol] = auto["volumes"]
    assert vol["secret"]["secretName"] == "insurance-api-keys"
    env = {e["name"]: e for e in auto["model"]["env"]}
    assert env["INSURANCE_API_KEYS_FILE"]["value"] == "/var/run/secrets/insurance-serving/api-keys"
    assert auto["model"]["volumeMounts"][0]["readOnly"] is True
    std = isvcs(standard_objs)["auto"]["spec"]["predictor"]
    ref = {e["name"]: e for e in std["model"]["env"]}["INSURANCE_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "insurance-api-keys", "key": "api-keys"}
    assert "volumes" not in std


def test_scenarios_change_the_runtime_kind_and_name(standard_objs, default_objs):
    rt = one(standard_objs, "ServingRuntime")
    assert rt["metadata"]["name"] == "insurance-mlserver" and rt["metadata"]["namespace"] == "insurance-serving"
    assert not by_kind(standard_objs, "ClusterServingRuntime")
    default = one(default_objs, "ClusterServingRuntime")
    assert "namespace" not in default["metadata"], "cluster-scoped"
    assert default["metadata"]["name"] == "insurance-serving-insurance-serving-mlserver", "carries the namespace"


# ---- monitoring, rules, dashboards, network policy, tests -----------------------------------

def _predictor_labels(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["labels"]


def test_pod_monitor_scrapes_the_named_metrics_port(default_objs):
    pm = one(default_objs, "PodMonitor")
    [ep] = pm["spec"]["podMetricsEndpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    rt = one(default_objs, "ClusterServingRuntime")
    assert {"name": "metrics", "containerPort": 8082, "protocol": "TCP"} in rt["spec"]["containers"][0]["ports"]
    for isvc in isvcs(default_objs).values():
        labels = _predictor_labels(isvc)
        assert all(labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())


def test_knative_monitor_reaches_8082_through_its_service(knative_objs):
    svc = one(knative_objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8082, "targetPort": 8082, "protocol": "TCP"}]
    sm = one(knative_objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    for isvc in isvcs(knative_objs).values():
        labels = _predictor_labels(isvc)
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    # PodMonitor variant in Knative mode: declared port 8080, address rewritten to 8082
    pm = one(helm_template(VALUES_DIR / "knative-canary.yaml", sets=("metrics.monitor.kind=PodMonitor",)),
             "PodMonitor")
    [ep] = pm["spec"]["podMetricsEndpoints"]
    assert ep["portNumber"] == 8080
    relabel = ep["relabelings"][0]
    assert re.sub(relabel["regex"], relabel["replacement"].replace("${1}", r"\1"), "10.1.2.3:8080") == "10.1.2.3:8082"
    assert re.sub(relabel["regex"], relabel["replacement"].replace("${1}", r"\1"), "[fd00::1]:8080") == "[fd00::1]:8082"


def _rule_files() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))
            for p in sorted((CHART / "files" / "rules").glob("*.yaml"))}


def test_one_prometheus_rule_per_rules_file(default_objs):
    files = _rule_files()
    assert files, "no rules file in files/rules/"
    rules = {r["metadata"]["annotations"]["insurance-serving.io/source"]: r for r in by_kind(default_objs, "PrometheusRule")}
    assert set(rules) == {f"files/rules/{stem}.yaml" for stem in files}
    for stem, content in files.items():
        assert rules[f"files/rules/{stem}.yaml"]["spec"]["groups"] == content["groups"], "rules wrapped unchanged"


def test_each_alert_can_be_switched_off():
    alerts = sorted({r["alert"] for f in _rule_files().values() for g in f["groups"] for r in g["rules"] if "alert" in r})
    assert alerts
    target = alerts[0]
    objs = helm_template(sets=(f"prometheusRule.alerts.{target}.enabled=false",))
    kept = {r.get("alert") for pr in by_kind(objs, "PrometheusRule") for g in pr["spec"]["groups"] for r in g["rules"]}
    assert target not in kept and set(alerts) - {target} <= kept
    off = helm_template(sets=tuple(f"prometheusRule.alerts.{a}.enabled=false" for a in alerts))
    for pr in by_kind(off, "PrometheusRule"):
        for g in pr["spec"]["groups"]:
            assert g["rules"] and not any("alert" in r for r in g["rules"]), "only recording rules remain"
    assert not by_kind(helm_template(sets=("prometheusRule.enabled=false",)), "PrometheusRule")


def test_dashboards_configmaps_for_the_grafana_sidecar(default_objs, standard_objs):
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert files
    cms = [c for c in by_kind(default_objs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(cms) == len(files)
    for path in files:
        [cm] = [c for c in cms if path.name in c["data"]]
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text(encoding="utf-8"))
        assert len(json.dumps(cm)) < 256 * 1024 - 4096, "client-side kubectl apply annotation limit"
    moved = [c for c in by_kind(standard_objs, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert all(c["metadata"]["namespace"] == "monitoring" and c["metadata"]["annotations"]["grafana_folder"] == "Insurance"
               for c in moved)
    assert not [c for c in by_kind(helm_template(sets=("dashboards.enabled=false",)), "ConfigMap")
                if "grafana_dashboard" in c["metadata"].get("labels", {})]


def _np_ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule["ports"]}


def test_network_policy_admits_only_ingress_and_scrapers(default_objs, knative_objs):
    np = one(default_objs, "NetworkPolicy")
    sel = np["spec"]["podSelector"]["matchLabels"]
    for isvc in isvcs(default_objs).values():
        assert all(_predictor_labels(isvc).get(k) == v for k, v in sel.items())
    assert np["spec"]["policyTypes"] == ["Ingress"]
    rules = {frozenset(_np_ports(r)): r.get("from") for r in np["spec"]["ingress"]}
    assert set(rules) == {frozenset({8080, 8081}), frozenset({8082})}
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rules[frozenset({8082})]
    assert rules[frozenset({8080, 8081})], "an empty `from` would admit everybody"
    kn = one(knative_objs, "NetworkPolicy")
    kn_rules = {frozenset(_np_ports(r)): r["from"] for r in kn["spec"]["ingress"]}
    knative_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "knative-serving"}}}
    assert knative_peer in kn_rules[frozenset({8012, 8013, 8112})], "activator -> queue-proxy"
    assert knative_peer in kn_rules[frozenset({9090, 9091})], "autoscaler scrapes the queue-proxy"
    assert not by_kind(helm_template(sets=("networkPolicy.enabled=false",)), "NetworkPolicy")


def test_helm_test_hook_checks_every_enabled_model(standard_objs):
    objs = helm_template(VALUES_DIR / "standard-canary.yaml")
    pod = one(objs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["MODELS"].split() == [n for n in ("auto", "health", "life", "claims")]
    assert env["INFER"] == "false", "infer needs a key when API keys are on"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "/v2/models/${model}/ready" in script and "${model}-predictor.${NAMESPACE}.svc.cluster.local" in script
    cm = one(objs, "ConfigMap", "insurance-serving-test-requests")
    assert sorted(cm["data"]) == ["auto.json", "claims.json", "health.json", "life.json"]
    assert not by_kind(helm_template(extra=("--skip-tests",)), "Pod")


def test_example_requests_match_the_feature_spec():
    """files/examples/<vertical>.json (NOTES curl, helm test) use exactly the features of
    predictors/verticals.yaml with their V2 wire types."""
    wire = {"numeric": {"FP32", "FP64", "INT32", "INT64"}, "categorical": {"BYTES"}, "text": {"BYTES"}}
    for name, spec in verticals_config().items():
        req = json.loads((CHART / "files" / "examples" / f"{name}.json").read_text(encoding="utf-8"))
        kinds = {f["name"]: f["kind"] for f in spec["features"]}
        got = {i["name"]: i for i in req["inputs"]}
        assert set(got) == set(kinds), name
        for fname, inp in got.items():
            assert inp["datatype"] in wire[kinds[fname]], (name, fname)
            assert inp["shape"] == [len(inp["data"])]


def test_notes_print_a_working_curl():
    for values, needle in ((None, "port-forward svc/auto-predictor 8080:80"),
                           (VALUES_DIR / "knative-canary.yaml", "-H \"Host: ${HOST}\"")):
        cmd = [tool("helm"), "install", "insurance-serving", str(CHART), "--dry-run=client", "-n", "insurance-serving"]
        if values:
            cmd += ["-f", str(values)]
        p = run(cmd)
        assert p.returncode == 0, p.stderr
        notes = p.stdout.split("NOTES:", 1)[1]
        assert needle in notes
        body = re.search(r"-d '(\{.*\})'", notes).group(1)
        req = json.loads(body)
        assert req == json.loads((CHART / "files" / "examples" / "auto.json").read_text(encoding="utf-8"))
        assert "/v2/models/auto/infer" in notes and "Content-Type: application/json" in notes


def test_docs_list_every_value():
    """docs/kubernetes.md's values table names every leaf of values.yaml (or its section)."""
    docs = (REPO / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))

    def leaves(node, path=()):
        if isinstance(node, dict) and node and path[-1:] not in (("resources",), ("labels",), ("annotations",),
                                                                    ("alerts",), ("nodeSelector",), ("affinity",),
                                                                    ("deploymentStrategy",)):
            for k, v in node.items():
                yield from leaves(v, path + (k,))
        else:
            yield path

    missing = []
    for path in leaves(values):
        if path[0] == "verticals":
            path = ("verticals", "<vertical>") + path[2:]
        candidates = [".".join(path[:i]) for i in range(len(path), 0, -1)]
        if not any(f"`{c}`" in docs or f"`{c} " in docs or f"`{c}/" in docs or f"/ `{path[-1]}`" in docs
                   for c in candidates):
            missing.append(".".join(path))
    assert not missing, f"values missing from docs/kubernetes.md: {missing}"
