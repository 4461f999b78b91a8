"""Training, evaluation and reference statistics for one vertical."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from predictors.encoding import Batch, LeadEncoder, claims_frame, tokens
from predictors.spec import CATEGORICAL, LEAD_SCORING, NUMERIC, TEXT, Config, Vertical
from .data import to_batch

TEST_SIZE = 0.2
CV_FOLDS = 5
METRIC_THRESHOLD = 0.5

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "num_boost_round": 250,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}

HGB_PARAMS: dict[str, Any] = {
    "max_iter": 250,
    "learning_rate": 0.06,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
TEXT_HASH_FEATURES = 64  # claims pipeline: HashingVectorizer width per text feature


@dataclass
class TrainResult:
    model: Any
    encoding: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    reference: dict[str, Any]
    n_train: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = METRIC_THRESHOLD) -> dict[str, float]:
    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 6),
        "accuracy": round(float(accuracy_score(y, pred)), 6),
        "precision": round(float(precision_score(y, pred, zero_division=0)), 6),
        "recall": round(float(recall_score(y, pred, zero_division=0)), 6),
        "f1": round(float(f1_score(y, pred, zero_division=0)), 6),
    }


def reference_stats(batch: Batch, vertical: Vertical) -> dict[str, Any]:
    """Per-feature training distribution: drift checks and the claims anomaly score read it."""
    ref: dict[str, Any] = {}
    for f in vertical.features:
        col = batch.columns[f.name]
        if f.kind == NUMERIC:
            present = col[~np.isnan(col)]
            q = np.quantile(present, np.linspace(0, 1, 101)) if len(present) else np.array([])
            edges = np.unique(np.quantile(present, np.linspace(0.1, 0.9, 9))) if len(present) else np.array([])
            counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
            ref[f.name] = {
                "kind": NUMERIC,
                "missing_share": round(float(np.isnan(col).mean()), 6),
                "mean": round(float(present.mean()), 6),
                "std": round(float(present.std()), 6),
                "quantiles": [round(float(v), 6) for v in q],
                "bin_edges": [round(float(v), 6) for v in edges],
                "bin_shares": [round(float(c) / max(len(present), 1), 6) for c in counts],
            }
        elif f.kind == CATEGORICAL:
            values = pd.Series(col)
            shares = values.value_counts(normalize=False)
            n_present = int(values.notna().sum())
            ref[f.name] = {
                "kind": CATEGORICAL,
                "missing_share": round(1 - n_present / len(col), 6),
                "shares": {c: round(float(shares.get(c, 0)) / max(n_present, 1), 6) for c in f.categories},
            }
        else:
            lengths = np.array([len(tokens(v)) for v in col if v is not None])
            ref[f.name] = {
                "kind": TEXT,
                "missing_share": round(1 - len(lengths) / len(col), 6),
                "token_count_quantiles": [round(float(v), 3) for v in np.quantile(lengths, [0, .25, .5, .75, 1])]
                if len(lengths) else [],
            }
    return ref


def _lead_model(x: np.ndarray, y: np.ndarray, encoder: LeadEncoder, seed: int,
                overrides: dict[str, Any] | None = None):
    import lightgbm

    params = dict(LIGHTGBM_PARAMS, **(overrides or {}), seed=seed)
    rounds = params.pop("num_boost_round")
    data = lightgbm.Dataset(x, y, feature_name=encoder.columns,
                            categorical_feature=encoder.categorical_columns, free_raw_data=False)
    return lightgbm.train(params, data, num_boost_round=rounds)


def _lead_baseline(seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000))


def claims_preprocessing(vertical: Vertical):
    """ColumnTransformer of the claims pipeline (shared by the model and the KNN baseline)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    numeric = [f.name for f in vertical.features if f.kind == NUMERIC]
    cats = [f for f in vertical.features if f.kind == CATEGORICAL]
    steps = [
        ("numeric", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), numeric),
        ("categorical", OneHotEncoder(categories=[list(f.categories) for f in cats], handle_unknown="ignore"),
         [f.name for f in cats]),
    ]
    for f in vertical.features:
        if f.kind == TEXT:
            steps.append((f"text_{f.name}", HashingVectorizer(n_features=TEXT_HASH_FEATURES, alternate_sign=False,
                                                              token_pattern=r"[a-z0-9_]+", norm=None), f.name))
    return ColumnTransformer(steps, sparse_threshold=0.0)


def _claims_model(vertical: Vertical, seed: int, overrides: dict[str, Any] | None = None):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([("preprocess", claims_preprocessing(vertical)),
                     ("model", HistGradientBoostingClassifier(random_state=seed, **{**HGB_PARAMS, **(overrides or {})}))])


def _claims_baseline(vertical: Vertical):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("preprocess", claims_preprocessing(vertical)), ("scale", StandardScaler()),
                     ("knn", KNeighborsClassifier(n_neighbors=5))])


