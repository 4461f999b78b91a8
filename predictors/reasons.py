"""Reason codes: per row, the features that pushed the model's raw score (log-odds) up or down.

Contributions are exact path-dependent Tree SHAP values (Lundberg et al. 2020, the algorithm of
LightGBM's ``pred_contrib``): for every row, ``base + sum(contributions) == raw score`` (the
model's log-odds before the sigmoid) up to float rounding. They are computed per encoded column
and summed back to the raw feature (a categorical's codes or one-hot columns, a text feature's
hash buckets, a numeric feature's missing indicator), so a reason always names a feature of the
request. They say how much each value moved this model's score from its average; they are not
causes (docs/reasons.md).

* Lead scoring (LightGBM): the booster's own ``pred_contrib``.
* Claims served natively (predictors/claims_native.py): its numpy transform and the trees it
  translated, so reasons need no scikit-learn either.
* Claims (scikit-learn HistGradientBoosting behind a ColumnTransformer): the fitted trees
  (``_predictors`` nodes: thresholds, missing direction, training counts, values) are written
  as a LightGBM text model and explained by the same ``pred_contrib``: the same exact Tree SHAP
  with no extra dependency. At construction the translation is checked against the pipeline's
  own ``decision_function`` on probe rows (VERIFY_TOLERANCE); a model it cannot translate
  (native categorical splits, multiclass) has no reasons (ReasonsUnavailable, with why).
  ``shap``'s TreeExplainer also reads HistGradientBoosting, but pulls in numba and llvmlite
  (a second LLVM next to lleaves' pinned one, ~60 MB) and cloudpickle: docs/reasons.md.

The output per row is one JSON object (verticals.yaml ``reasons``: ``top_k``, ``format``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .spec import ConfigError, Feature

logger = logging.getLogger("predictors.reasons")

OUTPUT = "reasons"  # the optional output's name
PARAMETER = "reasons"  # request parameter: true (the configured top_k), false, or a number (top_k)
FORMATS = ("split", "ranked")
#: Largest |base + sum(contributions) - raw score| accepted when a claims model is translated.
VERIFY_TOLERANCE = 1e-9


class ReasonsUnavailable(RuntimeError):
    """This model's reasons cannot be computed (the message says why)."""


@dataclass(frozen=True)
class ReasonsOptions:
    """verticals.yaml ``reasons`` (top level, overridden per vertical)."""

    top_k: int = 3
    max_k: int = 20
    format: str = "split"
    max_rows: int = 1000  # rows of one request that may ask for reasons (each costs ~0.5 ms of CPU)

    @classmethod
    def parse(cls, vertical: str, raw: Mapping[str, Any] | None) -> "ReasonsOptions":
        raw = dict(raw or {})
        unknown = set(raw) - {"top_k", "max_k", "format", "max_rows"}
        if unknown:
            raise ConfigError(f"vertical {vertical!r}: reasons has unknown keys {sorted(unknown)}; "
                              "allowed: top_k, max_k, format, max_rows")
        opts = cls(top_k=int(raw.get("top_k", cls.top_k)), max_k=int(raw.get("max_k", cls.max_k)),
                   format=str(raw.get("format", cls.format)), max_rows=int(raw.get("max_rows", cls.max_rows)))
        if opts.max_rows < 1:
            raise ConfigError(f"vertical {vertical!r}: reasons.max_rows {opts.max_rows} is not at least 1")
        if not 1 <= opts.top_k <= opts.max_k:
            raise ConfigError(f"vertical {vertical!r}: reasons.top_k {opts.top_k} is not within 1..max_k "
                              f"({opts.max_k})")
        if opts.format not in FORMATS:
            raise ConfigError(f"vertical {vertical!r}: reasons.format {opts.format!r}; allowed: {', '.join(FORMATS)}")
        return opts


def requested_k(parameters: Mapping[str, Any] | None, wanted: Sequence[str] | None,
                options: ReasonsOptions) -> int | None:
    """top_k when the request asks for reasons (`outputs` names `reasons`, or the request parameter
    `reasons` is true or a number of features), else None. A bad parameter raises ValueError naming
    what is allowed."""
    value = (parameters or {}).get(PARAMETER) if parameters else None
    asked = bool(wanted) and OUTPUT in wanted
    if value is None:
        return options.top_k if asked else None
    if isinstance(value, str):  # gRPC clients often send parameters as strings
        low = value.strip().lower()
        value = True if low == "true" else False if low == "false" else (int(low) if low.isdigit() else value)
    if value is True:
        return options.top_k
    if value is False:
        return options.top_k if asked else None
    if isinstance(value, int) and 1 <= value <= options.max_k:
        return value
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise ValueError(f"parameter '{PARAMETER}' is {shown}; allowed: true, false or a number of features "
                     f"1..{options.max_k}")


