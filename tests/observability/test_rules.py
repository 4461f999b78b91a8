"""The Prometheus alert rules: promtool check + unit tests, conventions, and mutation checks
showing that the unit tests catch a changed threshold, window or clause."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from observability.contract import SCRAPE_LABELS, known_series

from .conftest import (
    DOCS, ROOT, RULES_DIR, RULES_TESTS_DIR, RUNBOOK_BASE, alerts, all_alerts, load_yaml, rule_files,
    rules_test_files, run_promtool,
)

EXPECTED_ALERTS = {
    "MLScoringLatencyP99High",
    "MLScoringErrorRatioHigh",
    "MLInferenceFailureRatioHigh",
    "MLFeatureDriftHigh",
    "MLModelNotReady",
    "MLModelMetricsAbsent",
    "MLServingTargetDown",
    "MLModelNoTraffic",
    "MLAuthFailureRatioHigh",
}


def test_promtool_check_rules(promtool):
    files = rule_files()
    assert files, f"no rule files in {RULES_DIR}"
    result = run_promtool(promtool, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool):
    files = rules_test_files()
    assert files, f"no promtool unit tests in {RULES_TESTS_DIR}"
    result = run_promtool(promtool, "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_set_and_conventions():
    seen: dict[str, Path] = {}
    for path in rule_files():
        doc = load_yaml(path)
        assert list(doc) == ["groups"], f"{path.name}: plain Prometheus rule file (only `groups:`)"
        assert len(doc["groups"]) == 1, f"{path.name}: one group per file (the chart maps a file to a PrometheusRule)"
        for rule in alerts(path):
            name = rule["alert"]
            assert name not in seen, f"{name} defined in {seen.get(name)} and {path}"
            seen[name] = path
            assert rule["labels"]["severity"] in {"critical", "warning"}, name
            ann = rule["annotations"]
            assert ann.get("summary") and ann.get("description"), name
            assert ann["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}", name
            assert "for" in rule, f"{name}: every alert waits before firing"
    assert set(seen) == EXPECTED_ALERTS


def test_every_alert_has_a_runbook_section():
    text = DOCS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} (\S+)\s*$", text, flags=re.M))
    missing = {rule["alert"] for rule in all_alerts()} - headings
    assert not missing, f"docs/observability.md lacks runbook headings for {sorted(missing)}"


def test_every_alert_has_firing_and_quiet_unit_tests():
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    covered_files = set()
    for path in rules_test_files():
        doc = load_yaml(path)
        covered_files.update((path.parent / f).resolve() for f in doc["rule_files"])
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                bucket = firing if check.get("exp_alerts") else quiet
                bucket[check["alertname"]] = bucket.get(check["alertname"], 0) + 1
    names = {rule["alert"] for rule in all_alerts()}
    assert names - set(firing) == set(), f"alerts without a firing case: {sorted(names - set(firing))}"
    assert names - set(quiet) == set(), f"alerts without a not-firing case: {sorted(names - set(quiet))}"
    assert covered_files == {p.resolve() for p in rule_files()}, "every rule file has a unit-test file"


def test_rules_reference_only_contract_metrics():
    known = set(known_series()) | {"up"}
    for rule in all_alerts():
        names = set(re.findall(r"\b((?:ml|model_infer|rest_server|grpc_server)_\w+|up)\b(?!\s*\()", rule["expr"]))
        unknown = names - known
        assert not unknown, f"{rule['alert']} uses metrics outside the contract: {sorted(unknown)}"


def test_rules_group_only_by_known_labels():
    from observability.contract import MLSERVER_METRICS, ML_METRICS

    labels = {label for m in ML_METRICS + MLSERVER_METRICS for label in m.labels} | set(SCRAPE_LABELS) | {"le"}
    for rule in all_alerts():
        for clause in re.findall(r"\b(?:by|on|ignoring)\s*\(([^)]*)\)", rule["expr"]):
            for label in filter(None, (x.strip() for x in clause.split(","))):
                assert label in labels, f"{rule['alert']}: unknown label {label!r}"


# --------------------------------------------------------------------------- mutations

# (alert, rule file, exact text, replacement, what the unit tests must notice)
MUTATIONS = [
    ("MLScoringLatencyP99High", "latency.yaml", ") > 0.5", ") > 0.8", "threshold raised to 800 ms"),
    ("MLScoringLatencyP99High", "latency.yaml", "for: 5m", "for: 10m", "longer `for`"),
    ("MLScoringErrorRatioHigh", "errors.yaml",
     "sum by (namespace, model_name, model_version) (rate(ml_scoring_latency_seconds_count[5m]))\n  ) > 0.01",
     "sum by (namespace, model_name, model_version) (rate(ml_scoring_latency_seconds_count[5m]))\n  ) >= 0.01",
     "exactly 1% must not fire"),
    ("MLScoringErrorRatioHigh", "errors.yaml", "for: 15m", "for: 5m", "a 5-minute burst must not fire"),
    ("MLInferenceFailureRatioHigh", "errors.yaml", "unless on (namespace, model)", "or on (namespace, model)",
     "failures explained by the predictor must not fire"),
    ("MLFeatureDriftHigh", "drift.yaml", "(ml_feature_drift_psi) > 0.1", "(ml_feature_drift_psi) >= 0.1",
     "PSI exactly 0.1 must not fire"),
    ("MLFeatureDriftHigh", "drift.yaml", "for: 1h", "for: 30m", "45 minutes of drift must not fire"),
    ("MLModelNotReady", "availability.yaml",
     "unless on (namespace, pod, model_name)\n  (max by (namespace, pod, model_name) (ml_model_ready) == 1)",
     "unless on (namespace, pod, model_name, model_version)\n  (max by (namespace, pod, model_name, model_version) (ml_model_ready) == 1)",
     "a hot swap must not fire"),
    ("MLModelMetricsAbsent", "availability.yaml", "(max_over_time(ml_model_ready[1d]))",
     "(max_over_time(ml_model_ready[5m]))", "a gone model must stay remembered"),
    ("MLServingTargetDown", "availability.yaml", "and on (job, instance)", "and on (job)",
     "a target that never exported model metrics must not fire"),
    ("MLModelNoTraffic", "traffic.yaml", "increase(ml_scoring_latency_seconds_count[30m] offset 1d)",
     "increase(ml_scoring_latency_seconds_count[1d])", "a daily quiet period must not fire"),
    ("MLModelNoTraffic", "traffic.yaml", "group by (namespace, model_name) (ml_model_ready == 1)",
     "group by (namespace, model_name) (ml_scoring_latency_seconds_count)",
     "a restarted pod without scoring series must fire"),
    ("MLAuthFailureRatioHigh", "auth.yaml", "  ) > 0.05", "  ) >= 0.05", "exactly 5% must not fire"),
    ("MLAuthFailureRatioHigh", "auth.yaml", "for: 10m", "for: 3m", "a 5-minute burst must not fire"),
    ("MLAuthFailureRatioHigh", "auth.yaml",
     "+\n  sum by (namespace, model_name) (rate(ml_scoring_latency_seconds_count[5m]))",
     "-\n  sum by (namespace, model_name) (rate(ml_scoring_latency_seconds_count[5m]))",
     "the ratio is over all requests"),
]


def _copy_rules_and_tests(dest: Path) -> tuple[Path, Path]:
    rules = dest / RULES_DIR.relative_to(ROOT)
    tests = dest / RULES_TESTS_DIR.relative_to(ROOT)
    shutil.copytree(RULES_DIR, rules)
    shutil.copytree(RULES_TESTS_DIR, tests)
    return rules, tests


def test_mutations_cover_every_alert():
    assert {m[0] for m in MUTATIONS} == {rule["alert"] for rule in all_alerts()}


@pytest.mark.parametrize(("alert", "file", "old", "new", "why"), MUTATIONS,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_unit_tests_catch_a_changed_rule(promtool, tmp_path, alert, file, old, new, why):
    rules, tests = _copy_rules_and_tests(tmp_path)
    path = rules / file
    text = path.read_text(encoding="utf-8")
    # Normalise the YAML block's indentation so that multi-line snippets match.
    block = _rule_block(text, alert)
    flat = re.sub(r"\n[ \t]+", "\n  ", block)
    assert flat.count(old) == 1, f"{file}/{alert}: mutation target {old!r} not found exactly once"
    mutated_block = _unflatten(block, flat.replace(old, new))
    path.write_text(text.replace(block, mutated_block), encoding="utf-8")

    check = run_promtool(promtool, "check", "rules", path)
    assert check.returncode == 0, f"mutated rule must stay valid: {check.stdout}{check.stderr}"
    result = run_promtool(promtool, "test", "rules", tests / file.replace(".yaml", ".test.yaml"))
    assert result.returncode != 0, f"the unit tests of {alert} did not notice: {why}"
    assert alert in result.stdout + result.stderr


def _rule_block(text: str, alert: str) -> str:
    start = text.index(f"- alert: {alert}\n")
    nxt = text.find("- alert: ", start + 1)
    return text[start:] if nxt == -1 else text[start:nxt]


def _unflatten(block: str, flat_mutated: str) -> str:
    """Map a mutation made on the indentation-normalised block back onto the real block:
    rebuild it line by line, keeping each original line's indentation."""
    orig_lines = block.split("\n")
    new_lines = flat_mutated.split("\n")
    assert len(orig_lines) == len(new_lines), "mutations must not add or remove lines"
    out = []
    for orig, new in zip(orig_lines, new_lines):
        indent = orig[: len(orig) - len(orig.lstrip())]
        out.append(indent + new.lstrip() if orig.strip() else orig)
    return "\n".join(out)
