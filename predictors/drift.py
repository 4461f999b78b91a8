"""Data drift of live inputs against a bundle's training reference (framework-free).

A :class:`DriftMonitor` keeps, per feature, a sliding window of the most recent ``window``
rows in a ring buffer (numeric: the float values, NaN for missing; categorical: the
category's index; text: whether the value is missing). On the request path
:meth:`DriftMonitor.update` only keeps a reference to the validated
:class:`~predictors.encoding.Batch` (batches that newer rows have pushed out of the window are
dropped at once); :meth:`DriftMonitor.compute` copies the pending rows into the buffers with
array operations and derives the statistics. It is meant to be called lazily: the runtime calls
it at most once per refresh interval, never per request.

Statistics, against the ``reference`` block of the bundle's manifest:

* **PSI** (population stability index) per feature over bins ``i``::

      PSI = sum_i (a_i - e_i) * ln(a_i / e_i),   a_i = max(live share_i, eps),
                                                  e_i = max(reference share_i, eps)

  with ``eps = 1e-4`` (``PSI_EPSILON``) so that an empty bin on either side gives a large
  but finite term. The bins:

  - numeric: the reference decile bins (``bin_edges``, a value ``x`` falls in bin
    ``searchsorted(bin_edges, x, side="right")``, as in training) plus a *missing* bin;
    reference shares are ``bin_shares * (1 - missing_share)`` and ``missing_share``;
  - categorical: one bin per category of the spec, a *missing* bin and an *unseen* bin for
    values outside the spec (reference share 0, so unseen values always add drift);
  - text: two bins, *missing* and *present* (the bundle records no token distribution).

  Reading guide: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift. A window of
  ``n`` rows drawn from the reference distribution itself gives PSI of about
  ``(bins - 1) / n`` by sampling noise alone (0.01 for 11 bins and 1000 rows), hence
  ``min_rows``: no statistic is reported before the window holds that many rows.

* **KS** (two-sample Kolmogorov-Smirnov statistic), numeric features only, missing values
  left out: ``sup_x |F_live(x) - F_ref(x)|`` where ``F_live`` is the empirical CDF of the
  window and ``F_ref`` the reference CDF rebuilt from the 101 reference quantiles
  (percentiles 0..100), linear between distinct quantiles and jumping where quantiles tie
  (discrete values). The supremum is taken exactly over both functions' breakpoints. NaN
  while the window holds no value of the feature.

* the model's drift: the largest feature PSI.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .encoding import Batch
from .spec import CATEGORICAL, NUMERIC, TEXT, Feature

PSI_EPSILON = 1e-4
DEFAULT_WINDOW = 1000
DEFAULT_MIN_ROWS = 500


def psi(actual: np.ndarray, expected: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """PSI of two share vectors over the same bins (each sums to 1), clipped below at eps."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_cdf(quantiles: np.ndarray, x: np.ndarray, left: bool = False) -> np.ndarray:
    """CDF of the reference at x, from quantiles at probabilities 0, 1/(m-1), ..., 1.

    Right-continuous value (``left=False``) or left limit (``left=True``): tied quantiles
    (a value taking up several percent of the reference) make a jump.
    """
    q = quantiles
    m = len(q)
    step = 1.0 / (m - 1)
    k = np.searchsorted(q, x, side="left" if left else "right")  # quantiles < x (left) or <= x
    inner = (k > 0) & (k < m)
    kk = np.clip(k, 1, m - 1)
    lo, hi = q[kk - 1], q[kk]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
    out = np.where(k >= m, 1.0, 0.0)
    return np.where(inner, (kk - 1 + frac) * step, out)