# ---- contributions ------------------------------------------------------------------------------

def column_groups(columns: Sequence[str], features: Sequence[Feature]) -> np.ndarray:
    """Index of the raw feature of each encoded LightGBM column (``name`` or ``name__h<i>``)."""
    index = {f.name: i for i, f in enumerate(features)}
    out = []
    for c in columns:
        name = c if c in index else c.rsplit("__h", 1)[0]
        if name not in index:
            raise ReasonsUnavailable(f"encoded column {c!r} belongs to no feature of the bundle")
        out.append(index[name])
    return np.asarray(out, dtype=np.int64)


def pipeline_groups(preprocess: Any, features: Sequence[Feature]) -> np.ndarray:
    """Index of the raw feature of each column a fitted ColumnTransformer outputs (numeric imputer
    with missing indicators, one-hot encoder, one HashingVectorizer per text feature)."""
    index = {f.name: i for i, f in enumerate(features)}
    width = sum(s.stop - s.start for s in preprocess.output_indices_.values())
    groups = np.full(width, -1, dtype=np.int64)
    for name, transformer, cols in preprocess.transformers_:
        part = preprocess.output_indices_.get(name)
        if part is None or part.stop == part.start or transformer == "drop":
            continue
        cols = [cols] if isinstance(cols, str) else list(cols)
        owners: list[str] = []
        if len(cols) == 1:
            owners = cols * (part.stop - part.start)
        elif hasattr(transformer, "categories_"):  # one-hot: one column per category of each feature
            for col, cats in zip(cols, transformer.categories_):
                owners += [col] * len(cats)
        elif hasattr(transformer, "statistics_"):  # imputer: the columns, then one indicator per feature
            owners = list(cols)
            indicator = getattr(transformer, "indicator_", None)
            if indicator is not None:
                owners += [cols[j] for j in indicator.features_]
        if len(owners) != part.stop - part.start or any(o not in index for o in owners):
            raise ReasonsUnavailable(f"cannot map the {part.stop - part.start} output columns of transformer "
                                     f"{name!r} back to raw features")
        groups[part] = [index[o] for o in owners]
    if (groups < 0).any():
        raise ReasonsUnavailable("some pipeline output columns belong to no raw feature")
    return groups


def hgb_to_lightgbm(model: Any, n_features: int) -> str:
    """A fitted binary HistGradientBoostingClassifier as a LightGBM text model (same trees, same
    numbers): go left when x <= threshold, NaN goes where the split sends missing values, node
    covers are the training counts. The baseline (init score) is not part of it."""
    trees = []
    for k, per_class in enumerate(model._predictors):
        if len(per_class) != 1:
            raise ReasonsUnavailable("only binary classifiers (one tree per iteration) are supported")
        nodes = per_class[0].nodes
        if "is_categorical" in nodes.dtype.names and nodes["is_categorical"].any():
            raise ReasonsUnavailable("native categorical splits are not supported")
        leaves = [i for i in range(len(nodes)) if nodes["is_leaf"][i]]
        inner = [i for i in range(len(nodes)) if not nodes["is_leaf"][i]]
        leaf_of = {n: j for j, n in enumerate(leaves)}
        inner_of = {n: j for j, n in enumerate(inner)}

        def ref(n: int) -> int:
            return inner_of[n] if n in inner_of else ~leaf_of[n]

        def nums(values) -> str:
            return " ".join(repr(float(v)) for v in values)

        def ints(values) -> str:
            return " ".join(str(int(v)) for v in values)

        lines = [f"Tree={k}", f"num_leaves={len(leaves)}", "num_cat=0"]
        if inner:
            lines += [
                "split_feature=" + ints(nodes["feature_idx"][inner]),
                "split_gain=" + nums(nodes["gain"][inner]),
                "threshold=" + nums(nodes["num_threshold"][inner]),
                # 8: missing values are NaN; +2: NaN goes left
                "decision_type=" + ints(8 + 2 * nodes["missing_go_to_left"][inner].astype(int)),
                "left_child=" + ints(ref(int(n)) for n in nodes["left"][inner]),
                "right_child=" + ints(ref(int(n)) for n in nodes["right"][inner]),
            ]
        lines += ["leaf_value=" + nums(nodes["value"][leaves]),
                  "leaf_weight=" + nums(nodes["count"][leaves]),
                  "leaf_count=" + ints(nodes["count"][leaves])]
        if inner:
            lines += ["internal_value=" + nums(nodes["value"][inner]),
                      "internal_weight=" + nums(nodes["count"][inner]),
                      "internal_count=" + ints(nodes["count"][inner])]
        lines += ["is_linear=0", "shrinkage=1", "", ""]
        trees.append("\n".join(lines))
    header = ["tree", "version=v4", "num_class=1", "num_tree_per_iteration=1", "label_index=0",
              f"max_feature_idx={n_features - 1}", "objective=binary sigmoid:1",
              "feature_names=" + " ".join(f"f{i}" for i in range(n_features)),
              "feature_infos=" + " ".join(["none"] * n_features), "", ""]
    return "\n".join(header) + "".join(trees) + "end of trees\n"


