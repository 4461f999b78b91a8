"""The metrics against real components: a real MLServer with the runtime, scraped by a real
Prometheus (Debian's binary, temporary config and storage, loopback only), queried through
Prometheus' HTTP API, once with ``parallel_workers: 0`` and once with ``parallel_workers: 1``
(MLServer serves different registries in the two modes: MLServer issue #1151).

Per mode: auto 1.0.0 and 1.1.0 are served with an API key required; two requests without a valid
key are refused; bounded traffic (synthetic rows from
training/synthetic.py) goes to both, then bad requests, then a batch with `age` shifted by +30
years to 1.0.0, then outcomes for the normal rows. The assertions read what Prometheus scraped.
Waits poll with a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests

from prometheus_client.parser import text_string_to_metric_families

from observability.contract import ML_METRICS, SCRAPE_LABELS
from observability.dashboards import panel_queries
from training.synthetic import generate

from ..conftest import ROOT as REPO, SECOND_AUTO_VERSION, Server, start_server, stop_server
from ..prometheus import Prometheus, find_prometheus
from .conftest import DASHBOARDS_DIR

pytestmark = pytest.mark.slow

STABLE, CANARY = "1.0.0", SECOND_AUTO_VERSION
# Drift window of the test servers (INSURANCE_DRIFT_*): 500 rows keep the traffic small; a window of
# 500 rows from the reference distribution stays under PSI 0.1 (docs/observability.md, sampling noise).
WINDOW, MIN_ROWS = 500, 100
SHIFTED_FEATURE = "age"
API_KEY = "integration-test-key"
AUTH = {"X-API-Key": API_KEY}
ADMIN = {"X-API-Key": "integration-admin-key"}  # the repository API (load/unload) needs the admin role
REFUSED = {"missing": {}, "invalid_api_key": {"X-API-Key": "not-the-key"}}  # reason -> headers sent
BAD_REQUESTS = {  # error_type -> bodies sent to auto 1.0.0
    "invalid_input": [
        {"inputs": [{"name": "age", "shape": [1], "datatype": "BYTES", "data": ["old"]}]},
        {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [-4]}]},
        {"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [30]}]},
    ],
    "unknown_input": [
        {"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]},
        {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [30]},
                    {"name": "wheels", "shape": [1], "datatype": "INT64", "data": [4]}]},
    ],
}


def wait_for(what: str, check, timeout: float = 45.0, interval: float = 0.25):
    """Poll check() until it returns a truthy value; fail naming `what` after the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# ---- requests ------------------------------------------------------------------------------


def v2_request(vertical, df, request_id: str) -> dict:
    """A V2 request of the table's rows: numeric FP64 (null for missing), the others BYTES ("" for missing)."""
    inputs = []
    for f in vertical.features:
        col = df[f.name].tolist()
        if f.kind == "numeric":
            data, datatype = [None if (v is None or math.isnan(v)) else float(v) for v in col], "FP64"
        else:
            data, datatype = ["" if v is None else str(v) for v in col], "BYTES"
        inputs.append({"name": f.name, "shape": [len(df)], "datatype": datatype, "data": data})
    return {"id": request_id, "inputs": inputs}


@dataclass
class Stack:
    workers: int
    server: Server
    prometheus: Prometheus
    sent: dict[str, int] = field(default_factory=dict)  # version -> predict() calls
    metrics_at_start: str = ""
    outcomes_answer: dict = field(default_factory=dict)
    normal_drift: dict[str, float] = field(default_factory=dict)  # PSI per feature before the shift

    def infer(self, version: str, body: dict) -> requests.Response:
        self.sent[version] = self.sent.get(version, 0) + 1
        return requests.post(f"{self.server.http}/v2/models/auto/versions/{version}/infer", json=body,
                             headers=AUTH, timeout=30)

    def scrape(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.server.metrics_port}/metrics", timeout=10).text


def drift(prom: Prometheus, version: str, metric: str = "ml_feature_drift_psi") -> dict[str, float]:
    return prom.values(f'max by (feature) ({metric}{{model_name="auto", model_version="{version}"}})', "feature")


