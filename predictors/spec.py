"""Typed view of ``verticals.yaml``: the one config file of features and business rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_PATH = Path(__file__).with_name("verticals.yaml")

NUMERIC, CATEGORICAL, TEXT = "numeric", "categorical", "text"
FEATURE_KINDS = (NUMERIC, CATEGORICAL, TEXT)
LEAD_SCORING, CLAIMS_TRIAGE = "lead_scoring", "claims_triage"


class ConfigError(ValueError):
    """The verticals config (or a bundle's copy of a feature spec) is malformed."""


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    required: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The part of a feature that is API contract (what a bundle records and compares)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == CATEGORICAL:
            out["categories"] = list(self.categories)
        if self.kind == NUMERIC:
            out["min"], out["max"] = self.min, self.max
        if self.required:
            out["required"] = True
        return out


@dataclass(frozen=True)
class Vertical:
    name: str
    task: str
    framework: str
    target: str
    description: str
    features: tuple[Feature, ...]
    decision_threshold: float = 0.65
    pricing: Mapping[str, Any] = field(default_factory=dict)
    triage: Mapping[str, Any] = field(default_factory=dict)
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    raw_features: tuple[Mapping[str, Any], ...] = ()
    #: verticals.yaml `reasons` / `decision_log`, top level overridden per vertical (predictors/reasons.py,
    #: predictors/decisions.py read them)
    reasons: Mapping[str, Any] = field(default_factory=dict)
    decision_log: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def feature_spec(self) -> list[dict[str, Any]]:
        """The feature contract as plain data, stored in every bundle manifest."""
        return [f.to_dict() for f in self.features]


@dataclass(frozen=True)
class Config:
    verticals: Mapping[str, Vertical]
    text_hash_buckets: int
    market: Mapping[str, Any]

    def vertical(self, name: str) -> Vertical:
        try:
            return self.verticals[name]
        except KeyError:
            raise ConfigError(
                f"unknown vertical {name!r}; known verticals: {', '.join(self.verticals)}"
            ) from None


def _feature(vertical: str, raw: Mapping[str, Any]) -> Feature:
    name, kind = raw.get("name"), raw.get("kind")
    if not name or kind not in FEATURE_KINDS:
        raise ConfigError(
            f"vertical {vertical!r}: feature {name!r} has kind {kind!r}; allowed kinds: {', '.join(FEATURE_KINDS)}"
        )
    cats = tuple(str(c).lower() for c in raw.get("categories", ()))
    if kind == CATEGORICAL and not cats:
        raise ConfigError(f"vertical {vertical!r}: categorical feature {name!r} lists no categories")
    lo, hi = raw.get("min"), raw.get("max")
    if lo is not None and hi is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"vertical {vertical!r}: feature {name!r} has min {lo} not below max {hi}")
    return Feature(name=name, kind=kind, categories=cats,
                   min=None if lo is None else float(lo), max=None if hi is None else float(hi),
                   required=bool(raw.get("required", False)))


def parse_config(data: Mapping[str, Any]) -> Config:
    verticals = {}
    for vname, raw in (data.get("verticals") or {}).items():
        features = tuple(_feature(vname, f) for f in raw.get("features", ()))
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ConfigError(f"vertical {vname!r}: duplicate feature names in {names}")
        if raw.get("task") not in (LEAD_SCORING, CLAIMS_TRIAGE):
            raise ConfigError(f"vertical {vname!r}: task {raw.get('task')!r} is not {LEAD_SCORING} or {CLAIMS_TRIAGE}")
        verticals[vname] = Vertical(
            name=vname,
            task=raw["task"],
            framework=raw["framework"],
            target=raw["target"],
            description=raw.get("description", ""),
            features=features,
            decision_threshold=float(raw.get("decision_threshold", 0.65)),
            pricing=raw.get("pricing") or {},
            triage=raw.get("triage") or {},
            synthetic=raw.get("synthetic") or {},
            raw_features=tuple(raw.get("features", ())),
            reasons={**(data.get("reasons") or {}), **(raw.get("reasons") or {})},
            decision_log={**(data.get("decision_log") or {}), **(raw.get("decision_log") or {})},
        )
    if not verticals:
        raise ConfigError("the config defines no verticals")
    from .decisions import DecisionLogOptions  # noqa: PLC0415 (they import this module)
    from .reasons import ReasonsOptions  # noqa: PLC0415

    for v in verticals.values():  # malformed reasons / decision_log / personal settings fail here
        ReasonsOptions.parse(v.name, v.reasons)
        DecisionLogOptions.parse(v, v.decision_log)
    return Config(
        verticals=verticals,
        text_hash_buckets=int(data.get("encoding", {}).get("text_hash_buckets", 16)),
        market=data.get("market") or {},
    )


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the verticals config (the packaged one by default)."""
    return _load_cached(str(Path(path or CONFIG_PATH).resolve()))


@lru_cache(maxsize=8)
def _load_cached(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_config(yaml.safe_load(fh))
    except OSError as e:
        raise ConfigError(f"cannot read verticals config {path}: {e}") from e
