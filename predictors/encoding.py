"""Validation and encoding of raw feature columns (framework-free).

Raw input is a mapping of feature name -> sequence of N values (what a V2 request's
tensors decode to). ``normalize`` validates it against a vertical's feature spec and
returns a :class:`Batch`; ``LeadEncoder`` turns a batch into the float matrix the
LightGBM models were trained on; the claims pipeline takes the batch as a DataFrame.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .spec import CATEGORICAL, NUMERIC, TEXT, Feature

_TOKEN = re.compile(r"[a-z0-9_]+")


class InputError(ValueError):
    """A request's input is invalid. ``input_name`` names the offending input."""

    def __init__(self, input_name: str | None, message: str):
        self.input_name = input_name
        self.reason = message
        super().__init__(f"input '{input_name}': {message}" if input_name else message)


@dataclass
class Batch:
    """N validated rows, column by column.

    numeric columns: float64 arrays, NaN where missing; categorical columns: object
    arrays of lower-cased known categories, unseen values kept as given (lower-cased),
    None where missing; text columns: object arrays of str, None where missing.
    """

    n: int
    columns: dict[str, np.ndarray]
    present: np.ndarray  # (n,) count of non-missing features per row
    unseen: dict[str, int] = field(default_factory=dict)  # categorical: rows with an unknown category


