"""The claims pipeline served without scikit-learn, SciPy or pandas in the server process.

The claims bundle's skops Pipeline (ColumnTransformer[SimpleImputer with missing indicators,
OneHotEncoder, a HashingVectorizer per text feature] -> binary HistGradientBoostingClassifier)
imports those libraries for arithmetic that numpy and LightGBM do as well (docs/performance.md).
Like the compiled trees of predictors/scoring.py, a child interpreter (``python -m
predictors.claims_native export BUNDLE_DIR CACHE_DIR``) loads the pipeline and writes one JSON file
into a cache folder outside the bundle, keyed by the model file's sha256 and scikit-learn's version:
the fitted preprocessing, the trees as a LightGBM text model (reasons.hgb_to_lightgbm) with the
baseline, and probe rows with the pipeline's probabilities for them. ``NativeClaims`` transforms a
Batch with numpy (sklearn's murmurhash3_32 reimplemented) and scores the trees with LightGBM; it
serves only once it reproduces the stored probabilities within 1e-9, else the pipeline serves
(load_native says why). The cache is as trusted as the compiled trees' cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .spec import CATEGORICAL, NUMERIC, TEXT, Feature

logger = logging.getLogger("predictors.claims_native")

#: Version of the cache file's layout (part of its key: a new layout never reads an old file).
FORMAT = 1
#: Largest |native - pipeline| probability accepted on the stored probe rows.
TOLERANCE = 1e-9
PROBE_ROWS = 2048
#: Most distinct texts / tokens whose hash buckets a transform remembers.
_CACHE_MAX = 100_000


class NativeUnavailable(RuntimeError):
    """The pipeline cannot be served natively (the message says why); the pipeline itself serves."""


# ---- murmurhash3 (what sklearn's HashingVectorizer hashes tokens with) ---------------------------

_M32 = 0xFFFFFFFF


def murmurhash3_32(key: str | bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of ``key`` (str: its UTF-8 bytes) as a signed 32-bit int: the value of
    ``sklearn.utils.murmurhash3_32(key, seed)`` and of HashingVectorizer's token hash."""
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _M32
    n = len(data)
    end = n - (n & 3)
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * c1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * c2) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    tail = n & 3
    if tail:
        k = 0
        if tail == 3:
            k ^= data[end + 2] << 16
        if tail >= 2:
            k ^= data[end + 1] << 8
        k ^= data[end]
        k = (k * c1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * c2) & _M32
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


def hash_index(h: int, n_features: int) -> int:
    """Column of a signed hash, as sklearn's FeatureHasher computes it (abs(-2**31) defined)."""
    if h == -2147483648:
        return (2147483647 - (n_features - 1)) % n_features
    return abs(h) % n_features


# ---- the server side ----------------------------------------------------------------------------

class TextHasher:
    """One HashingVectorizer (analyzer 'word', 1-grams): text -> {column: summed value}, cached."""

    def __init__(self, spec: Mapping[str, Any]):
        self.n_features = int(spec["n_features"])
        self.lowercase = bool(spec["lowercase"])
        self.alternate_sign = bool(spec["alternate_sign"])
        self.seed = int(spec["seed"])
        self.pattern = re.compile(spec["token_pattern"])
        self._tokens: dict[str, tuple[int, float]] = {}
        self._texts: dict[str, tuple[tuple[int, float], ...]] = {}

    def token(self, tok: str) -> tuple[int, float]:
        hit = self._tokens.get(tok)
        if hit is None:
            h = murmurhash3_32(tok, self.seed)
            hit = (hash_index(h, self.n_features), (1.0 if h >= 0 else -1.0) if self.alternate_sign else 1.0)
            if len(self._tokens) < _CACHE_MAX:
                self._tokens[tok] = hit
        return hit

    def __call__(self, text: str | None) -> tuple[tuple[int, float], ...]:
        if not text:
            return ()
        hit = self._texts.get(text)
        if hit is None:
            counts: dict[int, float] = {}
            for tok in self.pattern.findall(text.lower() if self.lowercase else text):
                j, v = self.token(tok)
                counts[j] = counts.get(j, 0.0) + v
            hit = tuple(counts.items())
            if len(self._texts) < _CACHE_MAX:
                self._texts[text] = hit
        return hit

    def block(self, column: np.ndarray, out: np.ndarray) -> None:
        """Write the hashed counts of a column of texts (None: missing) into out (n, n_features)."""
        out.fill(0.0)
        values = column.tolist()
        if len(values) <= 8:
            for i, text in enumerate(values):
                for j, v in self(text):
                    out[i, j] = v
            return
        distinct = list(set(values))
        block = np.zeros((len(distinct), self.n_features))
        for k, text in enumerate(distinct):
            for j, v in self(text):
                block[k, j] = v
        position = {t: k for k, t in enumerate(distinct)}
        out[:] = block[np.fromiter(map(position.__getitem__, values), dtype=np.intp, count=len(values))]


