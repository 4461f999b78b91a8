"""Training tables: synthetic or real (CSV / Parquet with the vertical's columns)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.encoding import Batch, normalize
from predictors.spec import NUMERIC, Vertical


class DataError(ValueError):
    """A training table is unusable: the message names the file and the column."""


def load_table(path: str | Path, vertical: Vertical) -> pd.DataFrame:
    """Read a CSV or Parquet file holding the vertical's feature columns and its target."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".gz") or path.name.endswith(".csv.gz"):
            df = pd.read_csv(path, keep_default_na=True, na_values=[""], dtype_backend="numpy_nullable")
            df = df.astype({c: "object" for c in df.columns if str(df[c].dtype) == "string"})
        else:
            raise DataError(f"{path}: unsupported extension {path.suffix!r}; use .csv, .csv.gz or .parquet")
    except ImportError as e:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'insurance-serving[parquet]'") from e
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read: {e}") from e
    return conform(df, vertical, str(path))


def conform(df: pd.DataFrame, vertical: Vertical, source: str) -> pd.DataFrame:
    """The vertical's columns in contract order with canonical dtypes (float64 numerics, object
    categoricals/texts with None for gaps, int64 0/1 target), whatever the source: a file and a
    database table holding the same rows give the same frame, hash and model."""
    path = source
    missing = [c for c in (*vertical.feature_names, vertical.target) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)} (vertical {vertical.name} needs "
                        f"{', '.join(vertical.feature_names)} and the target {vertical.target})")
    df = df[[*vertical.feature_names, vertical.target]].copy()
    for f in vertical.features:
        if f.kind == NUMERIC:
            try:
                df[f.name] = pd.to_numeric(df[f.name], errors="raise").astype(np.float64)
            except (TypeError, ValueError) as e:
                raise DataError(f"{path}: column {f.name} must be numeric: {e}") from e
        else:
            df[f.name] = df[f.name].astype(object).where(df[f.name].notna(), None)
    labels = set(pd.unique(df[vertical.target].dropna()))
    if not labels <= {0, 1} or df[vertical.target].isna().any():
        raise DataError(f"{path}: target {vertical.target} must be 0/1 with no gaps, found {sorted(labels)[:5]}")
    df[vertical.target] = df[vertical.target].astype(np.int64)
    return df


def data_hash(df: pd.DataFrame) -> str:
    """sha256 of a canonical CSV rendering: the same table hashes the same from any source."""
    text = df.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_batch(df: pd.DataFrame, vertical: Vertical) -> Batch:
    """Validate a table through the same code the server uses for requests."""
    raw = {}
    for f in vertical.features:
        col = df[f.name]
        raw[f.name] = col.astype(object).where(col.notna(), None).tolist()
    return normalize(vertical.features, raw, len(df))
