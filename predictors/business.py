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
import math
from bisect import bisect_right
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from .encoding import Batch
from .spec import NUMERIC, CATEGORICAL

ACCEPT, REJECT = "accept", "reject"
ML_APPROVED, ML_REJECTED, ML_REVIEW = "ML_APPROVED", "ML_REJECTED", "ML_REVIEW"


def confidence(scores: np.ndarray, threshold: float, present: np.ndarray, n_features: int) -> np.ndarray:
    span_above = 1.0 - threshold if 1.0 - threshold > 0 else 1.0
    span_below = threshold if threshold > 0 else 1.0
    margin = np.abs(scores - threshold) / np.where(scores >= threshold, span_above, span_below)
    return np.minimum(margin, 1.0) * (present / max(n_features, 1))  # margin >= 0: the clip at 0 is moot


_REJECT_ACCEPT = np.array([REJECT, ACCEPT], dtype=object)


def decisions(scores: np.ndarray, threshold: float) -> list[str]:
    return _REJECT_ACCEPT[(scores >= threshold).view(np.uint8)].tolist()  # one gather, no per-row Python


def _apply_rule(rule: Mapping[str, Any], batch: Batch, risk: np.ndarray) -> None:
    """One risk rule applied to ``risk`` in place, by its definition (masks per band, a lookup per
    row): for the rules the table form of RiskPricing cannot express (e.g. overlapping bands)."""
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


#: Up to this many rows, risk factors are computed row by row in Python (cheaper than numpy's
#: per-call overhead for a few rows); the same tables and products, so the same floats.
_SCALAR_ROWS = 16


class RiskPricing:
    """The vertical's risk rules (config `pricing.risk`) as lookup tables, built once.

    Bands become sorted edges and one factor per interval (1.0 in gaps and for missing values):
    a row's factor is one ``searchsorted``. A categorical rule becomes a factor per category
    index (``Batch.codes``), 1.0 for missing and unseen values. Rules these forms cannot express
    exactly (overlapping bands, a table naming a value outside the feature's categories) keep
    the row-wise definition.
    """

    def __init__(self, rules: Sequence[Mapping[str, Any]], features: Sequence[Any] = ()):
        categories = {f.name: tuple(f.categories) for f in features if f.kind == CATEGORICAL}
        self.rules: list[tuple] = []
        for rule in rules:
            name = rule["feature"]
            if "bands" in rule:
                table = self._band_table(rule["bands"])
                self.rules.append(("bands", name, *table) if table else ("generic", name, rule))
            else:
                cats = categories.get(name)
                table = rule["categories"]
                if cats is None or not set(table) <= set(cats):
                    self.rules.append(("generic", name, rule))
                else:  # index k = category k; the last slot is missing / unseen
                    factors = np.array([float(table.get(c, 1.0)) for c in cats] + [1.0])
                    self.rules.append(("codes", name, factors, {c: float(i) for i, c in enumerate(cats)}))
        # the same tables as Python lists, for factor() on a few rows (None: a rule needs the definition)
        self._row_tables = None
        if all(kind != "generic" for kind, *_ in self.rules):
            self._row_tables = [(True, name, t[0].tolist(), t[1].tolist()) if kind == "bands"
                                else (False, name, None, t[0].tolist()) for kind, name, *t in self.rules]

    def _factor_rows(self, batch: Batch) -> np.ndarray | None:
        """factor() for a few rows in plain Python: the same tables and the same products in the
        same order (hence the same floats), without a dozen numpy calls per rule."""
        columns = []
        for is_band, name, edges, factors in self._row_tables:
            values = batch.columns[name] if is_band else batch.codes.get(name)
            if values is None:
                return None  # a Batch built without codes
            columns.append((values.tolist(), edges, factors))
        out = []
        for i in range(batch.n):
            risk = 1.0
            for values, edges, factors in columns:
                v = values[i]
                if v != v:  # NaN: missing value or unseen category
                    risk *= factors[-1]
                elif edges is not None:
                    risk *= factors[bisect_right(edges, v)]
                else:
                    risk *= factors[int(v)]
            out.append(risk)
        return np.array(out, dtype=np.float64)

    @staticmethod
    def _band_table(bands) -> tuple[np.ndarray, np.ndarray] | None:
        bands = sorted(bands, key=lambda b: -math.inf if b[0] is None else b[0])
        edges: list[float] = []
        factors: list[float] = [1.0]  # below the first edge
        upper = -math.inf
        for lo, hi, factor in bands:
            lo = -math.inf if lo is None else float(lo)
            hi = math.inf if hi is None else float(hi)
            if lo < upper or not lo < hi:
                return None  # overlapping or empty: not a partition
            if lo > upper:  # a gap (or the first band): factor 1.0 up to lo
                if lo != -math.inf:
                    edges.append(lo)
                    factors.append(1.0)
            factors[-1] = float(factor)
            if hi != math.inf:
                edges.append(hi)
                factors.append(1.0)
            upper = hi
        return np.array(edges), np.array(factors + [1.0])  # the extra last slot: missing (NaN)

    def factor(self, batch: Batch) -> np.ndarray:
        if batch.n <= _SCALAR_ROWS and self._row_tables is not None:
            risk = self._factor_rows(batch)
            if risk is not None:
                return risk
        risk = np.ones(batch.n)
        for kind, name, *table in self.rules:
            if kind == "bands":
                edges, factors = table
                col = batch.columns[name]
                idx = np.searchsorted(edges, col, side="right")  # NaN sorts last
                nan = np.isnan(col)
                if nan.any():
                    idx[nan] = len(factors) - 1
                risk *= factors[idx]
            elif kind == "codes":
                factors, index = table
                codes = batch.codes.get(name)
                if codes is None:  # a Batch built without codes
                    codes = np.array([index.get(v, math.nan) if v is not None else math.nan
                                      for v in batch.columns[name]], dtype=np.float64)
                idx = np.where(np.isnan(codes), len(factors) - 1, codes).astype(np.intp)
                risk *= factors[idx]
            else:
                _apply_rule(table[0], batch, risk)
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
        self._json: dict[float, tuple[str, str]] = {}  # peak factor -> JSON (plain, discounted)

    def is_peak(self, now: datetime) -> bool:
        hour = now.astimezone(timezone.utc).hour
        return any(start <= hour < end for start, end in self.peak_windows)

    def texts(self, peak: float) -> tuple[str, str]:
        """The market_factors JSON of a row without and with the low-intent discount."""
        texts = self._json.get(peak)
        if texts is None:
            texts = self._json[peak] = tuple(json.dumps({"peak_hours": peak, "low_intent_discount": f})
                                             for f in (1.0, self.low_factor))
        return texts

    def state(self, now: datetime) -> tuple[float, ...]:
        """The factors that depend on the time alone (what a cached prediction must match)."""
        return (self.peak_factor if self.is_peak(now) else 1.0,)

    def factors(self, scores: np.ndarray, now: datetime) -> tuple[np.ndarray, list[str]]:
        """Per-row market multiplier and its JSON breakdown."""
        peak = self.peak_factor if self.is_peak(now) else 1.0
        low_rows = scores < self.low_below
        low = np.where(low_rows, self.low_factor, 1.0)
        texts = np.array(self.texts(peak), dtype=object)  # (plain, discounted)
        return peak * low, texts[low_rows.view(np.uint8)].tolist()


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
