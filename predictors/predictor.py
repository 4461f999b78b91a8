"""Per-task predictors: validated raw columns in, business outputs out.

A predictor is built from a bundle (its model and feature spec) and the verticals config
(business rules). It knows nothing of MLServer or the V2 protocol.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import business
from .bundle import load_model, read_manifest, verify_files
from .cache import PredictionCache, request_key
from .encoding import Batch, LeadEncoder, Normalizer, claims_frame
from .scoring import BoosterScorer, CompiledScorer, compile_in_subprocess, compiled_path, default_cache_dir, \
    lleaves_available, load_verified_library, verified

logger = logging.getLogger("predictors.predictor")
from .spec import CLAIMS_TRIAGE, LEAD_SCORING, Config, Feature, load_config

FP64, BYTES = "FP64", "BYTES"

#: Up to this many rows, the lead-scoring business outputs are computed in plain Python
#: (LeadScoringPredictor._business_rows): numpy's fixed cost per call dominates for a few rows.
SCALAR_ROWS = 16

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
        self.normalizer = Normalizer(self.features)
        self.feature_names = tuple(f.name for f in self.features)
        self.cache: PredictionCache | None = None
        self.folder: Path | None = None  # set by load_predictor

    def normalize(self, raw: Mapping[str, Sequence[Any]], n: int | None = None) -> Batch:
        return self.normalizer(raw, n)

    def predict(self, raw: Mapping[str, Sequence[Any]], n: int | None = None, **context: Any) -> Prediction:
        cache = self.cache
        if cache is None:
            batch = self.normalize(raw, n)
            return Prediction(batch=batch, outputs=self.predict_batch(batch, **context))
        context = self.resolve_context(context)
        key = request_key(self.feature_names, raw, n, self.context_state(context))
        batch = self.normalize(raw, n)  # also on a hit: the batch feeds drift accounting, and it is cheap
        if key is not None:
            hit = cache.get(key)
            if hit is not None:
                return Prediction(batch=batch, outputs={
                    name: np.array(values, dtype=np.float64) if self.outputs[name] == FP64 else values
                    for name, values in json.loads(hit).items()})
        outputs = self.predict_batch(batch, **context)
        if key is not None:  # JSON text: see predictors/cache.py for why not the arrays themselves
            cache.put(key, json.dumps({name: v.tolist() if isinstance(v, np.ndarray) else v
                                       for name, v in outputs.items()}))
        return Prediction(batch=batch, outputs=outputs)

    def enable_cache(self, ttl_seconds: float, max_entries: int = 10_000) -> PredictionCache:
        """Reuse the outputs of identical requests for `ttl_seconds` (predictors/cache.py)."""
        self.cache = PredictionCache(ttl_seconds, max_entries)
        return self.cache

    def resolve_context(self, context: dict[str, Any]) -> dict[str, Any]:
        """The context with its defaults filled in (the cache keys on what will be used)."""
        return context

    def context_state(self, context: Mapping[str, Any]) -> Any:
        """What of the context changes the outputs (part of a cache key)."""
        return None

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
        self.risk = business.RiskPricing(self.pricing.get("risk", ()), self.features)
        self.base_premium = float(self.pricing["base_premium"])
        self.booster_scorer = BoosterScorer(model)
        self.scorer = self.booster_scorer  # swapped for compiled trees by use_compiled_trees()

    def scores(self, batch: Batch) -> np.ndarray:
        return self.scorer(self.encoder.encode(batch))

    def resolve_context(self, context: dict[str, Any]) -> dict[str, Any]:
        if context.get("now") is None:
            context = {**context, "now": datetime.now(timezone.utc)}
        return context

    def context_state(self, context: Mapping[str, Any]) -> Any:
        return self.market.state(context["now"])

    def predict_batch(self, batch: Batch, now: datetime | None = None) -> dict[str, Any]:
        scores = self.scores(batch)
        now = now or datetime.now(timezone.utc)
        if batch.n <= SCALAR_ROWS:
            return self._business_rows(batch, scores, now)
        market, market_json = self.market.factors(scores, now)
        return {
            "score": scores,
            "confidence": business.confidence(scores, self.threshold, batch.present, len(self.features)),
            "price": business.price(self.base_premium, self.risk.factor(batch), market),
            "market_factors": market_json,
            "decision": business.decisions(scores, self.threshold),
        }

    def _business_rows(self, batch: Batch, scores: np.ndarray, now: datetime) -> dict[str, Any]:
        """predict_batch's business outputs for a few rows in plain Python floats: the formulas of
        business.confidence / MarketPricing.factors / price / decisions with the same operations in
        the same order (hence the same numbers), without numpy's per-call overhead."""
        t = self.threshold
        span_above = 1.0 - t if 1.0 - t > 0 else 1.0
        span_below = t if t > 0 else 1.0
        n_features = max(len(self.features), 1)
        (peak,) = self.market.state(now)
        low_factor, low_below = self.market.low_factor, self.market.low_below
        plain, discounted = self.market.texts(peak)
        base = self.base_premium
        confidence, price, market_json, decision = [], [], [], []
        for s, present, risk in zip(scores.tolist(), batch.present.tolist(), self.risk.factor(batch).tolist()):
            margin = abs(s - t) / (span_above if s >= t else span_below)
            confidence.append(min(margin, 1.0) * (present / n_features))
            low = s < low_below
            # np.round(p, 2) is rint(p * 100) / 100; Python's round() of a float is rint: same numbers
            price.append(round(base * risk * (peak * (low_factor if low else 1.0)) * 100.0) / 100.0)
            market_json.append(discounted if low else plain)
            decision.append(business.ACCEPT if s >= t else business.REJECT)
        return {
            "score": scores,
            "confidence": np.array(confidence, dtype=np.float64),
            "price": np.array(price, dtype=np.float64),
            "market_factors": market_json,
            "decision": decision,
        }

    def use_compiled_trees(self, cache_dir: str | Path | None = None, background: bool = True
                           ) -> threading.Thread | None:
        """Score with the trees compiled by lleaves once they are compiled and verified (outputs equal
        to LightGBM's within 1e-9 on probe rows); LightGBM until then, and for good if lleaves is
        missing, fails or differs. A cached compilation loads at once; otherwise LLVM compiles in a
        subprocess (in a background thread when `background`, so that serving starts on LightGBM).
        The compiled trees load as a shared library (ctypes); without a linker, through llvmlite."""
        name = self.manifest["name"]
        if not lleaves_available():
            logger.warning("%s: compiled trees requested but lleaves is not installed; using LightGBM", name)
            return None
        if self.folder is None:
            raise ValueError("compiled trees need the bundle folder (load the predictor with load_predictor)")
        model_file = Path(self.folder) / self.manifest["model_file"]
        target = compiled_path(model_file, Path(cache_dir or default_cache_dir()))
        if target.suffix == ".so":  # a linker made it a plain shared library

            def load() -> Any:
                return load_verified_library(target, self.booster_scorer, self.model)
        else:
            logger.warning("%s: no linker (ld or cc) on PATH: compiled trees run in-process through llvmlite "
                           "(MCJIT), which keeps LLVM resident in this process (tens of MB); install binutils to "
                           "load them as a plain shared library", name)

            def load() -> Any:
                scorer = CompiledScorer(model_file, target)
                if not verified(scorer, self.booster_scorer, self.model):
                    raise ValueError(f"{target} differs from LightGBM on the probe rows")
                return scorer

        def install() -> None:
            try:
                if not target.exists():
                    compile_in_subprocess(model_file, target)
                self.scorer = load()
                logger.info("%s: scoring with compiled trees (%s)", name, target)
            except Exception as e:  # noqa: BLE001 (LightGBM keeps scoring)
                logger.warning("%s: compiled trees unavailable (%s); using LightGBM", name, e)

        if target.exists() or not background:
            install()
            return None
        thread = threading.Thread(target=install, name=f"compile-{name}", daemon=True)
        thread.start()
        return thread