def ks_statistic(live: np.ndarray, quantiles: np.ndarray) -> float:
    """sup |F_live - F_ref| of a sample against reference quantiles (see the module doc)."""
    live = np.sort(np.asarray(live, dtype=np.float64))
    n = len(live)
    if n == 0 or len(quantiles) < 2:
        return math.nan
    q = np.asarray(quantiles, dtype=np.float64)
    z = np.unique(np.concatenate([live, q]))
    # Right values and left limits of both CDFs at every breakpoint; between breakpoints
    # F_live is constant and F_ref monotone, so the supremum is at a breakpoint or a limit.
    right = np.abs(np.searchsorted(live, z, side="right") / n - reference_cdf(q, z))
    left = np.abs(np.searchsorted(live, z, side="left") / n - reference_cdf(q, z, left=True))
    return float(max(right.max(), left.max()))


@dataclass
class DriftReport:
    rows: int  # rows in the window
    psi: dict[str, float]  # feature -> PSI
    ks: dict[str, float]  # numeric feature -> KS statistic (NaN: no value in the window)
    unseen_share: dict[str, float] = field(default_factory=dict)  # categorical -> share of unseen values

    @property
    def model_psi(self) -> float:
        return max(self.psi.values()) if self.psi else math.nan


class _Ring:
    """Fixed-size ring buffer of the last ``size`` values (vectorised writes)."""

    __slots__ = ("buf", "size", "pos", "filled")

    def __init__(self, size: int, dtype: Any, fill: Any):
        self.buf = np.full(size, fill, dtype=dtype)
        self.size = size
        self.pos = 0
        self.filled = 0

    def extend(self, values: np.ndarray) -> None:
        m = len(values)
        if m >= self.size:
            self.buf[:] = values[m - self.size:]
            self.pos, self.filled = 0, self.size
            return
        end = self.pos + m
        if end <= self.size:
            self.buf[self.pos:end] = values
        else:
            split = self.size - self.pos
            self.buf[self.pos:] = values[:split]
            self.buf[:end - self.size] = values[split:]
        self.pos = end % self.size
        self.filled = min(self.size, self.filled + m)

    def values(self) -> np.ndarray:
        """The window's values (order does not matter for the statistics)."""
        return self.buf if self.filled == self.size else self.buf[:self.filled]


class _Numeric:
    def __init__(self, f: Feature, ref: Mapping[str, Any], window: int):
        self.name = f.name
        self.edges = np.asarray(ref.get("bin_edges") or [], dtype=np.float64)
        shares = np.asarray(ref.get("bin_shares") or [1.0], dtype=np.float64)
        missing = float(ref.get("missing_share", 0.0))
        shares = shares / shares.sum() if shares.sum() > 0 else shares
        self.expected = np.append(shares * (1.0 - missing), missing)  # value bins, then missing
        self.quantiles = np.asarray(ref.get("quantiles") or [], dtype=np.float64)
        self.ring = _Ring(window, np.float64, np.nan)

    def update(self, col: np.ndarray) -> None:
        self.ring.extend(col)

    def stats(self) -> tuple[float, float]:
        x = self.ring.values()
        missing = np.isnan(x)
        present = x[~missing]
        counts = np.bincount(np.searchsorted(self.edges, present, side="right"), minlength=len(self.edges) + 1)
        counts = np.append(counts, missing.sum())
        return psi(counts / len(x), self.expected), ks_statistic(present, self.quantiles)


class _Categorical:
    def __init__(self, f: Feature, ref: Mapping[str, Any], window: int):
        self.name = f.name
        k = len(f.categories)
        self.codes: dict[Any, int] = {c: i for i, c in enumerate(f.categories)}
        self.codes[None] = k  # missing
        self.unseen = k + 1
        shares = ref.get("shares") or {}
        base = np.asarray([float(shares.get(c, 0.0)) for c in f.categories], dtype=np.float64)
        base = base / base.sum() if base.sum() > 0 else base
        missing = float(ref.get("missing_share", 0.0))
        self.expected = np.concatenate([base * (1.0 - missing), [missing, 0.0]])  # categories, missing, unseen
        self.ring = _Ring(window, np.int16, k)

    def update(self, col: np.ndarray) -> None:
        get, unseen = self.codes.get, self.unseen
        self.ring.extend(np.fromiter((get(v, unseen) for v in col), dtype=np.int16, count=len(col)))

    def stats(self) -> tuple[np.ndarray, float]:
        x = self.ring.values()
        shares = np.bincount(x, minlength=len(self.expected)) / len(x)
        return shares, psi(shares, self.expected)


