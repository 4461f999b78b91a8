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
    #: categorical: float64 index of each row's category in the spec, NaN for missing or unseen
    #: (filled by normalize; consumers fall back to ``category_codes`` when a column is absent)
    codes: dict[str, np.ndarray] = field(default_factory=dict)


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
    finite = np.isfinite(arr)
    if not finite.all():
        bad = ~finite if missing is None else ~finite & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(name, f"row {i} is {arr[i]}: numbers must be finite (send null for a missing value)")
    return arr


def _as_text(name: str, values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    if all(v.__class__ is str for v in values):  # the common case: plain strings
        out[:] = [v.strip() or None for v in values]
        return out
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


def category_codes(feature: Feature, col: np.ndarray) -> np.ndarray:
    """float64 index of each (lower-cased) category in the spec; NaN for missing or unseen."""
    codes = {c: float(i) for i, c in enumerate(feature.categories)}
    nan = math.nan
    return np.array([codes.get(v, nan) if v is not None else nan for v in col], dtype=np.float64)


class Normalizer:
    """``normalize`` for one feature spec, with the per-feature lookups done once.

    Same checks, same errors and the same Batch as the plain function; also fills
    ``Batch.codes`` so the encoder and the pricing rules need no per-row lookups.
    """

    def __init__(self, features: Iterable[Feature]):
        self.features = tuple(features)
        self.by_name = {f.name: f for f in self.features}
        self._allowed = ", ".join(self.by_name)
        plan = []
        for f in self.features:
            if f.kind == CATEGORICAL:
                # raw (stripped) value -> (lower-cased value, code or NaN); shared cache, bounded
                plan.append((f, CATEGORICAL, {c: float(i) for i, c in enumerate(f.categories)}, {}))
            else:
                big = float(np.finfo(np.float64).max)  # no bound: any finite number
                plan.append((f, f.kind, None, (-big if f.min is None else f.min, big if f.max is None else f.max)))
        self._plan = tuple(plan)

    def __call__(self, raw: Mapping[str, Sequence[Any]], n: int | None = None) -> Batch:
        by_name = self.by_name
        for name in raw:
            if name not in by_name:
                raise InputError(name, f"unknown input; allowed inputs: {self._allowed}")
        lengths = {name: len(v) for name, v in raw.items()}
        if n is None:
            if not lengths:
                raise InputError(None, f"the request has no inputs; expected some of: {self._allowed}")
            n = next(iter(lengths.values()))
        for name, length in lengths.items():
            if length != n:
                raise InputError(name, f"has {length} rows but the batch has {n}")
        if n <= 0:
            name = next(iter(raw), None)
            raise InputError(name, "empty batch: at least one row is required")

        columns: dict[str, np.ndarray] = {}
        codes_out: dict[str, np.ndarray] = {}
        numeric_missing = None  # numeric NaN per row (numpy), only when some value is missing
        text_missing = [0] * n  # categorical / text None per row
        text_missing_array = None  # the same, from the per-distinct-value path (numpy)
        n_missing_all = 0  # features missing in every row (absent inputs)
        unseen: dict[str, int] = {}
        nan = math.nan
        for f, kind, codes, seen in self._plan:
            values = raw.get(f.name)
            if values is None and f.required:
                raise InputError(f.name, "is required")
            if kind == NUMERIC:
                if values is None:
                    columns[f.name] = np.full(n, np.nan)
                    n_missing_all += 1
                    continue
                if n <= _SCALAR_ROWS and values.__class__ is list and _plain_in_range(values, *seen):
                    columns[f.name] = np.array(values, dtype=np.float64)  # all valid, none missing
                    continue
                col = _as_float(f.name, values)
                _check_range(f, col)
                isnan = np.isnan(col)
                if isnan.any():
                    if f.required:
                        raise InputError(f.name, f"is required: row {int(np.flatnonzero(isnan)[0])} is null")
                    numeric_missing = isnan.astype(np.float64) if numeric_missing is None else numeric_missing + isnan
                columns[f.name] = col
                continue
            if values is None:
                columns[f.name] = np.full(n, None, dtype=object)
                if kind == CATEGORICAL:
                    codes_out[f.name] = np.full(n, np.nan)
                n_missing_all += 1
                continue
            types = set(map(type, values)) if values.__class__ is list else None
            plain = types == _STR
            distinct = None
            if n > _SCALAR_ROWS and types and (types <= _STR_NONE or types <= _BYTES_NONE):  # per distinct value
                distinct = _distinct(values, n, codes if kind == CATEGORICAL else None, seen)
            if distinct is not None:
                texts, codes_out[f.name], missing, count = distinct
                if missing is not None:
                    text_missing_array = missing if text_missing_array is None else text_missing_array + missing
                if count:
                    unseen[f.name] = count
                if kind != CATEGORICAL:
                    del codes_out[f.name]
                col = np.empty(n, dtype=object)
                col[:] = texts
                columns[f.name] = col
                continue
            if plain:
                texts = [v.strip() or None for v in values]  # the common case: plain strings
            else:
                texts = _as_text(f.name, values).tolist()
            if kind == CATEGORICAL:
                code_list = []
                count = 0
                for i, v in enumerate(texts):
                    if v is None:
                        code_list.append(nan)
                        text_missing[i] += 1
                        continue
                    hit = seen.get(v) or _category(seen, codes, v)
                    texts[i] = hit[0]
                    code_list.append(hit[1])
                    count += hit[1] != hit[1]  # NaN: unseen category
                if count:
                    unseen[f.name] = count
                codes_out[f.name] = np.array(code_list, dtype=np.float64)
            else:
                for i, v in enumerate(texts):
                    if v is None:
                        text_missing[i] += 1
            col = np.empty(n, dtype=object)
            col[:] = texts
            columns[f.name] = col
        present = np.array(text_missing, dtype=np.float64)
        if text_missing_array is not None:
            present += text_missing_array
        if numeric_missing is not None:
            present += numeric_missing
        present = (len(self.features) - n_missing_all) - present
        return Batch(n=n, columns=columns, present=present, unseen=unseen, codes=codes_out)


_STR, _STR_NONE, _BYTES_NONE = {str}, {str, type(None)}, {bytes, type(None)}
#: Most stripped categorical values whose (lower-cased, code) a LeadEncoder remembers.
_SEEN_MAX = 10_000


def _category(seen: dict, codes: dict, text: str) -> tuple:
    """(lower-cased text, float64 code, NaN when unseen) of a stripped categorical value, remembered in
    `seen` (bounded) so that repeated values cost one dict lookup."""
    low = text.lower()
    hit = (low, codes.get(low, math.nan))
    if len(seen) < _SEEN_MAX:
        seen[text] = hit
    return hit


def _distinct(values: list, n: int, codes: dict | None, seen: dict) -> tuple | None:
    """A column of str (or of bytes), None for missing -> (texts, codes, missing, unseen count), computed once per
    distinct value and spread over the rows by C-level maps: texts decoded from UTF-8, stripped (None
    when blank) and, for a categorical feature (`codes` given), lower-cased with their float64 code
    (NaN unseen or missing). `seen` caches stripped value -> (lower-cased, code), bounded. missing:
    float64 0/1 per row, or None. None when some bytes are not UTF-8 (_as_text names the row)."""
    nan = math.nan
    text_of, code_of, missing_of = {}, {}, {}
    blanks = 0
    for v in set(values):
        if v is None:
            t = None
        elif v.__class__ is bytes:
            try:
                t = v.decode("utf-8").strip() or None
            except UnicodeDecodeError:
                return None
        else:
            t = v.strip() or None
        if t is None:
            blanks += 1
            text_of[v], code_of[v], missing_of[v] = None, nan, 1.0
            continue
        missing_of[v] = 0.0
        if codes is None:
            text_of[v] = t
            continue
        text_of[v], code_of[v] = seen.get(t) or _category(seen, codes, t)
    texts = list(map(text_of.__getitem__, values))
    missing = np.fromiter(map(missing_of.__getitem__, values), dtype=np.float64, count=n) if blanks else None
    if codes is None:
        return texts, None, missing, 0
    code_arr = np.fromiter(map(code_of.__getitem__, values), dtype=np.float64, count=n)
    count = int(np.count_nonzero(np.isnan(code_arr))) - (int(missing.sum()) if missing is not None else 0)
    return texts, code_arr, missing, count


#: Up to this many rows, numeric columns are checked value by value in Python (cheaper than the
#: dozen numpy calls of the general path for a few values); anything unusual (None, a bool, a
#: string, NaN, out of range) takes the general path, which raises the error.
_SCALAR_ROWS = 64


def _plain_in_range(values: list, lo: float, hi: float) -> bool:
    """True when every value is an int or a float (not a bool) within [lo, hi] (NaN is not)."""
    for v in values:
        c = v.__class__
        if (c is not int and c is not float) or not lo <= v <= hi:
            return False
    return True


def normalize(features: Iterable[Feature], raw: Mapping[str, Sequence[Any]], n: int | None = None) -> Batch:
    """Validate raw columns against the feature spec; every feature is optional.

    Raises InputError naming the input for: an unknown name, a length that differs
    from the others, an empty batch, a non-numeric or non-finite number, a number
    outside the feature's [min, max], a non-string categorical/text value.
    """
    return Normalizer(features)(raw, n)


def _check_range(f: Feature, col: np.ndarray) -> None:
    # NaN compares False: missing values pass
    if f.min is not None:
        bad = col < f.min
        if f.max is not None:
            bad |= col > f.max
    elif f.max is not None:
        bad = col > f.max
    else:
        return
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f.name, f"row {i} is {col[i]:g}, outside the allowed range {allowed_range(f)}")


