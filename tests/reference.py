"""A deliberately plain reference of the business path, one row at a time, for tests.

No caches, no lookup tables, no vectorization, no C API: each row is encoded from its raw
values by the definitions written in verticals.yaml and business.py's docstring, scored by the
framework's public API on a one-row input, and priced rule by rule. The fast path
(encoding.Normalizer, LeadEncoder, scoring.BoosterScorer, business.RiskPricing, ...) must give
the same outputs: tests/test_predictors_vs_reference.py compares them on generated rows.

Valid rows only: what a row may hold is the normalized form (numbers or None, strings or None).
"""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from predictors.spec import CATEGORICAL, NUMERIC, TEXT


def _clean_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8")
    v = v.strip()
    return v or None


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def reference_row_values(features, row: Mapping[str, Any]) -> dict[str, Any]:
    """One raw row -> normalized values: floats (NaN missing), lower-cased categories, stripped text."""
    out: dict[str, Any] = {}
    for f in features:
        v = row.get(f.name)
        if f.kind == NUMERIC:
            out[f.name] = _number(v)
        elif f.kind == CATEGORICAL:
            t = _clean_text(v)
            out[f.name] = None if t is None else t.lower()
        else:
            out[f.name] = _clean_text(v)
    return out


def reference_present(features, values: Mapping[str, Any]) -> int:
    count = 0
    for f in features:
        v = values[f.name]
        if f.kind == NUMERIC:
            count += not math.isnan(v)
        else:
            count += v is not None
    return count


def reference_encode_row(features, buckets: int, values: Mapping[str, Any]) -> list[float]:
    """The LightGBM input row: numeric as is, categorical index (NaN missing/unseen), then per
    text feature `buckets` token counts by crc32 of each lower-cased [a-z0-9_]+ token."""
    import re

    row: list[float] = []
    for f in features:
        if f.kind == NUMERIC:
            row.append(values[f.name])
        elif f.kind == CATEGORICAL:
            v = values[f.name]
            row.append(float(f.categories.index(v)) if v in f.categories else math.nan)
    for f in features:
        if f.kind != TEXT:
            continue
        counts = [0.0] * buckets
        text = values[f.name]
        if text is not None:
            for token in re.findall(r"[a-z0-9_]+", text.lower()):
                counts[zlib.crc32(token.encode("utf-8")) % buckets] += 1.0
        row.extend(counts)
    return row


def reference_risk(rules: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> float:
    risk = 1.0
    for rule in rules:
        v = values[rule["feature"]]
        if "bands" in rule:
            for lo, hi, factor in rule["bands"]:
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                if (lo is None or v >= lo) and (hi is None or v < hi):
                    risk *= factor
        else:
            risk *= rule["categories"].get(v, 1.0) if v is not None else 1.0
    return risk


def reference_lead(predictor, rows: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, list]:
    """Outputs of a LeadScoringPredictor's business path, computed row by row."""
    features = predictor.features
    t = predictor.threshold
    pricing = predictor.vertical.pricing
    market = predictor.market
    hour = now.astimezone(timezone.utc).hour
    peak = market.peak_factor if any(start <= hour < end for start, end in market.peak_windows) else 1.0
    out: dict[str, list] = {k: [] for k in ("score", "confidence", "price", "market_factors", "decision")}
    for row in rows:
        values = reference_row_values(features, row)
        x = np.array([reference_encode_row(features, predictor.encoder.buckets, values)], dtype=np.float64)
        score = float(predictor.model.predict(x, num_threads=1)[0])
        span = (1.0 - t if 1.0 - t > 0 else 1.0) if score >= t else (t if t > 0 else 1.0)
        margin = min(max(abs(score - t) / span, 0.0), 1.0)
        confidence = margin * (reference_present(features, values) / max(len(features), 1))
        low = market.low_factor if score < market.low_below else 1.0
        risk = reference_risk(pricing.get("risk", ()), values)
        price = float(np.round(float(pricing["base_premium"]) * risk * (peak * low), 2))
        out["score"].append(score)
        out["confidence"].append(confidence)
        out["price"].append(price)
        out["market_factors"].append(json.dumps({"peak_hours": peak, "low_intent_discount": low}))
        out["decision"].append("accept" if score >= t else "reject")
    return out


def reference_claims(predictor, rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Outputs of a ClaimsTriagePredictor, row by row (the pipeline scores the rows in one call)."""
    import pandas as pd

    from predictors.encoding import MISSING_CATEGORY

    features = predictor.features
    rules = predictor.rules
    reference = predictor.manifest["reference"]
    numeric = [f for f in features if f.kind == NUMERIC and (reference.get(f.name) or {}).get("quantiles")]
    out: dict[str, list] = {k: [] for k in ("score", "anomaly_score", "settlement_estimate", "decision")}
    # The pipeline's input, built row by row; scored in one call (the model is scikit-learn's, not
    # ours: one row at a time would only be slower, at about 10 ms a call).
    records = []
    for row in rows:
        values = reference_row_values(features, row)
        record = {}
        for f in features:
            v = values[f.name]
            if f.kind == TEXT:
                v = "" if v is None else v
            elif f.kind == CATEGORICAL:
                v = MISSING_CATEGORY if v is None else v
            record[f.name] = v
        records.append((values, record))
    df = pd.DataFrame({f.name: np.array([r[f.name] for _, r in records],
                                        dtype=np.float64 if f.kind == NUMERIC else object) for f in features})
    scores = [float(s) for s in predictor.model.predict_proba(df)[:, 1]]
    for (values, _), score in zip(records, scores):
        extreme = 0.0
        for f in numeric:
            v = values[f.name]
            if math.isnan(v):
                continue
            q = np.asarray(reference[f.name]["quantiles"], dtype=np.float64)
            cdf = float(np.interp(v, q, np.linspace(0.0, 1.0, len(q)), left=0.0, right=1.0))
            extreme = max(extreme, 2.0 * abs(cdf - 0.5))
        anomaly = extreme ** max(len(numeric), 1)
        for f in features:
            if f.kind == CATEGORICAL and values[f.name] is not None and values[f.name] not in f.categories:
                anomaly = 1.0
        ratio = rules.get("payout_ratio", {}).get(values["claim_type"], float(rules.get("default_payout_ratio", 1.0)))
        settlement = float(np.round(score * values["claim_amount"] * ratio, 2))
        if anomaly >= float(rules["review_anomaly"]):
            decision = "ML_REVIEW"
        elif score >= float(rules["approve_threshold"]):
            decision = "ML_APPROVED"
        elif score < float(rules["reject_threshold"]):
            decision = "ML_REJECTED"
        else:
            decision = "ML_REVIEW"
        out["score"].append(score)
        out["anomaly_score"].append(anomaly)
        out["settlement_estimate"].append(settlement)
        out["decision"].append(decision)
    return out