@dataclass
class Experiment:
    """One vertical's table split for training: the 80 % with its CV folds, the 20 % held out,
    and how to fit and score a model with given hyperparameters (shared by training and tuning)."""

    vertical: Vertical
    batch: Batch
    idx_train: np.ndarray
    idx_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    folds: list
    x_train: Any
    x_test: Any
    fit: Any  # (x, y, overrides) -> model
    proba: Any  # (model, x) -> scores
    baseline: Any
    baseline_name: str
    encoding: dict[str, Any]
    params_key: str
    default_params: dict[str, Any]

    def take(self, a, i):
        return a.iloc[i] if isinstance(a, pd.DataFrame) else a[i]

    def cv_auc(self, overrides: dict[str, Any] | None = None) -> list[float]:
        aucs = []
        for tr, va in self.folds:
            m = self.fit(self.take(self.x_train, tr), self.y_train[tr], overrides)
            aucs.append(float(roc_auc_score(self.y_train[va], self.proba(m, self.take(self.x_train, va)))))
        return aucs


def prepare(df: pd.DataFrame, vertical: Vertical, config: Config, seed: int = 42) -> Experiment:
    """80/20 stratified split and 5-fold stratified CV folds of the 80 %, seeded."""
    y_all = df[vertical.target].to_numpy()
    idx_train, idx_test = train_test_split(np.arange(len(df)), test_size=TEST_SIZE, random_state=seed,
                                           stratify=y_all)
    batch = to_batch(df, vertical)
    y_train, y_test = y_all[idx_train], y_all[idx_test]
    folds = list(StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed).split(idx_train, y_train))

    if vertical.task == LEAD_SCORING:
        encoder = LeadEncoder(vertical.features, config.text_hash_buckets)
        x = encoder.encode(batch)
        x_train, x_test = x[idx_train], x[idx_test]
        fit = lambda xs, ys, o=None: _lead_model(xs, ys, encoder, seed, o)  # noqa: E731
        proba = lambda m, xs: m.predict(xs, num_threads=1)  # noqa: E731
        baseline, baseline_name = _lead_baseline(seed), "logistic_regression"
        encoding = {"text_hash_buckets": config.text_hash_buckets, "columns": encoder.columns,
                    "categorical_columns": encoder.categorical_columns}
        key, defaults = "lightgbm", dict(LIGHTGBM_PARAMS, seed=seed)
    else:
        frame = claims_frame(batch, vertical.features)
        x_train, x_test = frame.iloc[idx_train], frame.iloc[idx_test]
        fit = lambda xs, ys, o=None: _claims_model(vertical, seed, o).fit(xs, ys)  # noqa: E731
        proba = lambda m, xs: m.predict_proba(xs)[:, 1]  # noqa: E731
        baseline, baseline_name = _claims_baseline(vertical), "knn_k5"
        encoding = {"pipeline": "ColumnTransformer(numeric median+indicator, one-hot, hashing) -> HGB",
                    "text_hash_features": TEXT_HASH_FEATURES}
        key, defaults = "hist_gradient_boosting", dict(HGB_PARAMS, random_state=seed)
    return Experiment(vertical=vertical, batch=batch, idx_train=idx_train, idx_test=idx_test, y_train=y_train,
                      y_test=y_test, folds=folds, x_train=x_train, x_test=x_test, fit=fit, proba=proba,
                      baseline=baseline, baseline_name=baseline_name, encoding=encoding, params_key=key,
                      default_params=defaults)


def train_vertical(df: pd.DataFrame, vertical: Vertical, config: Config, seed: int = 42,
                   params: dict[str, Any] | None = None, experiment: Experiment | None = None) -> TrainResult:
    """80/20 split, 5-fold CV on the 80 %, final fit on the 80 %, held-out metrics and baseline.

    `params` overrides hyperparameters of the model (e.g. the ones `--tune` chose)."""
    ex = experiment or prepare(df, vertical, config, seed)
    cv_auc = ex.cv_auc(params)
    model = ex.fit(ex.x_train, ex.y_train, params)
    holdout = classification_metrics(ex.y_test, ex.proba(model, ex.x_test))
    ex.baseline.fit(ex.x_train, ex.y_train)
    base = classification_metrics(ex.y_test, ex.baseline.predict_proba(ex.x_test)[:, 1])

    batch, idx_train = ex.batch, ex.idx_train
    train_batch = Batch(n=len(idx_train), columns={k: v[idx_train] for k, v in batch.columns.items()},
                        present=batch.present[idx_train])
    metrics = {
        "threshold": METRIC_THRESHOLD,
        "holdout": holdout,
        "cv": {"folds": CV_FOLDS, "roc_auc_mean": round(float(np.mean(cv_auc)), 6),
               "roc_auc_std": round(float(np.std(cv_auc)), 6)},
        "baseline": {"name": ex.baseline_name, **base},
        "positive_rate": round(float(df[vertical.target].to_numpy().mean()), 6),
    }
    chosen = dict(ex.default_params, **(params or {}))
    if ex.params_key == "lightgbm":
        chosen["seed"] = seed
    else:
        chosen["random_state"] = seed
    return TrainResult(model=model, encoding=ex.encoding, params={ex.params_key: chosen}, metrics=metrics,
                       reference=reference_stats(train_batch, vertical),
                       n_train=len(idx_train), n_test=len(ex.idx_test))