def allowed_range(f: Feature) -> str:
    """[min, max] of a numeric feature for an error message; an open side is shown as -inf / inf."""
    lo = "-inf" if f.min is None else f"{f.min:g}"
    hi = "inf" if f.max is None else f"{f.max:g}"
    return f"[{lo}, {hi}]"


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
        self._text_cache: dict[str, tuple[int, ...]] = {}
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

    def _text_buckets(self, text: str) -> tuple[int, ...]:
        """Bucket of every token of a text (with repeats), cached per distinct text."""
        hit = self._text_cache.get(text)
        if hit is None:
            hit = tuple(self._bucket(tok) for tok in tokens(text))
            if len(self._text_cache) < 100_000:
                self._text_cache[text] = hit
        return hit

    def encode(self, batch: Batch) -> np.ndarray:
        n = batch.n
        x = np.empty((n, len(self.columns)), dtype=np.float64)
        dense = []  # numeric and categorical columns, in order: the first len(dense) columns of x
        for f in self.features:
            if f.kind == NUMERIC:
                dense.append(batch.columns[f.name])
            elif f.kind == CATEGORICAL:
                codes = batch.codes.get(f.name)
                dense.append(category_codes(f, batch.columns[f.name]) if codes is None else codes)
        if dense:
            x[:, :len(dense)] = np.array(dense).T  # one copy instead of one per column
        j = len(dense)
        buckets = self.buckets
        text_buckets = self._text_buckets
        for f in self.features:
            if f.kind != TEXT:
                continue
            block = x[:, j:j + buckets]
            if n <= 8:  # a few rows: count in place
                block.fill(0.0)
                for i, v in enumerate(batch.columns[f.name]):
                    if v is not None:
                        row = block[i]
                        for b in text_buckets(v):
                            row[b] += 1.0
            else:  # counts per distinct text, spread over the rows by one gather
                values = batch.columns[f.name].tolist()
                distinct = list(set(values))
                position = {v: k for k, v in enumerate(distinct)}
                flat = [k * buckets + b for k, v in enumerate(distinct) if v is not None for b in text_buckets(v)]
                if flat:
                    counts = np.bincount(flat, minlength=len(distinct) * buckets).reshape(len(distinct), buckets)
                    rows = np.fromiter(map(position.__getitem__, values), dtype=np.intp, count=n)
                    block[:] = counts[rows]
                else:
                    block.fill(0.0)
            j += buckets
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