class NativeClaims:
    """The claims pipeline's predict_proba[:, 1] (and decision_function) from an exported cache file:
    numpy preprocessing + the translated trees in LightGBM."""

    def __init__(self, doc: Mapping[str, Any], features: Sequence[Feature]):
        from .lgbm import load_booster

        spec = doc["spec"]
        by_name = {f.name: f for f in features}
        self.width = int(spec["width"])
        groups = np.full(self.width, -1, dtype=np.int64)
        index = {f.name: i for i, f in enumerate(features)}
        try:
            num = spec["numeric"]
            self.numeric = [(name, int(num["start"]) + j, float(fill))
                            for j, (name, fill) in enumerate(zip(num["columns"], num["fill"]))]
            k = len(num["columns"])
            self.indicators = [(num["columns"][j], int(num["start"]) + k + i) for i, j in enumerate(num["indicator"])]
            self.onehot = []
            for part in spec["onehot"]:
                name, cats = part["column"], list(part["categories"])
                f = by_name.get(name)
                if f is None or f.kind != CATEGORICAL or tuple(cats) != tuple(f.categories):
                    raise NativeUnavailable(f"one-hot column {name!r}: categories {cats} are not the bundle "
                                            f"feature's {list(f.categories) if f else None}")
                self.onehot.append((f, int(part["start"])))
                groups[int(part["start"]):int(part["start"]) + len(cats)] = index[name]
            self.text = [(part["column"], int(part["start"]), TextHasher(part)) for part in spec["text"]]
            for name, col, _ in self.numeric:
                groups[col] = index[name]
            for name, col in self.indicators:
                groups[col] = index[name]
            for name, start, hasher in self.text:
                groups[start:start + hasher.n_features] = index[name]
            kinds = {name: NUMERIC for name, _, _ in self.numeric}
            kinds.update({name: TEXT for name, _, _ in self.text})
            kinds.update({f.name: CATEGORICAL for f, _ in self.onehot})
        except NativeUnavailable:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise NativeUnavailable(f"the cached spec is malformed: {type(e).__name__}: {e}") from e
        wrong = {n: k for n, k in kinds.items() if n not in by_name or by_name[n].kind != k}
        if wrong or set(kinds) != set(by_name):
            raise NativeUnavailable(f"the cached spec's columns {kinds} are not the bundle's features "
                                    f"{ {f.name: f.kind for f in features} }")
        if (groups < 0).any():
            raise NativeUnavailable(f"the cached spec leaves columns {np.flatnonzero(groups < 0).tolist()} unfilled")
        self.groups = groups
        self.baseline = float(doc["baseline"])
        self.booster = load_booster(doc["trees"])
        if self.booster.num_feature() != self.width:
            raise NativeUnavailable(f"the cached trees read {self.booster.num_feature()} columns; the spec "
                                    f"writes {self.width}")

    def transform(self, batch: Any) -> np.ndarray:
        """Batch -> the ColumnTransformer's output (float64, n x width)."""
        from .encoding import category_codes

        n = batch.n
        x = np.zeros((n, self.width), dtype=np.float64)
        cols = batch.columns
        for name, j, fill in self.numeric:
            col = cols[name]
            x[:, j] = col
            missing = np.isnan(col)
            if missing.any():
                x[missing, j] = fill
        for name, j in self.indicators:
            x[:, j] = np.isnan(cols[name])
        rows = np.arange(n)
        for f, start in self.onehot:
            codes = batch.codes.get(f.name)
            if codes is None:
                codes = category_codes(f, cols[f.name])
            known = ~np.isnan(codes)
            x[rows[known], start + codes[known].astype(np.intp)] = 1.0
        for name, start, hasher in self.text:
            hasher.block(cols[name], x[:, start:start + hasher.n_features])
        return x

    def raw_score(self, batch: Any) -> np.ndarray:
        """The pipeline's decision_function (log-odds)."""
        raw = self.booster.predict(self.transform(batch), raw_score=True, num_threads=1)
        return np.asarray(raw, dtype=np.float64).ravel() + self.baseline

    def predict_proba(self, batch: Any) -> np.ndarray:
        """The pipeline's predict_proba[:, 1]: the logistic function of raw_score (scipy's expit)."""
        return 1.0 / (1.0 + np.exp(-self.raw_score(batch)))


