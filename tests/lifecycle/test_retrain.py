"""`insurance retrain`: the schedule trigger, a canary in progress blocking a retrain, the report,
and clear errors. Drift and live ROC-AUC from a real Prometheus scraping real MLServers, training from
PostgreSQL, gate and registration run in test_mlops_loop.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from lifecycle.retrain import RetrainError, duration_seconds, schedule_trigger

from ..prometheus import Prometheus
from .conftest import insurance


def test_durations():
    assert [duration_seconds(d) for d in ("90s", "10m", "6h", "30d", "2w")] == [90, 600, 21600, 2592000, 1209600]
    with pytest.raises(RetrainError, match="expected a number and a unit"):
        duration_seconds("1 day")


def test_schedule_trigger_reads_registration_then_creation_time():
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    old = {"created": (now - timedelta(days=40)).isoformat()}
    t = schedule_trigger(old, "30d", now=now)
    assert t.fired and t.evidence["age_days"] == 40 and "40 days old > --max-age 30d" in t.detail
    # re-registered 3 days ago: the registration is what went to production
    reg = {**old, "registration": {"registered": (now - timedelta(days=3)).isoformat()}}
    assert not schedule_trigger(reg, "30d", now=now).fired
    assert not schedule_trigger(old, None, now=now).fired  # no schedule asked for
    assert not schedule_trigger(None, "30d", now=now).fired


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory, prometheus_binary):
    """A real Prometheus with no series of any model (nothing scraped yet)."""
    prom = Prometheus(prometheus_binary, tmp_path_factory.mktemp("prom-empty"), ["127.0.0.1:9"])
    yield prom
    prom.stop()


def _values(tmp_path, canary_percent=None):
    node = {"enabled": True, "version": "1.0.0", "storageUri": "pvc://insurance-models/auto/1.0.0",
            "canary": {"enabled": canary_percent is not None, "version": "1.1.0" if canary_percent else "",
                       "storageUri": "", "trafficPercent": canary_percent or 0}}
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"verticals": {"auto": node}}))
    return path


def _retrain(prom, repo, values, tmp_path, *extra):
    return insurance("retrain", "--vertical", "auto", "--prometheus", prom.url, "--repository", str(repo),
                     "--values", str(values), "--data", "leads.csv", "--report", str(tmp_path / "r.json"), *extra)


def test_schedule_makes_it_due_and_check_only_trains_nothing(empty_prometheus, repo, tmp_path):
    p = _retrain(empty_prometheus, repo, _values(tmp_path), tmp_path, "--max-age", "1d", "--check-only")
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    d = rep["decision"]
    assert d["due"] and d["serving_version"] == "1.0.0" and d["serving_from"] == "chart values"
    fired = {t["name"]: t["fired"] for t in d["triggers"]}
    assert fired == {"drift": False, "quality": False, "schedule": True}
    assert "no ml_feature_drift_psi series of auto 1.0.0" in p.stdout and "no live ROC-AUC yet" in p.stdout
    assert "--check-only: nothing trained" in p.stdout
    assert sorted(x.name for x in (repo / "auto").iterdir()) == ["1.0.0"]


def test_a_canary_in_progress_blocks_a_retrain(empty_prometheus, repo, tmp_path):
    p = _retrain(empty_prometheus, repo, _values(tmp_path, canary_percent=25), tmp_path, "--force")
    assert p.returncode == 0, p.stderr
    d = json.loads((tmp_path / "r.json").read_text())["decision"]
    assert not d["due"] and "a canary of auto is in progress (1.1.0 at 25%)" in d["blocked"]
    assert "decision: NOT NOW" in p.stdout and sorted(x.name for x in (repo / "auto").iterdir()) == ["1.0.0"]


def test_default_report_goes_to_the_repository(empty_prometheus, repo, tmp_path):
    p = insurance("retrain", "--vertical", "auto", "--prometheus", empty_prometheus.url, "--repository", str(repo),
                  "--values", str(_values(tmp_path)), "--table", "auto_leads", "--data", "postgresql://u@h/db",
                  "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    written = json.loads(open(out["report"]).read())
    assert out["report"].startswith(str(repo / ".reports" / "retrain-auto-")) and written["decision"]["due"] is False


@pytest.mark.parametrize("args, words", [
    (["--data", "leads.csv", "--psi-window", "an hour"], "duration 'an hour'"),
    ([], "retrain needs the latest data"),
    (["--data", "leads.csv", "--prometheus", "http://127.0.0.1:9"], "not reachable"),
    (["--data", "leads.csv", "--vertical", "motorbike"], "vertical 'motorbike' is not enabled in the chart values"),
])
def test_errors_are_clear(empty_prometheus, repo, tmp_path, args, words):
    p = insurance("retrain", "--vertical", "auto", "--prometheus", empty_prometheus.url, "--repository", str(repo),
                  "--values", str(_values(tmp_path)), "--report", str(tmp_path / "r.json"), *args)
    assert p.returncode == 2 and words in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "r.json").exists()


def test_training_failure_is_reported(empty_prometheus, repo, tmp_path):
    """Due, but the data cannot be read: exit 2 with the training error, nothing registered."""
    p = _retrain(empty_prometheus, repo, _values(tmp_path), tmp_path, "--force")
    assert p.returncode == 2 and "training the candidate failed: error: leads.csv: cannot read" in p.stderr
    assert sorted(x.name for x in (repo / "auto").iterdir()) == ["1.0.0"]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["decision"]["due"] and "cannot read" in rep["error"] and rep["exit_code"] == 2
    assert not list(repo.glob(".retrain-*"))
