"""The runtime's Prometheus metrics (``ml_*``), correct with MLServer parallel workers on or off.

The metrics are built from ``observability/contract.py`` (names, types, labels, buckets, help,
multi-process modes: one entry there adds a metric) and documented in docs/observability.md.

Where the metrics live, and why not ``mlserver.register``/``mlserver.log``: MLServer 1.7.1
serves, on its metrics port,

* with ``parallel_workers: 0``: prometheus_client's *default* registry of the server process
  (metrics made with ``mlserver.register`` sit in MLServer's own registry and never appear:
  MLServer issue #1151);
* with ``parallel_workers`` > 0: a ``MultiProcessCollector`` over ``PROMETHEUS_MULTIPROC_DIR``,
  i.e. every value any process wrote through prometheus_client's multi-process value class
  (which MLServer switches on in each worker before any model loads).

So the metrics here are plain prometheus_client metrics in the default registry, created on
first use (at the first model load, after MLServer configured the process), which serves both
modes. In multi-process mode a gauge needs a ``multiprocess_mode``; the contract gives each
gauge's, with the reason (drift gauges ``liveall``: each worker exports the window of the rows
it scored, with a ``pid`` label, and the alert and dashboards take ``max``).

Drift statistics are computed off the request path: a request only queues its validated batch
for the window and, if none is pending, schedules a refresh ``drift_refresh_seconds`` later on
the event loop (at most one computation per model and interval, and one right after traffic
stops); the refresh also hands buffered scores to the outcome store's writer thread.
Series removal on unload works in the server process only; in multi-process mode values live in
memory-mapped files that cannot drop a series, so unload writes NaN instead (comparisons with
NaN are false, ``max`` ignores it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import threading
import time
from collections import Counter as Tally
from typing import Any, Optional

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from observability.contract import ML_METRICS, Metric
from predictors.business import ACCEPT, ML_APPROVED, ML_REJECTED, ML_REVIEW, REJECT
from predictors.drift import DriftMonitor
from predictors.encoding import InputError
from predictors.outcomes import METRICS as PERFORMANCE_METRICS
from predictors.outcomes import PredictionLog, open_prediction_log, quality
from predictors.spec import CLAIMS_TRIAGE, LEAD_SCORING

logger = logging.getLogger("mlserver.insurance.metrics")

ERROR_TYPES = ("invalid_input", "unknown_input", "internal")
DECISIONS = {LEAD_SCORING: (ACCEPT, REJECT), CLAIMS_TRIAGE: (ML_APPROVED, ML_REJECTED, ML_REVIEW)}
TRAINING, LIVE = "training", "live"


def multiprocess() -> bool:
    """True in an MLServer parallel worker (values go to PROMETHEUS_MULTIPROC_DIR files)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def collector(metric: Metric, registry: Any = REGISTRY) -> Any:
    """The prometheus_client collector of one contract entry (name, type, labels, help, buckets, mode)."""
    labels = list(metric.labels)
    if metric.type == "counter":  # prometheus_client appends _total itself
        return Counter(metric.name.removesuffix("_total"), metric.help, labels, registry=registry)
    if metric.type == "histogram":
        return Histogram(metric.name, metric.help, labels, buckets=metric.buckets, registry=registry)
    if metric.type == "gauge":
        return Gauge(metric.name, metric.help, labels, registry=registry,
                     multiprocess_mode=metric.multiprocess_mode or "all")
    raise ValueError(f"metric {metric.name}: the runtime builds counters, histograms and gauges, not {metric.type}")


class Families:
    """The ``ml_*`` collectors of one process: attribute ``key`` of each ML_METRICS entry of the contract."""

    def __init__(self, registry: Any = REGISTRY):
        for metric in ML_METRICS:
            setattr(self, metric.key, collector(metric, registry))

    def __getattr__(self, key: str) -> Any:  # only reached for a key the contract lacks
        raise AttributeError(f"no metric with key {key!r} in observability/contract.py ML_METRICS; "
                             f"keys: {sorted(m.key for m in ML_METRICS)}")


_families: Optional[Families] = None
_lock = threading.Lock()


def families() -> Families:
    global _families
    if _families is None:
        with _lock:
            if _families is None:
                _families = Families()
    return _families


def observe_many(child: Any, values: np.ndarray) -> None:
    """Histogram.observe for every value, in one pass for larger arrays.

    Uses the child's bucket counters directly (prometheus_client keeps one non-cumulative
    counter per bucket, ``_buckets`` in ``_upper_bounds`` order, and ``_sum``), falling back
    to one observe() per value if that layout ever changes. Tested against observe().
    """
    if len(values) <= 8 or not hasattr(child, "_buckets"):
        for v in values.tolist():
            child.observe(v)
        return
    bounds = child._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    buckets = child._buckets
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))
    child._sum.inc(float(np.sum(values)))