def sklearn_version() -> str | None:
    try:
        return importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_path(manifest: Mapping[str, Any], cache_dir: str | Path, version: str) -> Path:
    """Cache file of a bundle's exported pipeline: keyed by its model file's sha256 (from the verified
    manifest), scikit-learn's version and FORMAT."""
    sha = manifest["files"][manifest["model_file"]]
    key = hashlib.sha256(f"{sha};scikit-learn={version};format={FORMAT}".encode()).hexdigest()[:24]
    return Path(cache_dir) / f"claims-native-{key}.json"


def verify(native: NativeClaims, doc: Mapping[str, Any], features: Sequence[Feature]) -> float:
    """Largest |native - stored pipeline probability| on the stored probe rows, scored as one batch
    and one row at a time (first 32)."""
    from .encoding import Normalizer

    probe = doc["probe"]
    raw = probe["columns"]  # null: a missing value, as in a request
    expected = np.asarray(probe["expected"], dtype=np.float64)
    normalizer = Normalizer(features)
    n = len(expected)
    if n == 0 or not isinstance(raw, dict) or any(len(v) != n for v in raw.values()):
        raise NativeUnavailable(f"the cached probe rows are malformed ({n} expected outputs)")
    diff = float(np.max(np.abs(native.predict_proba(normalizer(raw, n)) - expected)))
    for i in range(min(32, n)):
        row = normalizer({k: v[i:i + 1] for k, v in raw.items()}, 1)
        diff = max(diff, float(abs(native.predict_proba(row)[0] - expected[i])))
    return diff


