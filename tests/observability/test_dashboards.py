"""The generated Grafana dashboards: staleness, structure, template variables, and every
panel query parsed by promtool and evaluated by promtool's PromQL engine over synthetic
series shaped like the metric contract (with and without the Kubernetes namespace label)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from observability import dashboards as gen
from observability.contract import LATENCY_BUCKETS, MLSERVER_METRICS, ML_METRICS, SCORE_BUCKETS, SCRAPE_LABELS, known_series

from .conftest import DASHBOARDS_DIR, ROOT, run_promtool

NAMES = list(gen.DASHBOARDS)
FILES = {name: DASHBOARDS_DIR / f"{name}.json" for name in NAMES}
VARIABLES = {
    "overview": {"namespace", "model", "version"},
    "model-quality": {"namespace", "model", "version"},
    "canary": {"namespace", "model", "stable_version", "canary_version"},
}


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return {name: json.loads(path.read_text(encoding="utf-8")) for name, path in FILES.items()}


# --------------------------------------------------------------------------- staleness


def test_committed_dashboards_are_up_to_date(tmp_path):
    gen.write_dashboards(tmp_path)
    for name, committed in FILES.items():
        fresh = (tmp_path / committed.name).read_text(encoding="utf-8")
        assert committed.is_file(), f"{committed} missing: run `make dashboards`"
        assert committed.read_text(encoding="utf-8") == fresh, (
            f"{committed.relative_to(ROOT)} is stale: run `make dashboards` (python -m observability.dashboards)")


def test_cli_writes_and_checks(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "observability.dashboards", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert cli("--check").returncode == 0
    missing = cli("--check", "--out", str(tmp_path / "none"))
    assert missing.returncode == 1 and "make dashboards" in missing.stderr
    wrote = cli("--out", str(tmp_path / "out"))
    assert wrote.returncode == 0, wrote.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{n}.json" for n in NAMES)


# --------------------------------------------------------------------------- structure


def test_uids_unique_and_generated_notice(boards):
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert 0 < len(board["uid"]) <= 40, name
        assert board.get("id") is None, f"{name}: no fixed id, so that imports never clash"
        assert gen.GENERATED_NOTICE in board["description"], name
        assert "insurance-serving" in board["tags"], name


def test_panels_have_queries_ids_and_fit_the_grid(boards):
    for name, board in boards.items():
        panels = list(gen._walk_panels(board))
        ids = [p["id"] for p in panels]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in panels:
            where = f"{name}/{panel.get('title')}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel.get("title") and panel.get("description"), where
            targets = panel.get("targets") or []
            assert targets, f"{where}: no query"
            ref_ids = [t["refId"] for t in targets]
            assert len(set(ref_ids)) == len(ref_ids), f"{where}: duplicate refIds"
            for t in targets:
                assert t.get("expr", "").strip(), f"{where}: empty query"
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where


def test_template_variables(boards):
    for name, board in boards.items():
        variables = gen.template_variables(board)
        assert VARIABLES[name] | {"datasource"} == set(variables), name
        assert variables["datasource"]["type"] == "datasource"
        ns = variables["namespace"]
        # All must be ".*" so that it also matches series without a namespace label.
        assert ns["includeAll"] and ns["allValue"] == ".*", name
        for var in variables.values():
            if var["type"] == "query":
                assert var["datasource"]["uid"] == "${datasource}", f"{name}/{var['name']}"
                assert "ml_model_ready" in var["query"], f"{name}/{var['name']}"
        used = set()
        for _t, _r, expr in gen.iter_targets(board):
            used |= {m for m in re.findall(r"\$\{?([A-Za-z_]\w*)", expr) if not m.startswith("__")}
        assert used == VARIABLES[name], f"{name}: queries use {sorted(used)}"


def test_queries_reference_only_contract_metrics_and_labels(boards):
    known = set(known_series())
    labels = {label for m in ML_METRICS + MLSERVER_METRICS for label in m.labels} | set(SCRAPE_LABELS) | {
        "le", "protocol", "code"}  # protocol/code: made by label_replace in the status panel
    for name, board in boards.items():
        for title, _ref, expr in gen.iter_targets(board):
            metrics = set(re.findall(r"\b(?:ml|model_infer|rest_server|grpc_server)_\w+", expr))
            assert metrics and metrics <= known, f"{name}/{title}: {sorted(metrics - known)}"
            for clause in re.findall(r"\b(?:by|on|ignoring)\s*\(([^)]*)\)", expr):
                for label in filter(None, (x.strip() for x in clause.split(","))):
                    assert label in labels, f"{name}/{title}: unknown label {label!r}"


# --------------------------------------------------------------------------- panel_queries


def test_panel_queries_substitution():
    board = {
        "templating": {"list": [
            {"name": "namespace", "type": "query", "includeAll": True, "multi": True, "allValue": ".*"},
            {"name": "model", "type": "query", "includeAll": True, "multi": True, "allValue": ".*"},
            {"name": "stable", "type": "query", "includeAll": False, "multi": False},
        ]},
        "panels": [
            {"type": "row", "title": "r", "panels": [
                {"title": "inner", "targets": [{"refId": "A", "expr": 'x{m=~"[[model]]"}[${__rate_interval}]'}]}]},
            {"title": "p", "targets": [
                {"refId": "A", "expr": 'sum(rate(x{namespace=~"$namespace", m=~"${model:regex}", v="$stable"}[$__rate_interval]))'},
                {"refId": "B", "expr": 'label_replace(x, "a", "$1", "b", "(.*)")'},
                {"refId": "C", "expr": "hidden", "hide": True},
            ]},
        ],
    }
    assert gen.panel_queries(board, {"stable": "1.0.0"}) == [
        'x{m=~".*"}[1m]',
        'sum(rate(x{namespace=~".*", m=~".*", v="1.0.0"}[1m]))',
        'label_replace(x, "a", "$1", "b", "(.*)")',
    ]
    q = gen.panel_queries(board, {"stable": "1.0.0", "model": ["auto", "home"], "namespace": "ins",
                                  "__rate_interval": "15s"})
    assert q[1] == 'sum(rate(x{namespace=~"ins", m=~"(auto|home)", v="1.0.0"}[15s]))'
    # Values of multi-value variables are regex-escaped as Grafana does (\\. inside a PromQL string).
    assert gen.panel_queries(board, {"stable": "1", "model": ["1.0"]})[0] == r'x{m=~"1\\.0"}[1m]'
    with pytest.raises(ValueError, match=r"\$stable"):
        gen.panel_queries(board, {})


def test_panel_queries_of_shipped_boards_leave_no_variable(boards):
    for name, board in boards.items():
        queries = gen.panel_queries(board, {"model": "auto", "stable_version": "1.0.0", "canary_version": "1.1.0"})
        assert len(queries) == len(list(gen.iter_targets(board)))
        for q in queries:
            assert not re.search(r"\$(?!1\b)|\[\[", q), f"{name}: unsubstituted variable in {q}"


# --------------------------------------------------------------------------- PromQL: parse


def _variable_sets(name: str) -> list[dict]:
    sets: list[dict] = [{}, {"namespace": "insurance", "model": "auto", "version": "1.0.0"},
                        {"namespace": ["a", "b"], "model": ["auto", "home"], "version": ["1.0.0", "1.1.0"]}]
    if name == "canary":
        sets = [{"namespace": ns, "model": "auto", "stable_version": "1.0.0", "canary_version": "1.1.0"}
                for ns in (".*", "insurance", ["a", "b"])]
    return sets


def test_every_panel_query_parses(promtool, tmp_path, boards):
    """promtool cannot parse bare PromQL: each query becomes a recording rule."""
    rules = []
    for name, board in boards.items():
        for variables in _variable_sets(name):
            for i, expr in enumerate(gen.panel_queries(board, variables)):
                rules.append({"record": f"dashboard:{name.replace('-', '_')}:q{i}", "expr": expr})
    path = tmp_path / "panel-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}, sort_keys=False))
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- PromQL: data


def _series(namespace: str | None) -> list[dict]:
    """Synthetic series for two models (auto with versions 1.0.0 and 1.1.0, claims 1.0.0),
    one sample a minute for 70 minutes, shaped like the contract."""
    out: list[dict] = []

    def add(metric: str, labels: dict, values: str) -> None:
        if namespace is not None:
            labels = {"namespace": namespace, "pod": f"{labels.get('model_name', labels.get('model'))}-0", **labels}
        body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        out.append({"series": f"{metric}{{{body}}}", "values": values})

    def histogram(metric: str, base: dict, bounds, per_min: int) -> None:
        for j, le in enumerate(bounds):
            add(f"{metric}_bucket", {**base, "le": str(le)}, f"0+{per_min * (j + 1) // len(bounds)}x70")
        add(f"{metric}_bucket", {**base, "le": "+Inf"}, f"0+{per_min}x70")
        add(f"{metric}_count", base, f"0+{per_min}x70")
        add(f"{metric}_sum", base, f"0+{per_min // 2}x70")

    for model, versions in (("auto", ("1.0.0", "1.1.0")), ("claims", ("1.0.0",))):
        for version in versions:
            mv = {"model_name": model, "model_version": version}
            histogram("ml_scoring_latency_seconds", mv, LATENCY_BUCKETS, 40)
            histogram("ml_prediction_score", mv, SCORE_BUCKETS, 40)
            if model == "auto":
                histogram("ml_quoted_price", mv, (100, 250, 500, 1000, 2500), 40)
            add("ml_scoring_errors_total", {**mv, "error_type": "invalid_input"}, "0+1x70")
            add("ml_rows_total", mv, "0+80x70")
            for decision in (("accept", "reject") if model == "auto" else ("ML_APPROVED", "ML_REVIEW")):
                add("ml_decisions_total", {**mv, "decision": decision}, "0+20x70")
            for feature in ("age", "region"):
                add("ml_feature_drift_psi", {**mv, "feature": feature}, "0.05x70")
            add("ml_feature_drift_ks", {**mv, "feature": "age"}, "0.1x70")
            add("ml_model_drift_psi", mv, "0.05x70")
            add("ml_model_performance", {**mv, "metric": "roc_auc", "source": "training"}, "0.8x70")
            add("ml_model_ready", mv, "1x70")
        add("ml_auth_failures_total", {"model_name": model, "reason": "missing"}, "0+1x70")
        mlserver = {"model": model, "version": "None"}
        add("model_infer_request_duration_count", mlserver, "0+41x70")
        add("model_infer_request_duration_sum", mlserver, "0+2x70")
        add("model_infer_request_success_total", mlserver, "0+40x70")
        add("model_infer_request_failure_total", mlserver, "0+1x70")
    for code in ("200", "422"):
        add("rest_server_requests_total", {"app_name": "mlserver", "method": "POST",
                                           "path": "/v2/models/{model_name}/infer", "status_code": code}, "0+40x70")
    return out


@pytest.mark.parametrize("namespace", [None, "insurance"], ids=["local-no-namespace-label", "kubernetes"])
def test_every_panel_query_returns_data(promtool, tmp_path, boards, namespace):
    """Each query runs in promtool's PromQL engine as `absent((query))` alert that must stay
    silent: it returns at least one series. Locally (no namespace label) with the variables at
    All; in Kubernetes with the concrete namespace, model and version selected."""
    rules, checks, index = [], [], {}
    for name, board in boards.items():
        if namespace is None:
            variables = {"__rate_interval": "5m", "__range": "1h"}
        else:
            variables = {"__rate_interval": "5m", "__range": "1h", "namespace": namespace, "model": "auto",
                         "version": "1.0.0"}
        if name == "canary":
            variables = {k: v for k, v in variables.items() if k != "version"}
            variables.update({"model": "auto", "stable_version": "1.0.0", "canary_version": "1.1.0"})
        for i, expr in enumerate(gen.panel_queries(board, variables)):
            alert = f"Empty_{name.replace('-', '_')}_{i}"
            index[alert] = expr
            rules.append({"alert": alert, "expr": f"absent(({expr}))"})
            checks.append({"eval_time": "60m", "alertname": alert, "exp_alerts": []})
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _series(namespace), "alert_rule_test": checks}],
    }))
    result = run_promtool(promtool, "test", "rules", "test.yaml", cwd=tmp_path)
    if result.returncode != 0:
        empty = sorted(set(re.findall(r"alertname: (Empty_\w+)", result.stdout + result.stderr)))
        detail = "\n".join(f"  {a}: {index[a]}" for a in empty) or result.stdout + result.stderr
        pytest.fail(f"panel queries without data:\n{detail}")
