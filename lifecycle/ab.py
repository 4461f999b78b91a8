"""Stable vs canary of one vertical, side by side from Prometheus, with a verdict.

Everything comes from the runtime's ``ml_*`` metrics (observability/contract.py), per
``model_version``, over a window (``increase(...[window])``):

  requests, error ratio   ml_scoring_latency_seconds_count, ml_scoring_errors_total
  p50 / p99 latency       histogram_quantile over ml_scoring_latency_seconds_bucket
  mean score              ml_prediction_score_sum / _count
  decision rates          ml_decisions_total by decision / rows decided
  PSI                     between the two versions' ml_prediction_score bucket shares
  ROC-AUC                 ml_model_performance{metric="roc_auc", source="live"} (outcomes sent),
                          and source="training" for reference

Verdict rules (first match wins; thresholds are options of `insurance ab report`):
  1. ROLL BACK  canary error ratio > stable error ratio + max_error_increase (needs at least
                min_errors failed canary calls, so one stray error does not decide)
  2. HOLD       canary requests < min_requests (not enough evidence yet)
  3. ROLL BACK  canary p99 > latency_ratio x stable p99 and at least latency_margin_ms slower
  4. ROLL BACK  live ROC-AUC of both known and canary < stable - auc_tolerance
  5. HOLD       PSI of the score distributions > psi_hold: the canary scores a different
                population of answers; a person should look before promoting
  6. PROMOTE    none of the above
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

PROMOTE, HOLD, ROLLBACK = "promote", "hold", "roll back"
PSI_EPSILON = 1e-4


class ABError(Exception):
    """Prometheus could not answer, or holds no data for the vertical: the message says which."""


@dataclass
class Thresholds:
    min_requests: int = 100
    max_error_increase: float = 0.01
    min_errors: int = 5
    latency_ratio: float = 1.5
    latency_margin_ms: float = 25.0
    auc_tolerance: float = 0.02
    psi_hold: float = 0.25


@dataclass
class VersionStats:
    version: str
    requests: float = 0.0
    errors: float = 0.0
    rows: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_score: float | None = None
    decision_rates: dict[str, float] = field(default_factory=dict)
    score_buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    live_roc_auc: float | None = None
    training_roc_auc: float | None = None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass
class ABReport:
    vertical: str
    window: str
    prometheus: str
    stable: VersionStats
    canary: VersionStats
    traffic_share: dict[str, float]
    psi: float | None
    verdict: str
    rule: str
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for side in ("stable", "canary"):
            d[side]["error_ratio"] = getattr(self, side).error_ratio
        return d

    def text(self) -> str:
        s, c = self.stable, self.canary

        def pct(x):
            return "n/a" if x is None else f"{100 * x:.2f}%"

        def ms(x):
            return "n/a" if x is None else f"{x:.1f} ms"

        def num(x, fmt="{:.3f}"):
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)

        rows = [
            ("traffic share", pct(self.traffic_share.get(s.version)), pct(self.traffic_share.get(c.version))),
            ("requests", num(s.requests, "{:.0f}"), num(c.requests, "{:.0f}")),
            ("rows scored", num(s.rows, "{:.0f}"), num(c.rows, "{:.0f}")),
            ("error ratio", pct(s.error_ratio), pct(c.error_ratio)),
            ("latency p50", ms(s.p50_ms), ms(c.p50_ms)),
            ("latency p99", ms(s.p99_ms), ms(c.p99_ms)),
            ("mean score", num(s.mean_score), num(c.mean_score)),
        ]
        for d in sorted(set(s.decision_rates) | set(c.decision_rates)):
            rows.append((f"decision {d}", pct(s.decision_rates.get(d)), pct(c.decision_rates.get(d))))
        rows.append(("ROC-AUC live", num(s.live_roc_auc), num(c.live_roc_auc)))
        rows.append(("ROC-AUC training", num(s.training_roc_auc), num(c.training_roc_auc)))
        head = (f"A/B report: {self.vertical} over the last {self.window} (Prometheus {self.prometheus})\n"
                f"{'':<20}{'stable ' + s.version:>18}{'canary ' + c.version:>18}")
        lines = [head] + [f"{a:<20}{b:>18}{d:>18}" for a, b, d in rows]
        lines.append(f"PSI of the score distributions (canary vs stable): {num(self.psi, '{:.4f}')}")
        lines.append(f"verdict: {self.verdict.upper()} - {self.rule}")
        return "\n".join(lines)


def psi(expected: list[float], actual: list[float], eps: float = PSI_EPSILON) -> float | None:
    """Population stability index of two count vectors over the same bins (expected = stable)."""
    te, ta = sum(expected), sum(actual)
    if te <= 0 or ta <= 0:
        return None
    total = 0.0
    for e, a in zip(expected, actual):
        pe, pa = max(e / te, eps), max(a / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def bucket_counts(cumulative: list[tuple[float, float]]) -> list[float]:
    """Prometheus cumulative (le, count) pairs -> per-bin counts, in le order."""
    ordered = sorted(cumulative, key=lambda p: p[0])
    out, prev = [], 0.0
    for _, c in ordered:
        out.append(max(c - prev, 0.0))
        prev = c
    return out


def verdict(stable: VersionStats, canary: VersionStats, score_psi: float | None, t: Thresholds) -> tuple[str, str]:
    se, ce = stable.error_ratio or 0.0, canary.error_ratio
    if ce is not None and canary.errors >= t.min_errors and ce > se + t.max_error_increase:
        return ROLLBACK, (f"error ratio: canary {100 * ce:.2f}% > stable {100 * se:.2f}% + "
                          f"{100 * t.max_error_increase:g} points")
    if canary.requests < t.min_requests:
        return HOLD, f"evidence: canary served {canary.requests:.0f} requests < {t.min_requests} in the window"
    if canary.p99_ms is not None and stable.p99_ms is not None and \
            canary.p99_ms > t.latency_ratio * stable.p99_ms and canary.p99_ms - stable.p99_ms >= t.latency_margin_ms:
        return ROLLBACK, (f"latency: canary p99 {canary.p99_ms:.1f} ms > {t.latency_ratio:g} x stable "
                          f"{stable.p99_ms:.1f} ms")
    if canary.live_roc_auc is not None and stable.live_roc_auc is not None and \
            canary.live_roc_auc < stable.live_roc_auc - t.auc_tolerance:
        return ROLLBACK, (f"quality: canary live ROC-AUC {canary.live_roc_auc:.3f} < stable "
                          f"{stable.live_roc_auc:.3f} - {t.auc_tolerance:g}")
    if score_psi is not None and score_psi > t.psi_hold:
        return HOLD, (f"score shift: PSI {score_psi:.3f} > {t.psi_hold:g}; the canary answers a different "
                      "distribution of scores, review before promoting")
    auc = ("live ROC-AUC not worse than stable - " + f"{t.auc_tolerance:g}" if canary.live_roc_auc is not None
           and stable.live_roc_auc is not None else "no live ROC-AUC yet (send outcomes to compare quality)")
    return PROMOTE, (f"all rules passed: error ratio within +{100 * t.max_error_increase:g} points, "
                     f"p99 within {t.latency_ratio:g}x, PSI <= {t.psi_hold:g}, {auc}")


class Prometheus:
    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = headers or {}

    def query(self, promql: str) -> list[dict[str, Any]]:
        try:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout,
                          headers=self.headers)
        except httpx.HTTPError as e:
            raise ABError(f"Prometheus at {self.url} not reachable: {type(e).__name__}: {e}") from e
        try:
            body = r.json()
        except ValueError:
            raise ABError(f"Prometheus at {self.url} answered {r.status_code}: {r.text[:300]}") from None
        if body.get("status") != "success":
            raise ABError(f"Prometheus refused `{promql}`: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def by(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        out = {}
        for item in self.query(promql):
            key = tuple(item["metric"].get(label, "") for label in labels)
            value = float(item["value"][1])
            out[key] = value
        return out


def _selector(vertical: str, extra: str | None) -> str:
    parts = [f'model_name="{vertical}"']
    if extra:
        parts.append(extra.strip().strip("{}"))
    return ",".join(parts)


def collect(prom: Prometheus, vertical: str, window: str, extra_selector: str | None = None
            ) -> dict[str, VersionStats]:
    """Every version of the vertical with series in Prometheus -> its stats over the window."""
    sel = _selector(vertical, extra_selector)
    requests = prom.by(f"sum by (model_version) (increase(ml_scoring_latency_seconds_count{{{sel}}}[{window}]))",
                       "model_version")
    if not requests:
        raise ABError(f"Prometheus has no ml_scoring_latency_seconds series of model {vertical!r}"
                      f"{' with ' + extra_selector if extra_selector else ''} in the last {window}: is the runtime "
                      "exporting the ml_* metrics and is Prometheus scraping MLServer's metrics port (8082)?")
    stats = {v: VersionStats(version=v, requests=n) for (v,), n in requests.items()}

    def each(promql: str, attr: str, scale: float = 1.0):
        for (v,), value in prom.by(promql, "model_version").items():
            if v in stats and not math.isnan(value):
                setattr(stats[v], attr, value * scale)

    each(f"sum by (model_version) (increase(ml_scoring_errors_total{{{sel}}}[{window}]))", "errors")
    each(f"sum by (model_version) (increase(ml_rows_total{{{sel}}}[{window}]))", "rows")
    for q, attr in ((0.5, "p50_ms"), (0.99, "p99_ms")):
        each(f"histogram_quantile({q}, sum by (model_version, le) "
             f"(increase(ml_scoring_latency_seconds_bucket{{{sel}}}[{window}])))", attr, 1000.0)
    each(f"sum by (model_version) (increase(ml_prediction_score_sum{{{sel}}}[{window}])) / "
         f"sum by (model_version) (increase(ml_prediction_score_count{{{sel}}}[{window}]))", "mean_score")
    each(f'max by (model_version) (ml_model_performance{{{sel},metric="roc_auc",source="live"}})', "live_roc_auc")
    each(f'max by (model_version) (ml_model_performance{{{sel},metric="roc_auc",source="training"}})',
         "training_roc_auc")
    decisions = prom.by(f"sum by (model_version, decision) (increase(ml_decisions_total{{{sel}}}[{window}]))",
                        "model_version", "decision")
    totals: dict[str, float] = {}
    for (v, _), n in decisions.items():
        totals[v] = totals.get(v, 0.0) + n
    for (v, d), n in decisions.items():
        if v in stats and totals.get(v):
            stats[v].decision_rates[d] = n / totals[v]
    buckets = prom.by(f"sum by (model_version, le) (increase(ml_prediction_score_bucket{{{sel}}}[{window}]))",
                      "model_version", "le")
    for (v, le), n in buckets.items():
        if v in stats:
            stats[v].score_buckets.append((float(le), n))
    for s in stats.values():
        s.score_buckets.sort()
    return stats


def report(prometheus_url: str, vertical: str, *, stable: str | None = None, canary: str | None = None,
           window: str = "1h", thresholds: Thresholds | None = None, extra_selector: str | None = None,
           headers: dict[str, str] | None = None) -> ABReport:
    """Build the stable-vs-canary report. Versions not given are the two with the most requests
    in the window (the busier one is stable)."""
    t = thresholds or Thresholds()
    prom = Prometheus(prometheus_url, headers=headers)
    stats = collect(prom, vertical, window, extra_selector)
    by_traffic = sorted(stats, key=lambda v: -stats[v].requests)
    if stable is None:
        stable = next((v for v in by_traffic if v != canary), None)
    if canary is None:
        canary = next((v for v in by_traffic if v != stable), None)
    if stable is None or stable not in stats:
        raise ABError(f"no series of stable version {stable} of {vertical}; versions seen: {', '.join(by_traffic)}")
    if canary is None:
        raise ABError(f"only one version of {vertical} has series ({stable}): no canary to compare")
    s = stats[stable]
    c = stats.get(canary) or VersionStats(version=canary)
    total = s.requests + c.requests
    share = {s.version: s.requests / total, c.version: c.requests / total} if total > 0 else {}
    score_psi = None
    if s.score_buckets and c.score_buckets and [b[0] for b in s.score_buckets] == [b[0] for b in c.score_buckets]:
        score_psi = psi(bucket_counts(s.score_buckets), bucket_counts(c.score_buckets))
    decided, rule = verdict(s, c, score_psi, t)
    return ABReport(vertical=vertical, window=window, prometheus=prometheus_url, stable=s, canary=c,
                    traffic_share=share, psi=score_psi, verdict=decided, rule=rule, thresholds=t)