def read_native(path: Path, manifest: Mapping[str, Any], features: Sequence[Feature], version: str) -> NativeClaims:
    """A verified NativeClaims from a cache file; NativeUnavailable saying why not."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NativeUnavailable(f"{path}: cannot read the cached pipeline: {e}") from e
    sha = manifest["files"][manifest["model_file"]]
    got = (doc.get("format"), doc.get("model_sha256"), doc.get("scikit_learn"))
    if got != (FORMAT, sha, version):
        raise NativeUnavailable(f"{path}: cached for (format, model sha256, scikit-learn) {got}; this bundle "
                                f"needs {(FORMAT, sha, version)}")
    try:
        native = NativeClaims(doc, features)
        diff = verify(native, doc, features)
    except NativeUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 (a bad cache file: the pipeline serves)
        raise NativeUnavailable(f"{path}: the cached pipeline cannot score its probe rows: "
                                f"{type(e).__name__}: {e}") from e
    if not diff <= TOLERANCE:
        raise NativeUnavailable(f"{path}: differs from the pipeline's stored outputs by {diff:.3g} on the probe "
                                f"rows (allowed {TOLERANCE:g})")
    return native


def export_in_subprocess(folder: str | Path, cache_dir: str | Path, timeout: float = 600.0) -> None:
    from .scoring import run_child

    try:
        run_child("predictors.claims_native", ["export", folder, cache_dir], f"exporting {folder}", timeout)
    except RuntimeError as e:
        raise NativeUnavailable(str(e)) from e
    except subprocess.TimeoutExpired as e:
        raise NativeUnavailable(f"exporting {folder} did not finish within {timeout:g} s") from e


def load_native(folder: str | Path, manifest: Mapping[str, Any], features: Sequence[Feature],
                cache_dir: str | Path | None = None) -> NativeClaims | None:
    """The verified native claims pipeline of a (verified) bundle, exported first when the cache has
    none; None, with a warning saying why, when the pipeline must serve in-process instead."""
    from .scoring import default_cache_dir

    name = manifest.get("name", "claims")
    version = sklearn_version()
    if version is None:
        logger.warning("%s: scikit-learn is not installed, so the pipeline cannot be exported; loading it "
                       "in-process (which needs it too)", name)
        return None
    cache_dir = Path(cache_dir or default_cache_dir())
    path = cache_path(manifest, cache_dir, version)
    try:
        if not path.exists():
            started = time.perf_counter()
            export_in_subprocess(folder, cache_dir)
            logger.info("%s: pipeline exported in %.1f s (%s)", name, time.perf_counter() - started, path)
        native = read_native(path, manifest, features, version)
    except (NativeUnavailable, OSError) as e:
        logger.warning("%s: serving the scikit-learn pipeline in-process (about 90 MB more resident: "
                       "scikit-learn, SciPy, pandas) because the native path is unavailable: %s", name, e)
        return None
    logger.info("%s: scoring with the native pipeline (%s)", name, path)
    return native


# ---- the export child (imports scikit-learn) ----------------------------------------------------

def _kind(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def pipeline_spec(pipeline: Any, features: Sequence[Feature]) -> tuple[dict[str, Any], Any]:
    """(spec, HistGradientBoostingClassifier) of a fitted claims pipeline; NativeUnavailable naming
    what was found when it has another shape."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    steps = [type(s).__name__ for _, s in getattr(pipeline, "steps", [])]
    if (not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2
            or not isinstance(pipeline[0], ColumnTransformer)
            or not isinstance(pipeline[1], HistGradientBoostingClassifier)):
        raise NativeUnavailable(f"the claims model is {_kind(pipeline)} with steps {steps}; the native path "
                                "handles Pipeline[ColumnTransformer, HistGradientBoostingClassifier]")
    ct, model = pipeline[0], pipeline[1]
    if getattr(model, "n_trees_per_iteration_", None) != 1 or len(getattr(model, "classes_", ())) != 2:
        raise NativeUnavailable(f"the HistGradientBoostingClassifier has {len(model.classes_)} classes; "
                                "the native path handles binary classifiers")
    if ct.sparse_threshold != 0:
        raise NativeUnavailable(f"ColumnTransformer sparse_threshold={ct.sparse_threshold}; the native path "
                                "handles 0 (dense output)")
    by_name = {f.name: f for f in features}
    spec: dict[str, Any] = {"numeric": None, "onehot": [], "text": []}
    covered: list[str] = []
    for name, transformer, cols in ct.transformers_:
        part = ct.output_indices_[name]
        if isinstance(transformer, str):  # "drop", or "passthrough" of no column
            if transformer == "drop" or part.stop == part.start:
                continue
            raise NativeUnavailable(f"transformer {name!r} is {transformer!r} on {cols!r}; the native path "
                                    "handles dropped remainders only")
        cols_list = [cols] if isinstance(cols, str) else list(cols)
        if any(not isinstance(c, str) or c not in by_name for c in cols_list):
            raise NativeUnavailable(f"transformer {name!r} reads columns {cols_list}; the bundle's features are "
                                    f"{list(by_name)}")
        covered += cols_list
        if isinstance(transformer, SimpleImputer) and spec["numeric"] is None:
            spec["numeric"] = _imputer_spec(transformer, cols_list, part, by_name)
        elif isinstance(transformer, OneHotEncoder):
            spec["onehot"] += _onehot_spec(transformer, cols_list, part)
        elif isinstance(transformer, HashingVectorizer) and isinstance(cols, str):
            spec["text"].append(_hashing_spec(transformer, cols, part))
        else:
            raise NativeUnavailable(f"transformer {name!r} is {_kind(transformer)} on {cols!r}; the native path "
                                    "handles one SimpleImputer, OneHotEncoders and a HashingVectorizer per text "
                                    "column")
    if sorted(covered) != sorted(by_name):
        raise NativeUnavailable(f"the ColumnTransformer reads {sorted(covered)}; the bundle's features are "
                                f"{sorted(by_name)}")
    if spec["numeric"] is None:
        spec["numeric"] = {"columns": [], "start": 0, "fill": [], "indicator": []}
    spec["width"] = sum(s.stop - s.start for s in ct.output_indices_.values())
    return spec, model


