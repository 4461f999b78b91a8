"""Per-task predictors: validated raw columns in, business outputs out.

A predictor is built from a bundle (its model and feature spec) and the verticals config
(business rules). It knows nothing of MLServer or the V2 protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import business
from .bundle import open_bundle
from .encoding import Batch, LeadEncoder, claims_frame, normalize
from .spec import CLAIMS_TRIAGE, LEAD_SCORING, Config, Feature, load_config

FP64, BYTES = "FP64", "BYTES"

# Output name -> V2 datatype, per task (the API contract's outputs, in response order).
OUTPUTS = {
    LEAD_SCORING: {"score": FP64, "confidence": FP64, "price": FP64, "market_factors": BYTES, "decision": BYTES},
    CLAIMS_TRIAGE: {"score": FP64, "anomaly_score": FP64, "settlement_estimate": FP64, "decision": BYTES},
}


@dataclass
class Prediction:
    batch: Batch
    outputs: dict[str, Any]  # output name -> float64 array or list of str, in OUTPUTS order


def features_from_spec(spec: Sequence[Mapping[str, Any]]) -> tuple[Feature, ...]:
    return tuple(
        Feature(name=f["name"], kind=f["kind"], categories=tuple(f.get("categories", ())),
                min=f.get("min"), max=f.get("max"), required=bool(f.get("required", False)))
        for f in spec
    )


class Predictor:
    """Shared part: the bundle's features and validation."""

    task: str

    def __init__(self, manifest: Mapping[str, Any], model: Any, config: Config):
        self.manifest = manifest
        self.model = model
        self.vertical = config.vertical(manifest["vertical"])
        self.features = features_from_spec(manifest["feature_spec"])
        self.outputs = OUTPUTS[self.task]

    def normalize(self, raw: Mapping[str, Sequence[Any]], n: int | None = None) -> Batch:
        return normalize(self.features, raw, n)

    def predict(self, raw: Mapping[str, Sequence[Any]], n: int | None = None, **context: Any) -> Prediction:
        batch = self.normalize(raw, n)
        return Prediction(batch=batch, outputs=self.predict_batch(batch, **context))

    def predict_batch(self, batch: Batch, **context: Any) -> dict[str, Any]:
        raise NotImplementedError


class LeadScoringPredictor(Predictor):
    task = LEAD_SCORING

    def __init__(self, manifest, model, config, threshold: float | None = None):
        super().__init__(manifest, model, config)
        self.encoder = LeadEncoder(self.features, manifest["encoding"]["text_hash_buckets"])
        if self.encoder.columns != list(manifest["encoding"]["columns"]):
            raise ValueError(f"bundle {manifest['name']} {manifest['version']}: encoded columns differ from "
                             "what this version of predictors/ produces; retrain the bundle")
        self.threshold = self.vertical.decision_threshold if threshold is None else float(threshold)
        self.market = business.MarketPricing(config.market)
        self.pricing = self.vertical.pricing

    def scores(self, batch: Batch) -> np.ndarray:
        return np.asarray(self.model.predict(self.encoder.encode(batch), num_threads=1), dtype=np.float64)

    def predict_batch(self, batch: Batch, now: datetime | None = None) -> dict[str, Any]:
        scores = self.scores(batch)
        market, market_json = self.market.factors(scores, now or datetime.now(timezone.utc))
        risk = business.risk_factor(self.pricing.get("risk", ()), batch)
        return {
            "score": scores,
            "confidence": business.confidence(scores, self.threshold, batch.present, len(self.features)),
            "price": business.price(float(self.pricing["base_premium"]), risk, market),
            "market_factors": market_json,
            "decision": business.decisions(scores, self.threshold),
        }


class ClaimsTriagePredictor(Predictor):
    task = CLAIMS_TRIAGE

    def __init__(self, manifest, model, config, threshold: float | None = None):
        super().__init__(manifest, model, config)
        self.rules = dict(self.vertical.triage)
        if threshold is not None:
            self.rules["approve_threshold"] = float(threshold)
        self.anomaly = business.AnomalyScorer(manifest["reference"], self.features)

    def scores(self, batch: Batch) -> np.ndarray:
        return np.asarray(self.model.predict_proba(claims_frame(batch, self.features))[:, 1], dtype=np.float64)

    def predict_batch(self, batch: Batch, now: datetime | None = None) -> dict[str, Any]:
        scores = self.scores(batch)
        anomaly = self.anomaly.score(batch)
        return {
            "score": scores,
            "anomaly_score": anomaly,
            "settlement_estimate": business.settlement(scores, batch, self.rules),
            "decision": business.triage(scores, anomaly, self.rules),
        }


PREDICTORS = {LEAD_SCORING: LeadScoringPredictor, CLAIMS_TRIAGE: ClaimsTriagePredictor}


def load_predictor(folder: str | Path, config: Config | None = None, threshold: float | None = None) -> Predictor:
    """Open a bundle (verifying its hashes) and build the predictor for its task."""
    manifest, model = open_bundle(folder)
    return PREDICTORS[manifest["task"]](manifest, model, config or load_config(), threshold=threshold)