class ClaimsTriagePredictor(Predictor):
    """Claims triage. Scores with the native pipeline (predictors/claims_native.py: no scikit-learn in
    this process) when given one, else with the scikit-learn pipeline; ``model`` (the pipeline) is
    loaded from the bundle on first use when it was not given."""

    task = CLAIMS_TRIAGE

    def __init__(self, manifest, model, config, threshold: float | None = None, native: Any = None):
        self._model_lock = threading.Lock()
        super().__init__(manifest, model, config)
        self.native = native
        self.rules = dict(self.vertical.triage)
        if threshold is not None:
            self.rules["approve_threshold"] = float(threshold)
        self.anomaly = business.AnomalyScorer(manifest["reference"], self.features)

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    if self.folder is None:
                        raise ValueError("the claims pipeline was not loaded and the bundle folder is unknown "
                                         "(load the predictor with load_predictor)")
                    self._model = load_model(self.folder, self.manifest)
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    def scores(self, batch: Batch) -> np.ndarray:
        if self.native is not None:
            return self.native.predict_proba(batch)
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


def load_predictor(folder: str | Path, config: Config | None = None, threshold: float | None = None,
                   native: bool = True, cache_dir: str | Path | None = None) -> Predictor:
    """Open a bundle (verifying its hashes) and build the predictor for its task. A claims bundle is
    served by its native pipeline when `native` and it can be exported and verified (cached in
    `cache_dir`, default predictors.scoring.default_cache_dir()); its skops file is then not loaded."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    cls = PREDICTORS[manifest["task"]]
    if cls is ClaimsTriagePredictor and manifest["framework"] == "sklearn":
        from .claims_native import load_native

        found = load_native(folder, manifest, features_from_spec(manifest["feature_spec"]), cache_dir) \
            if native else None
        model = None if found is not None else load_model(folder, manifest)
        predictor: Predictor = cls(manifest, model, config or load_config(), threshold=threshold, native=found)
    else:
        predictor = cls(manifest, load_model(folder, manifest), config or load_config(), threshold=threshold)
    predictor.folder = Path(folder)
    return predictor