def _imputer_spec(imputer: Any, cols: list[str], part: slice, by_name: Mapping[str, Feature]) -> dict[str, Any]:
    if not (isinstance(imputer.missing_values, float) and math.isnan(imputer.missing_values)):
        raise NativeUnavailable(f"SimpleImputer missing_values={imputer.missing_values!r}; the native path "
                                "handles NaN")
    if any(by_name[c].kind != NUMERIC for c in cols):
        raise NativeUnavailable(f"SimpleImputer on {cols}: the native path handles numeric features only")
    k = len(cols)
    indicator = getattr(imputer, "indicator_", None)
    features_ = [int(j) for j in indicator.features_] if indicator is not None else []
    # what the imputer writes for a missing value, and that it passes present values through
    import pandas as pd

    empty = imputer.transform(pd.DataFrame({c: [math.nan] for c in cols}, dtype=np.float64))
    present = imputer.transform(pd.DataFrame({c: [12345.5] for c in cols}, dtype=np.float64))
    if empty.shape != (1, k + len(features_)) or empty.shape[1] != part.stop - part.start:
        raise NativeUnavailable(f"SimpleImputer writes {empty.shape[1]} columns for {k} features and "
                                f"{len(features_)} indicators; the native path handles one column per feature "
                                "(keep_empty_features=True) then the indicators")
    if not (np.all(present[0, :k] == 12345.5) and np.all(present[0, k:] == 0) and np.all(empty[0, k:] == 1)):
        raise NativeUnavailable("SimpleImputer does not pass present values through unchanged")
    return {"columns": cols, "start": part.start, "fill": [float(v) for v in empty[0, :k]],
            "indicator": features_}


def _onehot_spec(encoder: Any, cols: list[str], part: slice) -> list[dict[str, Any]]:
    from .encoding import MISSING_CATEGORY

    if (encoder.handle_unknown != "ignore" or encoder.drop_idx_ is not None
            or getattr(encoder, "_infrequent_enabled", False)):
        raise NativeUnavailable(f"OneHotEncoder(handle_unknown={encoder.handle_unknown!r}, drop={encoder.drop!r}, "
                                f"infrequent categories: {getattr(encoder, '_infrequent_enabled', False)}); the "
                                "native path handles handle_unknown='ignore', no drop, no infrequent categories")
    out, start = [], part.start
    for col, cats in zip(cols, encoder.categories_):
        cats = list(cats)
        if any(not isinstance(c, str) for c in cats) or MISSING_CATEGORY in cats:
            raise NativeUnavailable(f"OneHotEncoder categories of {col!r} are {cats}; the native path handles "
                                    f"strings other than {MISSING_CATEGORY!r}")
        out.append({"column": col, "start": start, "categories": cats})
        start += len(cats)
    if start != part.stop:
        raise NativeUnavailable(f"OneHotEncoder writes {part.stop - part.start} columns for {start - part.start} "
                                "categories")
    return out


def _hashing_spec(vec: Any, col: str, part: slice) -> dict[str, Any]:
    handled = {"analyzer": "word", "ngram_range": (1, 1), "preprocessor": None, "tokenizer": None,
               "stop_words": None, "strip_accents": None, "binary": False, "norm": None, "input": "content",
               "dtype": np.float64}
    found = {k: getattr(vec, k) for k in handled}
    if found != handled or not isinstance(vec.token_pattern, str) or re.compile(vec.token_pattern).groups > 1:
        raise NativeUnavailable(f"HashingVectorizer on {col!r} has {found}, token_pattern={vec.token_pattern!r}; "
                                f"the native path handles {handled} and a token pattern of at most one group")
    if part.stop - part.start != vec.n_features:
        raise NativeUnavailable(f"HashingVectorizer on {col!r} writes {part.stop - part.start} columns, "
                                f"n_features={vec.n_features}")
    return {"column": col, "start": part.start, "n_features": int(vec.n_features), "lowercase": bool(vec.lowercase),
            "token_pattern": vec.token_pattern, "alternate_sign": bool(vec.alternate_sign), "seed": 0}