def _as_float(name: str, values: Sequence[Any]) -> np.ndarray:
    """Numbers -> float64, None -> NaN (missing). NaN, Inf, strings and bools are refused."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.dtype.kind not in "fiu":  # None inside, strings, bools, nested lists
        if arr.ndim != 1:
            raise InputError(name, f"expected a flat list of numbers, got shape {list(arr.shape)}")
        for i, v in enumerate(values):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise InputError(name, f"row {i} is {_preview(v)}: expected a number or null")
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    else:
        arr = arr.astype(np.float64, copy=False)
        missing = None
    if arr.ndim != 1:
        raise InputError(name, f"expected a flat list of numbers, got shape {list(arr.shape)}")
    bad = ~np.isfinite(arr) if missing is None else ~np.isfinite(arr) & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(name, f"row {i} is {arr[i]}: numbers must be finite (send null for a missing value)")
    return arr


def _as_text(name: str, values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None:
            out[i] = None
            continue
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(name, f"row {i} is not valid UTF-8") from e
        elif not isinstance(v, str):
            raise InputError(name, f"expected strings, got {type(v).__name__} at row {i}")
        v = v.strip()
        out[i] = v or None
    return out


def _preview(values: Any, limit: int = 60) -> str:
    text = repr(values)
    return text if len(text) <= limit else text[:limit] + "..."


def normalize(features: Iterable[Feature], raw: Mapping[str, Sequence[Any]], n: int | None = None) -> Batch:
    """Validate raw columns against the feature spec; every feature is optional.

    Raises InputError naming the input for: an unknown name, a length that differs
    from the others, an empty batch, a non-numeric or non-finite number, a number
    outside the feature's [min, max], a non-string categorical/text value.
    """
    features = tuple(features)
    by_name = {f.name: f for f in features}
    for name in raw:
        if name not in by_name:
            raise InputError(name, f"unknown input; allowed inputs: {', '.join(by_name)}")
    lengths = {name: len(v) for name, v in raw.items()}
    if n is None:
        if not lengths:
            raise InputError(None, f"the request has no inputs; expected some of: {', '.join(by_name)}")
        n = next(iter(lengths.values()))
    for name, length in lengths.items():
        if length != n:
            raise InputError(name, f"has {length} rows but the batch has {n}")
    if n <= 0:
        name = next(iter(raw), None)
        raise InputError(name, "empty batch: at least one row is required")

    columns: dict[str, np.ndarray] = {}
    present = np.zeros(n, dtype=np.float64)
    unseen: dict[str, int] = {}
    for f in features:
        values = raw.get(f.name)
        if values is None and f.required:
            raise InputError(f.name, "is required")
        if f.kind == NUMERIC:
            if values is None:
                col = np.full(n, np.nan)
            else:
                col = _as_float(f.name, values)
                _check_range(f, col)
            if f.required and np.isnan(col).any():
                raise InputError(f.name, f"is required: row {int(np.flatnonzero(np.isnan(col))[0])} is null")
            present += ~np.isnan(col)
        else:
            col = np.full(n, None, dtype=object) if values is None else _as_text(f.name, values)
            if f.kind == CATEGORICAL:
                known = set(f.categories)
                count = 0
                for i, v in enumerate(col):
                    if v is not None:
                        v = v.lower()
                        col[i] = v
                        count += v not in known
                if count:
                    unseen[f.name] = count
            present += np.fromiter((v is not None for v in col), dtype=np.float64, count=n)
        columns[f.name] = col
    return Batch(n=n, columns=columns, present=present, unseen=unseen)


def _check_range(f: Feature, col: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        low = col < f.min if f.min is not None else np.zeros(len(col), bool)
        high = col > f.max if f.max is not None else np.zeros(len(col), bool)
    bad = low | high
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f.name, f"row {i} is {col[i]:g}, outside the allowed range [{f.min:g}, {f.max:g}]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class LeadEncoder:
    """Batch -> float64 matrix for the LightGBM lead-scoring models.

    Columns: numeric features as given, categorical features as the index of the
    category in the spec (NaN for missing or unseen), then per text feature
    ``buckets`` columns counting the tokens whose crc32 falls in each bucket.
    """

    def __init__(self, features: Iterable[Feature], buckets: int):
        self.features = tuple(features)
        self.buckets = int(buckets)
        self._codes = {f.name: {c: float(i) for i, c in enumerate(f.categories)}
                       for f in self.features if f.kind == CATEGORICAL}
        self._bucket_cache: dict[str, int] = {}
        self.columns: list[str] = []
        self.categorical_columns: list[int] = []
        for f in self.features:
            if f.kind == TEXT:
                continue
            if f.kind == CATEGORICAL:
                self.categorical_columns.append(len(self.columns))
            self.columns.append(f.name)
        for f in self.features:
            if f.kind == TEXT:
                self.columns.extend(f"{f.name}__h{i}" for i in range(self.buckets))

    def _bucket(self, token: str) -> int:
        b = self._bucket_cache.get(token)
        if b is None:
            b = zlib.crc32(token.encode("utf-8")) % self.buckets
            if len(self._bucket_cache) < 100_000:
                self._bucket_cache[token] = b
        return b

    def encode(self, batch: Batch) -> np.ndarray:
        n = batch.n
        x = np.empty((n, len(self.columns)), dtype=np.float64)
        j = 0
        for f in self.features:
            if f.kind == NUMERIC:
                x[:, j] = batch.columns[f.name]
                j += 1
            elif f.kind == CATEGORICAL:
                codes = self._codes[f.name]
                col = batch.columns[f.name]
                x[:, j] = [codes.get(v, np.nan) if v is not None else np.nan for v in col]
                j += 1
        for f in self.features:
            if f.kind != TEXT:
                continue
            block = x[:, j:j + self.buckets]
            block.fill(0.0)
            for i, v in enumerate(batch.columns[f.name]):
                if v is not None:
                    for tok in tokens(v):
                        block[i, self._bucket(tok)] += 1.0
            j += self.buckets
        return x


MISSING_CATEGORY = "__missing__"


def claims_frame(batch: Batch, features: Iterable[Feature]):
    """Batch -> the DataFrame the claims pipeline takes (its own preprocessing does the rest):
    numeric NaN for missing, categorical MISSING_CATEGORY, text ""."""
    import pandas as pd

    data = {}
    for f in features:
        col = batch.columns[f.name]
        if f.kind == TEXT:
            col = np.where(col == None, "", col)  # noqa: E711 (elementwise)
        elif f.kind == CATEGORICAL:
            col = np.where(col == None, MISSING_CATEGORY, col)  # noqa: E711
        data[f.name] = col
    return pd.DataFrame(data)