class Explainer:
    """Per-row contributions of the raw features to the raw score, and the reasons JSON."""

    def __init__(self, predictor: Any, options: ReasonsOptions):
        self.predictor = predictor
        self.options = options
        self.features = tuple(predictor.features)
        self.names = [f.name for f in self.features]
        if predictor.task == "lead_scoring":
            self.booster = predictor.model
            self.groups = column_groups(predictor.encoder.columns, self.features)
            self.baseline = 0.0
            self._matrix = predictor.encoder.encode
        elif getattr(predictor, "native", None) is not None:
            self._init_native(predictor.native)
        else:
            self._init_claims(predictor.model)
        self.onehot = np.zeros((len(self.groups), len(self.features)))
        self.onehot[np.arange(len(self.groups)), self.groups] = 1.0

    def _init_native(self, native: Any) -> None:
        """Claims served natively (predictors/claims_native.py): its transform and its translated trees,
        verified against the pipeline when it was installed; no scikit-learn."""
        self.groups = native.groups
        self.booster = native.booster
        self.baseline = native.baseline
        self._matrix = native.transform
        self._raw_score = native.raw_score

    def _init_claims(self, pipeline: Any) -> None:
        from .encoding import claims_frame
        from .lgbm import load_booster

        try:
            preprocess, model = pipeline[:-1], pipeline[-1]
            column_transformer = preprocess[-1]
            self.groups = pipeline_groups(column_transformer, self.features)
            self.booster = load_booster(hgb_to_lightgbm(model, len(self.groups)))
            baseline = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
        except ReasonsUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 (any other shape of model: no reasons, with why)
            raise ReasonsUnavailable(f"cannot read the claims pipeline's trees: {e}") from e
        if baseline.size != 1:
            raise ReasonsUnavailable("only binary classifiers are supported")
        self.baseline = float(baseline[0])
        from .scoring import probe_matrix

        probe = probe_matrix(self.booster, rows=512)  # every split threshold, its neighbours, NaN
        diff = float(np.max(np.abs(self.booster.predict(probe, raw_score=True, num_threads=1) + self.baseline
                                   - np.asarray(model.decision_function(probe), dtype=np.float64).ravel())))
        if not diff <= VERIFY_TOLERANCE:
            raise ReasonsUnavailable(f"the translated trees differ from the model by {diff:.3g} on probe rows")
        features = self.features
        self._matrix = lambda batch: np.asarray(preprocess.transform(claims_frame(batch, features)), dtype=np.float64)
        self._raw_score = lambda batch: np.asarray(pipeline.decision_function(claims_frame(batch, features)),
                                                   dtype=np.float64).ravel()

    def contributions(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n, features) contributions of the raw features and (n,) base values."""
        x = self._matrix(batch)
        contrib = np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1), dtype=np.float64)
        base = contrib[:, -1] + self.baseline
        return contrib[:, :-1] @ self.onehot, base

    def raw_score(self, batch: Any) -> np.ndarray:
        """The model's own raw score (log-odds) of each row, computed without the explainer."""
        if self.predictor.task == "lead_scoring":
            return np.asarray(self.booster.predict(self._matrix(batch), raw_score=True, num_threads=1),
                              dtype=np.float64)
        return self._raw_score(batch)

    def verify(self, batch: Any) -> float:
        """Largest |base + sum(contributions) - raw score| over the batch's rows."""
        contrib, base = self.contributions(batch)
        return float(np.max(np.abs(base + contrib.sum(axis=1) - self.raw_score(batch))))

    def explain(self, batch: Any, raw: Mapping[str, Sequence[Any]], k: int | None = None,
                extra: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
        """One JSON text per row (see docs/reasons.md for the fields). ``raw``: the columns as the
        request sent them (values are reported as sent); ``extra``: more fields per row (the claims
        anomaly reason)."""
        k = self.options.top_k if k is None else k
        contrib, base = self.contributions(batch)
        names = self.names
        columns = [raw.get(name) for name in names]
        split = self.options.format == "split"
        out = []
        for i in range(batch.n):
            row = contrib[i]
            b = float(base[i])
            score = b + math.fsum(row.tolist())

            def item(j: int) -> dict[str, Any]:
                col = columns[j]
                return {"feature": names[j], "value": None if col is None else _plain(col[i]),
                        "contribution": float(row[j])}

            order = np.argsort(-np.abs(row), kind="stable")
            if split:
                up = [int(j) for j in order if row[j] > 0][:k]
                down = [int(j) for j in order if row[j] < 0][:k]
                shown = up + down
                doc: dict[str, Any] = {"raw_score": score, "base": b, "up": [item(j) for j in up],
                                       "down": [item(j) for j in down]}
            else:
                shown = [int(j) for j in order[:k] if row[j] != 0]
                doc = {"raw_score": score, "base": b, "top": [item(j) for j in shown]}
            rest = np.ones(len(names), dtype=bool)
            rest[shown] = False
            doc["other"] = math.fsum(row[rest].tolist())
            if extra is not None:
                doc.update(extra[i])
            out.append(json.dumps(doc, separators=(",", ":"), allow_nan=False))
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def anomaly_reasons(anomaly: Any, batch: Any, raw: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Claims: per row, the feature that makes the anomaly score (business.AnomalyScorer): the
    numeric value furthest in the tails of the training distribution (its percentile), or a
    category the model never saw (anomaly 1)."""
    n = batch.n
    best = np.full(n, -1.0)
    which: list[str | None] = [None] * n
    pct = np.full(n, np.nan)
    for name, q, probs in anomaly.numeric:
        col = batch.columns[name]
        cdf = np.interp(col, q, probs, left=0.0, right=1.0)
        e = np.where(np.isnan(col), -1.0, 2.0 * np.abs(cdf - 0.5))
        better = e > best
        best = np.where(better, e, best)
        pct = np.where(better, cdf, pct)
        for i in np.flatnonzero(better):
            which[i] = name
    unseen_at: dict[int, str] = {}
    for name, known in anomaly.categorical:
        if batch.unseen.get(name):
            for i, v in enumerate(batch.columns[name]):
                if v is not None and v not in known and i not in unseen_at:
                    unseen_at[i] = name
    out = []
    for i in range(n):
        if i in unseen_at:
            name = unseen_at[i]
            reason = {"feature": name, "value": _plain(raw[name][i]) if name in raw else None, "unseen_category": True}
        elif which[i] is not None:
            name = which[i]
            reason = {"feature": name, "value": _plain(raw[name][i]) if name in raw else None,
                      "percentile": float(pct[i])}
        else:
            reason = None
        out.append({"anomaly": reason})
    return out


class Reasons:
    """The optional `reasons` output of one predictor: whether a request asks for it, the output
    names to answer, and its values. A model whose contributions cannot be computed still serves;
    a request asking it for reasons gets a 400 saying why."""

    def __init__(self, predictor: Any, options: ReasonsOptions):
        self.predictor, self.options = predictor, options
        self.unavailable: str | None = None
        try:
            self.explainer: Explainer | None = Explainer(predictor, options)
        except Exception as e:  # noqa: BLE001 (reasons never keep a model from serving)
            self.explainer, self.unavailable = None, str(e) or type(e).__name__
            logger.warning("%s: no reasons: %s", predictor.manifest.get("name", "model"), self.unavailable)

    def requested(self, parameters: Mapping[str, Any] | None, wanted: Sequence[str] | None,
                  n: int = 1) -> int | None:
        """top_k when the request (of n rows) asks for reasons, else None. InputError for a bad
        parameter, more rows than `max_rows`, or a model that has no reasons."""
        from .encoding import InputError

        try:
            k = requested_k(parameters, wanted, self.options)
        except ValueError as e:
            raise InputError(None, str(e)) from e
        if k is None:
            return None
        if self.explainer is None:
            raise InputError(None, f"this model cannot compute reasons: {self.unavailable}")
        if n > self.options.max_rows:
            raise InputError(None, f"reasons were asked for {n} rows; at most {self.options.max_rows} rows per "
                                   "request may ask for reasons (verticals.yaml reasons.max_rows)")
        return k

    @staticmethod
    def output_names(datatypes: Mapping[str, str], wanted: Sequence[str] | None, k: int | None,
                     select: Any) -> list[str]:
        """`select(datatypes, wanted)` (the runtime's output selection) for the model's own outputs,
        then `reasons` last when computed."""
        if not wanted or OUTPUT not in wanted:
            names = select(datatypes, wanted)
        else:
            rest = [w for w in wanted if w != OUTPUT]
            names = select(datatypes, rest) if rest else []
        return names + [OUTPUT] if k is not None else names

    def compute(self, prediction: Any, raw: Mapping[str, Sequence[Any]], k: int) -> list[str]:
        batch = prediction.batch
        extra = None
        anomaly = getattr(self.predictor, "anomaly", None)
        if anomaly is not None:
            extra = anomaly_reasons(anomaly, batch, raw)
            scores = prediction.outputs.get("anomaly_score")
            if scores is not None:
                for e, s in zip(extra, np.asarray(scores).tolist()):
                    if e["anomaly"] is not None:
                        e["anomaly"]["score"] = s
        return self.explainer.explain(batch, raw, k, extra)  # type: ignore[union-attr]