def probe_columns(spec: Mapping[str, Any], model: Any, features: Sequence[Feature], reference: Mapping[str, Any],
                  rows: int = PROBE_ROWS, seed: int = 0) -> dict[str, list]:
    """Raw request columns that take the pipeline's every branch: per numeric feature its fill value,
    bounds, reference quantiles, missing (unless required) and every split threshold on its column with
    its neighbours; per categorical feature each category, an unknown one, other case and spaces,
    missing; per text feature missing, blank, odd and non-ASCII texts and texts of repeated tokens that
    reach every hash column. Edge rows first, then rows drawing each feature's value at random."""
    from sklearn.utils import murmurhash3_32 as sk_murmur

    thresholds: dict[int, set[float]] = {}
    for per_class in model._predictors:
        nodes = per_class[0].nodes
        for i in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
            thresholds.setdefault(int(nodes["feature_idx"][i]), set()).add(float(nodes["num_threshold"][i]))
    num = spec["numeric"]
    by_name = {f.name: f for f in features}
    values: dict[str, list] = {}
    for j, (name, fill) in enumerate(zip(num["columns"], num["fill"])):
        f = by_name[name]
        vals = {fill, 0.0, 1.0, *reference.get(name, {}).get("quantiles", ()),
                *(v for v in (f.min, f.max) if v is not None)}
        vals.update(v for t in thresholds.get(num["start"] + j, ()) for v in (t, np.nextafter(t, -np.inf),
                                                                               np.nextafter(t, np.inf)))
        lo = -np.inf if f.min is None else f.min
        hi = np.inf if f.max is None else f.max
        vals = sorted(float(v) for v in vals if lo <= v <= hi and np.isfinite(v))
        values[name] = vals + ([] if f.required else [None])
    for part in spec["onehot"]:
        cats = part["categories"]
        values[part["column"]] = cats + [cats[0].upper(), f"  {cats[-1]} ", "never_seen_category", "", None]
    for part in spec["text"]:
        n = part["n_features"]
        words, bucket = [], set()
        for i in range(100_000):  # a token for every hash column
            tok = f"w{i}"
            j = hash_index(int(sk_murmur(tok, seed=0)), n)
            if j not in bucket:
                bucket.add(j)
                words.append(tok)
            if len(bucket) == n:
                break
        rng = np.random.default_rng(seed + 1)
        texts = [None, "", "   ", "!!! ???", "Water DAMAGE water water", "façade Ünïcödé naïve 東京 ÅNGSTRÖM",
                 "a_b__c 123 x9 -- tab\tnew\nline", "KELVIN \u212a sign", "ﬁre ﬂood"]
        for _ in range(200):
            picked = rng.choice(words, size=int(rng.integers(1, 4)))
            texts.append(" ".join(str(w) for w in picked for _ in range(int(rng.integers(1, 5)))))
        values[part["column"]] = texts
    edge = max(len(v) for v in values.values())
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for name, vals in values.items():
        first = [vals[i % len(vals)] for i in range(edge)]  # every value at least once
        out[name] = first + [vals[int(i)] for i in rng.integers(0, len(vals), size=max(rows - edge, 0))]
    return out


def export(folder: str | Path, cache_dir: str | Path) -> Path:
    """Load a claims bundle's pipeline (verified, through skops as predictors/bundle.py does) and write
    its cache file atomically into cache_dir; NativeUnavailable when the pipeline has another shape."""
    from .bundle import load_model, read_manifest, verify_files
    from .encoding import Normalizer, claims_frame
    from .predictor import features_from_spec
    from .reasons import hgb_to_lightgbm

    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    if manifest["framework"] != "sklearn":
        raise NativeUnavailable(f"{folder}: framework {manifest['framework']!r}; the native path exports sklearn "
                                "bundles")
    features = features_from_spec(manifest["feature_spec"])
    pipeline = load_model(folder, manifest)
    spec, model = pipeline_spec(pipeline, features)
    trees = hgb_to_lightgbm(model, spec["width"])
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
    columns = probe_columns(spec, model, features, manifest.get("reference", {}))
    n = len(next(iter(columns.values())))
    expected = pipeline.predict_proba(claims_frame(Normalizer(features)(columns, n), features))[:, 1]
    version = sklearn_version()
    doc = {"format": FORMAT, "model_sha256": manifest["files"][manifest["model_file"]], "scikit_learn": version,
           "bundle": f"{manifest['name']} {manifest['version']}", "spec": spec, "trees": trees,
           "baseline": float(baseline[0]),
           "probe": {"columns": columns, "expected": [float(v) for v in expected]}}
    path = cache_path(manifest, cache_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, allow_nan=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "export":
        print("usage: python -m predictors.claims_native export BUNDLE_DIR CACHE_DIR", file=sys.stderr)
        return 2
    try:
        print(export(args[1], args[2]))
    except NativeUnavailable as e:
        print(f"cannot export {args[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