class _Text:
    def __init__(self, f: Feature, ref: Mapping[str, Any], window: int):
        self.name = f.name
        missing = float(ref.get("missing_share", 0.0))
        self.expected = np.asarray([missing, 1.0 - missing])
        self.ring = _Ring(window, np.bool_, False)

    def update(self, col: np.ndarray) -> None:
        self.ring.extend(col == None)  # noqa: E711 (elementwise: True where missing)

    def stats(self) -> float:
        x = self.ring.values()
        m = float(x.mean())
        return psi(np.asarray([m, 1.0 - m]), self.expected)


class DriftMonitor:
    """Sliding-window drift of one model's inputs; see the module doc for the statistics."""

    def __init__(self, features: Iterable[Feature], reference: Mapping[str, Mapping[str, Any]],
                 window: int = DEFAULT_WINDOW, min_rows: int = DEFAULT_MIN_ROWS):
        if window < 1:
            raise ValueError(f"drift window must be at least 1 row, got {window}")
        self.window = int(window)
        self.min_rows = max(1, min(int(min_rows), self.window))
        self.numeric: list[_Numeric] = []
        self.categorical: list[_Categorical] = []
        self.text: list[_Text] = []
        for f in features:
            ref = reference.get(f.name) or {}
            if f.kind == NUMERIC:
                self.numeric.append(_Numeric(f, ref, self.window))
            elif f.kind == CATEGORICAL:
                self.categorical.append(_Categorical(f, ref, self.window))
            elif f.kind == TEXT:
                self.text.append(_Text(f, ref, self.window))
        self.rows_seen = 0  # rows ever added (the window holds min(rows_seen, window))
        self._pending: deque[Batch] = deque()
        self._pending_rows = 0

    @property
    def features(self) -> list[str]:
        return [t.name for group in (self.numeric, self.categorical, self.text) for t in group]

    @property
    def rows(self) -> int:
        return min(self.rows_seen, self.window)

    def update(self, batch: Batch) -> None:
        """Add a validated batch's rows (O(1): they are copied into the window by ``absorb``)."""
        self._pending.append(batch)
        self._pending_rows += batch.n
        self.rows_seen += batch.n
        # batches entirely pushed out of the window by newer rows are never needed
        while self._pending_rows - self._pending[0].n >= self.window:
            self._pending_rows -= self._pending.popleft().n

    def absorb(self) -> None:
        """Copy the pending rows into the ring buffers (only the newest ``window`` rows count)."""
        if not self._pending:
            return
        batches, self._pending, self._pending_rows = list(self._pending), deque(), 0
        skip = max(0, sum(b.n for b in batches) - self.window)  # oldest rows that would be overwritten
        for group in (self.numeric, self.categorical, self.text):
            for tracker in group:
                parts, drop = [], skip
                for b in batches:
                    col = b.columns[tracker.name]
                    if drop >= b.n:
                        drop -= b.n
                        continue
                    parts.append(col[drop:] if drop else col)
                    drop = 0
                tracker.update(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def compute(self) -> DriftReport | None:
        """The statistics of the current window; None until it holds ``min_rows`` rows."""
        self.absorb()
        if self.rows < self.min_rows:
            return None
        report = DriftReport(rows=self.rows, psi={}, ks={})
        for t in self.numeric:
            report.psi[t.name], report.ks[t.name] = t.stats()
        for t in self.categorical:
            shares, report.psi[t.name] = t.stats()
            report.unseen_share[t.name] = float(shares[t.unseen])
        for t in self.text:
            report.psi[t.name] = t.stats()
        return report
