"""`insurance ab report`: PSI and verdict rules, then the whole path: a real MLServer serving two
versions of auto, traffic split 90/10 by the test, outcomes sent back, a real Prometheus scraping
the runtime's ml_* metrics, and the report read from Prometheus' HTTP API."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from insurance_client import InsuranceClient, InvalidRequest
from lifecycle import ab
from lifecycle.ab import HOLD, PROMOTE, ROLLBACK, Thresholds, VersionStats, bucket_counts, psi, verdict
from lifecycle.registry import register
from training.synthetic import generate

from ..conftest import copy_repository, start_server, stop_server
from ..prometheus import Prometheus
from .conftest import insurance


# ---- pure parts ---------------------------------------------------------------------------------
def test_psi():
    same = [10, 20, 30, 40]
    assert psi(same, [1, 2, 3, 4]) == pytest.approx(0.0)
    shifted = psi([40, 30, 20, 10], [10, 20, 30, 40])
    expected = sum((a - e) * math.log(a / e) for e, a in zip([.4, .3, .2, .1], [.1, .2, .3, .4]))
    assert shifted == pytest.approx(expected) and shifted > 0.25
    assert psi([0, 0], [1, 1]) is None
    assert psi([10, 0], [5, 5]) > 1  # an empty bin is floored, not a division by zero
    assert bucket_counts([(1.0, 10), (0.5, 4), (float("inf"), 10)]) == [4, 6, 0]


def _stats(version, requests=1000, errors=0, p99=10.0, auc=None):
    return VersionStats(version=version, requests=requests, errors=errors, p99_ms=p99, live_roc_auc=auc)


@pytest.mark.parametrize("canary, score_psi, expected, words", [
    (_stats("b", 20, errors=10), 0.0, ROLLBACK, "error ratio"),
    (_stats("b", 50), 0.0, HOLD, "evidence"),
    (_stats("b", p99=60.0), 0.0, ROLLBACK, "latency"),
    (_stats("b", p99=14.0), 0.0, PROMOTE, "all rules passed"),
    (_stats("b", auc=0.70), 0.0, ROLLBACK, "quality"),
    (_stats("b", auc=0.79), 0.0, PROMOTE, "live ROC-AUC not worse"),
    (_stats("b"), 0.4, HOLD, "score shift"),
    (_stats("b", errors=5), 0.0, PROMOTE, "all rules passed"),  # 0.5 % errors: within +1 point
])
def test_verdict_rules(canary, score_psi, expected, words):
    decided, rule = verdict(_stats("a", auc=0.80), canary, score_psi, Thresholds())
    assert decided == expected and words in rule


# ---- against real components --------------------------------------------------------------------
STABLE, CANARY = "1.0.0", "1.1.0"
REQUESTS, ROWS = 200, 5  # 200 requests of 5 rows: 180 to stable, 20 to canary


@pytest.fixture(scope="module")
def stack(tmp_path_factory, weak_auto, prometheus_binary):
    tmp = tmp_path_factory.mktemp("ab")
    repo = copy_repository(tmp / "repo", ["auto"])
    assert register(weak_auto, repo, version=CANARY, tolerance=0.1, latency_budget_ms=5000).ok
    server = start_server(repo, tmp, [f"/v2/models/auto/versions/{v}/ready" for v in (STABLE, CANARY)])
    prom = None
    try:
        metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
        # a runtime that stops exporting its metrics fails here, never skips
        assert "ml_prediction_score_bucket" in metrics, "the runtime exports no ml_* metrics (runtime/metrics.py)"
        prom = Prometheus(prometheus_binary, tmp / "prometheus", [f"127.0.0.1:{server.metrics_port}"])
        prom.wait('ml_scoring_latency_seconds_count{model_name="auto"}', lambda r: len(r) == 2)
        yield server, prom
    finally:
        if prom is not None:
            prom.stop()
        stop_server(server)


def _send_split_traffic(server, config) -> dict[str, int]:
    """Every 10th request to the canary, the rest to stable (versioned paths, as a traffic split
    in front of the pods would do); then the true outcome of every row."""
    df = generate(config.vertical("auto"), seed=11, rows=REQUESTS * ROWS)
    target = df["converted"].tolist()
    features = [f.name for f in config.vertical("auto").features]
    records = df[features].astype(object).where(df[features].notna(), None).to_dict("records")
    sent = {STABLE: 0, CANARY: 0}
    outcomes = []
    with InsuranceClient(server.http) as c:
        for i in range(REQUESTS):
            version = CANARY if i % 10 == 9 else STABLE
            part = slice(i * ROWS, (i + 1) * ROWS)
            results = c.score_many("auto", records[part], version=version, quote_time="2026-11-23T10:00:00Z")
            outcomes += list(zip(results, target[part]))
            sent[version] += 1
        answer = c.report_outcomes("auto", outcomes)
    assert answer["matched"] == REQUESTS * ROWS, answer
    return sent


def _scraped(prom, n: int):
    prom.wait('sum(ml_scoring_latency_seconds_count{model_name="auto"})',
              lambda r: r and float(r[0]["value"][1]) >= n)
    # increase() extrapolates to the window's end by up to 1.1 scrape intervals: with k intervals of
    # samples that is up to 1 + 1.1/k too high (3 samples: +55%); 12 samples keep it under +10%
    prom.wait('min(count_over_time(ml_scoring_latency_seconds_count{model_name="auto"}[10m]))',
              lambda r: r and float(r[0]["value"][1]) >= 12)


def test_report_stable_vs_canary_from_prometheus(stack, config, capsys):
    server, prom = stack
    sent = _send_split_traffic(server, config)
    assert sent == {STABLE: 180, CANARY: 20}
    _scraped(prom, REQUESTS)
    prom.wait('ml_model_performance{model_name="auto",source="live",metric="roc_auc"}', lambda r: len(r) == 2)

    rep = ab.report(prom.url, "auto", window="10m", thresholds=Thresholds(min_requests=10))
    s, c = rep.stable, rep.canary
    assert (s.version, c.version) == (STABLE, CANARY)  # the busier version is taken as stable
    assert rep.traffic_share[CANARY] == pytest.approx(0.10, abs=0.02)
    # increase() extrapolates to the window's edges (Prometheus' estimate, a few % high for series
    # this short); shares and ratios are exact to that error, counts are estimates
    assert 20 <= c.requests <= 30 and 180 <= s.requests <= 270
    assert s.rows / s.requests == pytest.approx(ROWS, rel=0.1) and s.error_ratio == 0 and c.error_ratio == 0
    for v in (s, c):
        assert 0 < v.p50_ms <= v.p99_ms and 0 < v.mean_score < 1
        assert set(v.decision_rates) == {"accept", "reject"} and sum(v.decision_rates.values()) == pytest.approx(1)
        assert 0.5 < v.live_roc_auc <= 1 and v.training_roc_auc is not None
    assert s.training_roc_auc == pytest.approx(0.839823)
    assert rep.psi is not None and rep.psi >= 0
    assert rep.verdict in (PROMOTE, HOLD, ROLLBACK) and rep.rule
    print("\n" + rep.text())

    cli = insurance("ab", "report", "--prometheus", prom.url, "--vertical", "auto", "--stable", STABLE, "--canary",
                    CANARY, "--window", "10m", "--json")
    assert cli.returncode == 0, cli.stderr
    data = json.loads(cli.stdout)
    assert data["stable"]["version"] == STABLE and data["canary"]["error_ratio"] == 0
    assert data["verdict"] == HOLD and "evidence" in data["rule"]  # 20 canary requests < the default 100


def test_canary_errors_give_a_roll_back(stack, config):
    server, prom = stack
    before = float(prom.query('sum(ml_scoring_latency_seconds_count{model_name="auto"})')[0]["value"][1])
    with InsuranceClient(server.http) as c:
        for _ in range(10):
            with pytest.raises(InvalidRequest):
                c.score("auto", {"age": -4}, version=CANARY)
    _scraped(prom, before + 10)
    prom.wait('sum(ml_scoring_errors_total{model_name="auto",model_version="1.1.0"})',
              lambda r: r and float(r[0]["value"][1]) >= 10)
    cli = insurance("ab", "report", "--prometheus", prom.url, "--vertical", "auto", "--window", "10m",
                    "--min-requests", "10", "--exit-code")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "verdict: ROLL BACK - error ratio: canary" in cli.stdout
    print("\n" + cli.stdout)


def test_report_errors_are_clear(stack, tmp_path):
    _, prom = stack
    p = insurance("ab", "report", "--prometheus", prom.url, "--vertical", "home", "--window", "10m")
    assert p.returncode == 2 and "no ml_scoring_latency_seconds series of model 'home'" in p.stderr
    p = insurance("ab", "report", "--prometheus", "http://127.0.0.1:9", "--vertical", "auto")
    assert p.returncode == 2 and "not reachable" in p.stderr