@pytest.fixture(scope="module", params=[0, 1], ids=["parallel_workers=0", "parallel_workers=1"])
def stack(request, model_repository, tmp_path_factory, config):
    binary = find_prometheus()
    if binary is None:
        pytest.fail("prometheus not found on PATH or in .tools/bin: run `make tools` "
                    "(scripts/install-prometheus.sh installs Debian's prometheus package)", pytrace=False)
    workers = request.param
    tmp = tmp_path_factory.mktemp(f"prom-integration-{workers}")
    repo = tmp / "repository"
    shutil.copytree(model_repository / "auto", repo / "auto")  # auto 1.0.0 (shipped) and 1.1.0 (trained)
    server = start_server(repo, tmp, [f"/v2/models/auto/versions/{v}/ready" for v in (STABLE, CANARY)],
                          extra_settings={"parallel_workers": workers},
                          env={"INSURANCE_DRIFT_WINDOW": str(WINDOW), "INSURANCE_DRIFT_MIN_ROWS": str(MIN_ROWS),
                               # one credential scores and posts outcomes (runtime/auth.py roles)
                               "INSURANCE_API_KEYS": f"{API_KEY} inference outcomes\n{ADMIN['X-API-Key']} admin"})
    prom = None
    try:
        prom = Prometheus(binary, tmp / "prometheus", f"127.0.0.1:{server.metrics_port}", job="insurance-serving")
        st = Stack(workers, server, prom)
        st.metrics_at_start = st.scrape()
        run_traffic(st, config.vertical("auto"))
        yield st
    finally:
        if prom is not None:
            prom.stop()
        stop_server(server)