def error_type(exc: BaseException) -> str:
    """ml_scoring_errors_total's error_type of an exception raised by predict()."""
    cause = exc if isinstance(exc, InputError) else exc.__cause__
    if isinstance(cause, InputError):
        return "unknown_input" if cause.reason.startswith("unknown input") else "invalid_input"
    return "internal"


# ---- the shared outcome store ------------------------------------------------------------------

_logs: dict[Optional[str], Any] = {}


def prediction_log(path: Optional[str], capacity: int) -> PredictionLog:
    """One prediction log per process and path: in memory in the server process; with parallel
    workers a SQLite file beside MLServer's multi-process metrics, shared by the server's workers."""
    if path is None and multiprocess():
        path = os.path.join(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir(),
                            f"insurance-outcomes-{os.getppid()}.sqlite")
    log = _logs.get(path)
    if log is None:
        log = _logs[path] = open_prediction_log(path, capacity)
        log.on_evict = _evicted
    return log


def _evicted(model_name: str, version: str, rows: int) -> None:
    if (model_name, version) in _active:  # label values only from loaded versions
        families().outcome_evictions.labels(model_name, version).inc(rows)


# ---- per loaded model --------------------------------------------------------------------------

#: (model name, version) -> the monitoring of the instance that currently owns those series. A
#: reload of the same version loads the new instance before unloading the old one; the old one
#: must then leave the shared series alone.
_active: dict[tuple[str, str], "ModelMonitoring"] = {}


def active(model_name: str) -> dict[str, "ModelMonitoring"]:
    """Loaded versions of a model in this process: version -> monitoring."""
    return {v: m for (n, v), m in _active.items() if n == model_name}


def load_failed(model_name: str, version: Optional[str]) -> None:
    """ml_model_ready = 0 for a version that failed to load (unless an instance of it serves)."""
    key = (model_name, version or "unknown")
    if key not in _active:
        families().ready.labels(*key).set(0)


class Scoring:
    """Context of one predict() call: latency in __exit__ (successful or not), errors by type."""

    __slots__ = ("monitoring", "started")

    def __init__(self, monitoring: "ModelMonitoring"):
        self.monitoring = monitoring

    def __enter__(self) -> "Scoring":
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        mon = self.monitoring
        mon.latency.observe(time.perf_counter() - self.started)
        if exc is not None:
            mon.errors[error_type(exc)].inc()


