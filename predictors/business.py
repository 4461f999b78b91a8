"""Post-processing of model scores into the business outputs (framework-free).

Lead scoring:
  confidence = margin x completeness, in [0, 1]
      margin       = |score - t| / (t if score < t else 1 - t)   (t = decision threshold):
                     0 on the threshold, 1 at score 0 or 1
      completeness = share of the vertical's features the row provided
  price      = base_premium x risk x market, rounded to cents
      risk   = product of the vertical's risk factors (config `pricing.risk`; a missing
               feature contributes 1.0)
      market = product of the market factors (config `market`), returned per row as a
               JSON object holding every factor
  decision   = "accept" if score >= t else "reject"

Claims triage:
  anomaly_score       = max_i(e_i) ** k over the k numeric features, where
                        e_i = 2 |F_i(x_i) - 0.5| and F_i is the training distribution's CDF
                        (from the bundle's reference quantiles); an unseen category counts
                        as e = 1. For claims like the training data the score is uniform on
                        [0, 1]: 0.99 means more extreme than about 99 % of them.
  settlement_estimate = score x claim_amount x payout_ratio[claim_type] (expected payout)
  decision            = ML_REVIEW if anomaly_score >= review_anomaly,
                        else ML_APPROVED if score >= approve_threshold,
                        else ML_REJECTED if score < reject_threshold, else ML_REVIEW
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from .encoding import Batch
from .spec import NUMERIC, CATEGORICAL

ACCEPT, REJECT = "accept", "reject"
ML_APPROVED, ML_REJECTED, ML_REVIEW = "ML_APPROVED", "ML_REJECTED", "ML_REVIEW"


def confidence(scores: np.ndarray, threshold: float, present: np.ndarray, n_features: int) -> np.ndarray:
    above = scores >= threshold
    span = np.where(above, 1.0 - threshold, threshold)
    margin = np.abs(scores - threshold) / np.where(span > 0, span, 1.0)
    return np.clip(margin, 0.0, 1.0) * (present / max(n_features, 1))


def decisions(scores: np.ndarray, threshold: float) -> list[str]:
    return [ACCEPT if s >= threshold else REJECT for s in scores.tolist()]


def risk_factor(rules: Sequence[Mapping[str, Any]], batch: Batch) -> np.ndarray:
    risk = np.ones(batch.n)
    for rule in rules:
        col = batch.columns[rule["feature"]]
        if "bands" in rule:
            for lo, hi, factor in rule["bands"]:
                with np.errstate(invalid="ignore"):
                    mask = ~np.isnan(col)
                    if lo is not None:
                        mask &= col >= lo
                    if hi is not None:
                        mask &= col < hi
                risk[mask] *= factor
        else:
            table = rule["categories"]
            risk *= np.fromiter((table.get(v, 1.0) if v is not None else 1.0 for v in col),
                                dtype=np.float64, count=batch.n)
    return risk


class MarketPricing:
    """Market factors from the config's `market` section."""

    def __init__(self, market: Mapping[str, Any]):
        peak = market.get("peak_hours") or {}
        self.peak_factor = float(peak.get("factor", 1.0))
        self.peak_windows = [tuple(w) for w in peak.get("hours_utc", ())]
        low = market.get("low_intent_discount") or {}
        self.low_factor = float(low.get("factor", 1.0))
        self.low_below = float(low.get("below_score", 0.0))
        self._json: dict[tuple[float, float], str] = {}

    def is_peak(self, now: datetime) -> bool:
        hour = now.astimezone(timezone.utc).hour
        return any(start <= hour < end for start, end in self.peak_windows)

    def factors(self, scores: np.ndarray, now: datetime) -> tuple[np.ndarray, list[str]]:
        """Per-row market multiplier and its JSON breakdown."""
        peak = self.peak_factor if self.is_peak(now) else 1.0
        low = np.where(scores < self.low_below, self.low_factor, 1.0)
        out = []
        for f in low.tolist():
            key = (peak, f)
            text = self._json.get(key)
            if text is None:
                text = self._json[key] = json.dumps({"peak_hours": peak, "low_intent_discount": f})
            out.append(text)
        return peak * low, out


def price(base_premium: float, risk: np.ndarray, market: np.ndarray) -> np.ndarray:
    return np.round(base_premium * risk * market, 2)


class AnomalyScorer:
    """Anomaly score of claims against the bundle's reference statistics."""

    def __init__(self, reference: Mapping[str, Mapping[str, Any]], features):
        self.numeric = []
        self.categorical = []
        for f in features:
            ref = reference.get(f.name) or {}
            if f.kind == NUMERIC and ref.get("quantiles"):
                q = np.asarray(ref["quantiles"], dtype=np.float64)
                self.numeric.append((f.name, q, np.linspace(0.0, 1.0, len(q))))
            elif f.kind == CATEGORICAL:
                self.categorical.append((f.name, frozenset(f.categories)))

    def score(self, batch: Batch) -> np.ndarray:
        extreme = np.zeros(batch.n)
        for name, q, probs in self.numeric:
            col = batch.columns[name]
            cdf = np.interp(col, q, probs, left=0.0, right=1.0)
            e = np.where(np.isnan(col), 0.0, 2.0 * np.abs(cdf - 0.5))
            np.maximum(extreme, e, out=extreme)
        anomaly = extreme ** max(len(self.numeric), 1)
        for name, known in self.categorical:
            if batch.unseen.get(name):
                unseen = np.fromiter((v is not None and v not in known for v in batch.columns[name]),
                                     dtype=bool, count=batch.n)
                anomaly[unseen] = 1.0
        return anomaly


def triage(scores: np.ndarray, anomaly: np.ndarray, rules: Mapping[str, Any]) -> list[str]:
    approve, reject = float(rules["approve_threshold"]), float(rules["reject_threshold"])
    review = float(rules["review_anomaly"])
    out = []
    for s, a in zip(scores.tolist(), anomaly.tolist()):
        if a >= review:
            out.append(ML_REVIEW)
        elif s >= approve:
            out.append(ML_APPROVED)
        elif s < reject:
            out.append(ML_REJECTED)
        else:
            out.append(ML_REVIEW)
    return out


def settlement(scores: np.ndarray, batch: Batch, rules: Mapping[str, Any]) -> np.ndarray:
    ratios = rules.get("payout_ratio", {})
    default = float(rules.get("default_payout_ratio", 1.0))
    ratio = np.fromiter((ratios.get(v, default) for v in batch.columns["claim_type"]),
                        dtype=np.float64, count=batch.n)
    return np.round(scores * batch.columns["claim_amount"] * ratio, 2)