def run_traffic(st: Stack, auto) -> None:
    prom = st.prometheus
    normal = generate(auto, seed=2024, rows=520)
    for i in range(5):  # 500 rows in batches of 100 to the stable version
        r = st.infer(STABLE, v2_request(auto, normal.iloc[100 * i:100 * (i + 1)], f"normal-{i}"))
        assert r.status_code == 200, r.text
    for i in range(500, 520):  # and single rows
        r = st.infer(STABLE, v2_request(auto, normal.iloc[i:i + 1], f"single-{i}"))
        assert r.status_code == 200, r.text
        assert r.json()["id"] == f"single-{i}"
    canary = generate(auto, seed=2025, rows=WINDOW)
    for i in range(WINDOW // 100):
        r = st.infer(CANARY, v2_request(auto, canary.iloc[100 * i:100 * (i + 1)], f"canary-{i}"))
        assert r.status_code == 200, r.text

    # Prometheus has the normal state before anything goes wrong
    wait_for("drift gauges of both versions",
             lambda: len(drift(prom, STABLE)) == len(auto.features) and len(drift(prom, CANARY)) == len(auto.features))
    wait_for("zero error counters", lambda: prom.query('ml_scoring_errors_total{model_version="1.0.0"}'))
    st.normal_drift = drift(prom, STABLE)

    for error_type, bodies in BAD_REQUESTS.items():
        for body in bodies:
            r = st.infer(STABLE, body)
            assert r.status_code == 400, r.text

    body = v2_request(auto, normal.iloc[:1], "refused")
    for headers in REFUSED.values():
        r = requests.post(f"{st.server.http}/v2/models/auto/versions/{STABLE}/infer", json=body, headers=headers,
                          timeout=30)
        assert r.status_code == 401, r.text

    shifted = generate(auto, seed=2026, rows=WINDOW)
    shifted[SHIFTED_FEATURE] = np.clip(shifted[SHIFTED_FEATURE] + 30, 16, 110)
    for i in range(WINDOW // 100):  # fills the whole window of 1.0.0
        r = st.infer(STABLE, v2_request(auto, shifted.iloc[100 * i:100 * (i + 1)], f"shifted-{i}"))
        assert r.status_code == 200, r.text

    outcomes = [{"id": f"normal-{i // 100}", "row": i % 100, "outcome": int(normal["converted"].iloc[i])}
                for i in range(500)]
    outcomes += [{"id": f"single-{i}", "row": 0, "outcome": int(normal["converted"].iloc[i])} for i in range(500, 520)]
    outcomes.append({"id": "never-scored", "row": 0, "outcome": 1})
    r = requests.post(f"{st.server.http}/v2/models/auto/outcomes", json={"outcomes": outcomes}, headers=AUTH,
                      timeout=30)
    assert r.status_code == 200, r.text
    st.outcomes_answer = r.json()


# ---- the assertions ---------------------------------------------------------------------------


def test_series_exist_from_load_with_zero_values(stack):
    """Before any request: counters and histograms of both versions at 0, ready 1, training metrics."""
    text = stack.metrics_at_start
    for version in (STABLE, CANARY):
        labels = f'model_name="auto",model_version="{version}"'
        for sample in ("ml_scoring_latency_seconds_count", "ml_rows_total", "ml_prediction_score_count",
                       "ml_quoted_price_count"):
            assert f"{sample}{{{labels}}} 0.0" in text, sample
        for error_type in ("invalid_input", "unknown_input", "internal"):
            assert f'ml_scoring_errors_total{{error_type="{error_type}",{labels}}} 0.0' in text
        for decision in ("accept", "reject"):
            assert f'ml_decisions_total{{decision="{decision}",{labels}}} 0.0' in text
        assert f"ml_model_ready{{{labels}}} 1.0" in text
    for reason in ("missing", "invalid_api_key", "expired_token"):
        assert f'ml_auth_failures_total{{model_name="auto",reason="{reason}"}} 0.0' in text
        assert f'ml_model_performance{{metric="roc_auc",{labels},source="training"}}' in text
    # no drift statistic before the window holds drift_min_rows rows
    assert "ml_feature_drift_psi{" not in text and "ml_model_drift_psi{" not in text


def test_exported_metrics_are_the_contract(stack):
    """What the server exports is observability/contract.py: every ml_* family, its type, labels and
    buckets (and help text in the server process; the multi-process collector replaces it)."""
    contract = {m.name.removesuffix("_total") if m.type == "counter" else m.name: m for m in ML_METRICS}
    exported = {f.name: f for f in text_string_to_metric_families(stack.scrape())
                if f.name.startswith("ml_") and not f.name.endswith("_created")}  # timestamps of the families
    # families that count only events this traffic does not cause: may be exported without series
    quiet = {"ml_prediction_cache_lookups",  # the prediction cache is off here
             "ml_rate_limited",  # no rate limit is configured
             "ml_outcome_store_evictions",  # the outcome store never fills
             "ml_fast_path_fallbacks",  # no unexpected error in the runtime's request path
             "ml_edge_refusals"}  # nothing is refused at the edge
    assert quiet <= set(contract)
    assert set(exported) - quiet == set(contract) - quiet
    for name, family in exported.items():
        metric = contract[name]
        assert family.type == metric.type, name
        if stack.workers == 0:
            assert family.documentation == metric.help, name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples or name in quiet, f"{name}: no series after the traffic"
        for sample in samples:
            assert set(sample.labels) - {"le"} - set(SCRAPE_LABELS) == set(metric.labels), sample
        if metric.type == "histogram":
            bounds = sorted({float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")})
            assert bounds == [*metric.buckets, math.inf], name


def auth_reasons() -> tuple[str, ...]:
    """runtime/auth.py's REASONS, read from the source: importing runtime.auth loads MLServer's gRPC
    protos, which clash with tritonclient's in this test process."""
    tree = ast.parse((REPO / "runtime" / "auth.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["REASONS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("runtime/auth.py defines no REASONS")


def test_refused_requests_count_as_auth_failures(stack):
    prom = stack.prometheus
    expected = dict.fromkeys(auth_reasons(), 0.0) | dict.fromkeys(REFUSED, 1.0)
    q = 'sum by (reason) (ml_auth_failures_total{model_name="auto"})'
    wait_for("auth failure counters", lambda: prom.values(q, "reason") == expected)


def test_every_dashboard_panel_query_returns_series(stack):
    prom = stack.prometheus
    variables = {"model": "auto", "version": STABLE, "stable_version": STABLE, "canary_version": CANARY,
                 "__rate_interval": "15s", "__interval": "5s", "__range": "1h"}
    wait_for("a second scrape after the last request", lambda: prom.query(
        'count_over_time(ml_rows_total{model_version="1.0.0"}[15s]) >= 3'))
    empty = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for expr in panel_queries(json.loads(path.read_text()), variables):
            body = prom.query_raw(expr)
            assert body["status"] == "success", f"{path.name}: {expr}: {body}"
            if not body["data"]["result"]:
                empty.append(f"{path.name}: {expr}")
    assert not empty, "panel queries without any series:\n" + "\n".join(empty)


def test_drift_of_the_shifted_feature_rises_above_the_threshold(stack):
    prom = stack.prometheus
    assert max(stack.normal_drift.values()) < 0.1, stack.normal_drift
    after = wait_for("PSI of the shifted feature above 0.1",
                     lambda: (d := drift(prom, STABLE)) and d.get(SHIFTED_FEATURE, 0.0) > 0.1 and d)
    others = {k: v for k, v in after.items() if k != SHIFTED_FEATURE}
    assert after[SHIFTED_FEATURE] > 0.25  # a 30-year shift is a major one
    assert max(others.values()) < 0.1, others
    model_psi = prom.values('max by (model_version) (ml_model_drift_psi{model_name="auto"})', "model_version")
    assert model_psi[STABLE] == pytest.approx(after[SHIFTED_FEATURE])
    assert model_psi[CANARY] < 0.1  # the canary saw no shifted rows
    ks = drift(prom, STABLE, "ml_feature_drift_ks")
    assert set(ks) == {"age", "driving_years", "vehicle_age", "annual_mileage"}
    assert ks[SHIFTED_FEATURE] > 0.5 and max(v for k, v in ks.items() if k != SHIFTED_FEATURE) < 0.1
    # the alert's expression selects exactly the shifted feature
    firing = prom.query('max by (model_name, model_version, feature) (ml_feature_drift_psi) > 0.1')
    assert {(s["metric"]["model_version"], s["metric"]["feature"]) for s in firing} == {(STABLE, SHIFTED_FEATURE)}


def test_error_counters_move_on_bad_requests(stack):
    prom = stack.prometheus
    expected = {t: float(len(b)) for t, b in BAD_REQUESTS.items()}
    expected["internal"] = 0.0
    q = 'sum by (error_type) (ml_scoring_errors_total{model_name="auto", model_version="1.0.0"})'
    wait_for("error counters", lambda: prom.values(q, "error_type") == expected)
    assert prom.values(q.replace("1.0.0", CANARY), "error_type") == dict.fromkeys(expected, 0.0)


def test_latency_histograms_count_every_call(stack):
    prom = stack.prometheus
    for version in (STABLE, CANARY):
        sel = f'model_name="auto", model_version="{version}"'
        q = f"sum(ml_scoring_latency_seconds_count{{{sel}}})"
        wait_for(f"latency count of {version}",
                 lambda: (r := prom.query(q)) and float(r[0]["value"][1]) == stack.sent[version])
        buckets = prom.values(f"sum by (le) (ml_scoring_latency_seconds_bucket{{{sel}}})", "le")
        assert buckets["+Inf"] == stack.sent[version]
        assert "0.5" in buckets and buckets["0.5"] <= buckets["+Inf"]
    rows = prom.values('sum by (model_version) (ml_rows_total{model_name="auto"})', "model_version")
    assert rows == {STABLE: 520.0 + WINDOW, CANARY: float(WINDOW)}
    decisions = prom.values('sum by (model_version) (ml_decisions_total{model_name="auto"})', "model_version")
    assert decisions == rows


def test_outcomes_give_live_performance(stack):
    answer = stack.outcomes_answer
    assert answer["received"] == 521 and answer["matched"] == 520
    assert answer["unknown"] == [{"id": "never-scored", "row": 0}]
    live = answer["live"][STABLE]
    assert live["outcomes"] == 520 and 0.65 < live["roc_auc"] <= 1.0
    prom = stack.prometheus
    q = 'max by (metric) (ml_model_performance{model_name="auto", model_version="1.0.0", source="live"})'
    got = wait_for("live performance in Prometheus", lambda: (v := prom.values(q, "metric")) and len(v) == 5 and v)
    assert got["roc_auc"] == pytest.approx(live["roc_auc"], abs=1e-6)
    assert set(got) == {"roc_auc", "precision", "recall", "f1", "accuracy"}
    training = prom.values(q.replace('source="live"', 'source="training"'), "metric")
    assert training["roc_auc"] == pytest.approx(0.839823)


def test_bad_outcomes_are_refused(stack):
    url = f"{stack.server.http}/v2/models/auto/outcomes"
    bad = requests.post(url, json={"outcomes": [{"id": "secret-looking-id", "outcome": 2}]}, headers=AUTH, timeout=10)
    assert bad.status_code == 400
    assert "outcomes.0.outcome" in bad.json()["error"] and "secret-looking-id" not in bad.text
    for body in ({"outcomes": []}, {"outcome": [{"id": "x", "outcome": 1}]}, [1, 2], "x" * 100_000):
        r = requests.post(url, json=body, headers=AUTH, timeout=10)
        assert r.status_code == 400 and len(r.content) < 1000, (body if len(str(body)) < 100 else "long", r.text)
    missing = requests.post(f"{stack.server.http}/v2/models/boat/outcomes",
                            json={"outcomes": [{"id": "x", "outcome": 1}]}, headers=AUTH, timeout=10)
    assert missing.status_code == 404 and "boat" in missing.json()["error"]


def test_unload_sets_ready_to_zero_and_drops_drift(stack):
    """Last: unloads both versions through the repository API."""
    r = requests.post(f"{stack.server.http}/v2/repository/models/auto/unload", headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    text = stack.scrape()
    for version in (STABLE, CANARY):
        labels = f'model_name="auto",model_version="{version}"'
        assert f"ml_model_ready{{{labels}}} 0.0" in text
        drift_lines = [line for line in text.splitlines()
                       if line.startswith(("ml_feature_drift_psi{", "ml_model_drift_psi{")) and labels in line]
        # removed in the server process; with workers the series stays, as NaN
        assert all(line.endswith(" NaN") for line in drift_lines), drift_lines
        assert bool(drift_lines) == (stack.workers > 0)
    prom = stack.prometheus
    wait_for("the drift alert expression to go quiet",
             lambda: not prom.query('max by (feature) (ml_feature_drift_psi) > 0.1'))


def test_outcomes_match_whichever_of_two_workers_scored(model_repository, tmp_path, config):
    """parallel_workers 2: MLServer hands requests and outcome calls to the workers in turn; the
    SQLite store they share matches every outcome in every worker (after the scores' flush)."""
    repo = tmp_path / "repository"
    shutil.copytree(model_repository / "auto" / STABLE, repo / "auto" / STABLE)
    server = start_server(repo, tmp_path, ["/v2/models/auto/ready"], extra_settings={"parallel_workers": 2})
    try:
        auto = config.vertical("auto")
        rows = generate(auto, seed=77, rows=40)
        for i in range(8):  # 4 requests per worker
            r = requests.post(f"{server.http}/v2/models/auto/infer",
                              json=v2_request(auto, rows.iloc[5 * i:5 * (i + 1)], f"w2-{i}"), timeout=30)
            assert r.status_code == 200, r.text
        body = {"outcomes": [{"id": f"w2-{i // 5}", "row": i % 5, "outcome": int(rows["converted"].iloc[i])}
                             for i in range(40)]}

        def send():
            r = requests.post(f"{server.http}/v2/models/auto/outcomes", json=body, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()

        wait_for("every outcome matched (the scores are flushed within a second)", lambda: send()["matched"] == 40)
        answers = [send() for _ in range(4)]  # both workers, twice each
        assert [(a["matched"], a["unknown"]) for a in answers] == [(40, [])] * 4
        text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
        assert 'ml_rows_total{model_name="auto",model_version="1.0.0"} 40.0' in text
        assert 'ml_scoring_latency_seconds_count{model_name="auto",model_version="1.0.0"} 8.0' in text
    finally:
        stop_server(server)