class ModelMonitoring:
    """Every ml_* series of one loaded model version, its drift window and its outcomes."""

    def __init__(self, name: str, version: str, predictor: Any, options: Any,
                 registry: Optional[Families] = None, auth: Any = None):
        f = registry or families()
        self.f = f
        self.name, self.version = name, version
        self.auth = auth
        lv = (name, version)
        self.labels = lv
        self.latency = f.latency.labels(*lv)
        self.errors = {t: f.errors.labels(*lv, t) for t in ERROR_TYPES}
        self.rows = f.rows.labels(*lv)
        self.score = f.score.labels(*lv)
        self.decisions = {d: f.decisions.labels(*lv, d) for d in DECISIONS.get(predictor.task, ())}
        self.price = f.price.labels(*lv) if "price" in predictor.outputs else None
        self.ready = f.ready.labels(*lv)
        if auth is not None and auth.enabled:  # at 0 from load, so rate() sees the first failure
            for reason in auth.reasons:
                f.auth_failures.labels(name, reason)
        self.fast_path_served = f.fast_path.labels(*lv).inc  # called once per request by runtime/fastpath.py
        cache = getattr(predictor, "cache", None)
        if cache is not None:  # prediction cache on: hit ratio = hit / (hit + miss)
            hit, miss = f.cache_lookups.labels(*lv, "hit").inc, f.cache_lookups.labels(*lv, "miss").inc
            cache.on_lookup = lambda found: hit() if found else miss()

        self.drift = DriftMonitor(predictor.features, predictor.manifest.get("reference") or {},
                                  window=options.drift_window, min_rows=options.drift_min_rows)
        self.refresh_seconds = float(options.drift_refresh_seconds)
        self._psi: dict[str, Any] = {}
        self._ks: dict[str, Any] = {}
        self._model_psi: Any = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._dirty = False
        self._closed = False
        self._failed_once = False

        previous = _active.get(lv)
        if previous is not None:  # a reload of the same version: its window starts empty
            previous._superseded()
            previous._drop_series()

        metrics = predictor.manifest.get("metrics") or {}
        self.threshold = float(metrics.get("threshold", 0.5))
        self.performance_window = int(options.performance_window)
        self.performance_min = int(options.performance_min_outcomes)
        self._performance: dict[tuple[str, str], Any] = {}
        for metric, value in (metrics.get("holdout") or {}).items():
            if metric in PERFORMANCE_METRICS and value is not None:
                self._perf(metric, TRAINING).set(float(value))
        self.log: Any = None  # predictors.outcomes.MemoryPredictionLog or PredictionLog
        if options.outcomes_capacity > 0:
            try:
                self.log = prediction_log(options.outcomes_db, options.outcomes_capacity)
                self.log.set_capacity(name, version, options.outcomes_capacity)  # each version its own bound
            except Exception as e:  # monitoring never keeps a model from serving
                logger.error("model %s %s: outcome store unavailable, live performance is off: %s", name, version, e)
        if self.log is not None:
            try:  # outcomes stored before a restart of this worker or by another worker
                self.update_live_performance()
            except Exception:
                logger.exception("model %s %s: reading earlier outcomes failed", name, version)

        _active[lv] = self
        self.ready.set(1)

    # ---- request path ----------------------------------------------------------------------

    def scoring(self) -> Scoring:
        return Scoring(self)

    def observe(self, request_id: Optional[str], prediction: Any, owner: str = "") -> None:
        """A successful predict(): rows, scores, decisions, prices, drift window, outcome store
        (under `owner`: runtime/auth.py's Principal.owner, "" with authentication off)."""
        try:
            out = prediction.outputs
            batch = prediction.batch
            self.rows.inc(batch.n)
            scores = out["score"]
            observe_many(self.score, scores)
            if self.price is not None:
                observe_many(self.price, out["price"])
            decisions = out["decision"]
            if len(decisions) == 1:
                self._decision(decisions[0]).inc()
            else:
                for value, count in Tally(decisions).items():
                    self._decision(value).inc(count)
            self.drift.update(batch)
            if self.log is not None:
                self.log.record(self.name, self.version, request_id, scores, owner)
            self._dirty = True
            self._schedule()
        except Exception:  # never fail a scored request for its metrics
            if not self._failed_once:
                self._failed_once = True
                logger.exception("model %s %s: recording metrics failed", self.name, self.version)

    def _decision(self, value: str) -> Any:
        child = self.decisions.get(value)
        if child is None:
            child = self.decisions[value] = self.f.decisions.labels(*self.labels, value)
        return child

    def _schedule(self) -> None:
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (direct use): compute now
            self.refresh()
            return
        self._timer = loop.call_later(self.refresh_seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.refresh()

    # ---- off the request path --------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the drift gauges from the window and write buffered scores to the store."""
        if self._closed:
            return
        try:
            if self._dirty:
                self._dirty = False
                report = self.drift.compute()
                if report is not None:
                    self._set_drift(report)
            if self.log is not None and self.log.pending_rows:
                self.log.flush(background=True)  # off the event loop
        except Exception:
            logger.exception("model %s %s: drift refresh failed", self.name, self.version)

    def _set_drift(self, report: Any) -> None:
        for feature, value in report.psi.items():
            child = self._psi.get(feature)
            if child is None:
                child = self._psi[feature] = self.f.feature_psi.labels(*self.labels, feature)
            child.set(value)
        for feature, value in report.ks.items():
            child = self._ks.get(feature)
            if child is None:
                child = self._ks[feature] = self.f.feature_ks.labels(*self.labels, feature)
            child.set(value)
        if self._model_psi is None:
            self._model_psi = self.f.model_psi.labels(*self.labels)
        self._model_psi.set(report.model_psi)

    def _perf(self, metric: str, source: str) -> Any:
        child = self._performance.get((metric, source))
        if child is None:
            child = self._performance[(metric, source)] = self.f.performance.labels(*self.labels, metric, source)
        return child

    def update_live_performance(self) -> dict[str, float]:
        """source=live gauges from the latest ``performance_window`` outcomes of this version."""
        scores, outcomes = self.log.recent_outcomes(self.name, self.version, self.performance_window)
        summary: dict[str, float] = {"outcomes": int(len(outcomes))}
        if len(outcomes) < self.performance_min:
            return summary
        for metric, value in quality(scores, outcomes, self.threshold).items():
            self._perf(metric, LIVE).set(value)
            summary[metric] = round(value, 6)
        return summary

    # ---- unload ----------------------------------------------------------------------------

    def _superseded(self) -> None:
        """Another instance took over these series (a reload of the same version)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Unload: ml_model_ready 0; drift and performance series removed (NaN with workers)."""
        if self.log is not None and not self._closed:
            try:
                self.log.flush()
            except Exception:
                logger.exception("model %s %s: flushing the outcome store failed", self.name, self.version)
        owner = _active.get(self.labels) is self
        self._superseded()
        if not owner:
            return
        del _active[self.labels]
        self.ready.set(0)
        self._drop_series()

    def _drop_series(self) -> None:
        """Remove this instance's drift and performance series (NaN in multi-process mode)."""
        groups = [(self.f.feature_psi, [(f,) for f in self._psi]), (self.f.feature_ks, [(f,) for f in self._ks]),
                  (self.f.model_psi, [()] if self._model_psi is not None else []),
                  (self.f.performance, list(self._performance))]
        for family, extra in groups:
            for labels in extra:
                if multiprocess():
                    family.labels(*self.labels, *labels).set(math.nan)
                else:
                    try:
                        family.remove(*self.labels, *labels)
                    except KeyError:
                        pass
        self._psi.clear()
        self._ks.clear()
        self._model_psi = None
        self._performance.clear()
