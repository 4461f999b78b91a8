"""runtime/metrics.py and predictors/outcomes.py without a server: families built from the contract, bulk
histogram observation, error types, the lifecycle of one model's series, outcome matching and
the rolling quality metrics. (Against a real MLServer and Prometheus, in both worker modes:
tests/observability/test_prometheus_integration.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from observability.contract import ML_METRICS, SCORE_BUCKETS, Metric
from predictors import InputError, load_predictor
from predictors.outcomes import MemoryPredictionLog, PredictionLog, open_prediction_log, quality, roc_auc
from runtime import metrics
from runtime.settings import RuntimeSettings
from training.data import to_batch
from training.synthetic import generate

from .conftest import shipped_bundle


class InvalidInput(Exception):
    """Stands for runtime.model.InvalidInput (an MLServerError raised `from` the InputError): this
    module must not import mlserver, whose gRPC protos clash with tritonclient's in one process."""


def test_runtime_helpers_import_without_mlserver():
    import subprocess
    import sys

    code = "import runtime.metrics, runtime.settings, sys; assert 'mlserver' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_contract_entry_is_all_it_takes_to_export_a_metric():
    """runtime/metrics.py builds each collector from its contract entry: a new entry (here one that is
    not in the contract) is exported with the entry's name, type, help, labels, buckets and mode."""
    registry = CollectorRegistry()
    entries = [Metric("ml_unit_total", "counter", ("model_name",), "Unit counter."),
               Metric("ml_unit_seconds", "histogram", ("model_name",), "Unit histogram.", (0.1, 1.0)),
               Metric("ml_unit_gauge", "gauge", ("model_name",), "Unit gauge.", multiprocess_mode="livemax")]
    built = [metrics.collector(m, registry) for m in entries]
    for collector in built:
        collector.labels("auto")
    exported = {f.name: f for f in registry.collect()}
    assert {(f.name, f.type, f.documentation) for f in exported.values()} == {
        ("ml_unit", "counter", "Unit counter."), ("ml_unit_seconds", "histogram", "Unit histogram."),
        ("ml_unit_gauge", "gauge", "Unit gauge.")}
    assert [s.labels["le"] for s in exported["ml_unit_seconds"].samples if s.name.endswith("_bucket")] == [
        "0.1", "1.0", "+Inf"]
    assert built[2]._multiprocess_mode == "livemax"


def test_every_contract_metric_is_a_family_attribute():
    fam = metrics.Families(CollectorRegistry())
    assert {m.key: m.name for m in ML_METRICS} == {
        key: (c._name + "_total" if c._type == "counter" else c._name) for key, c in vars(fam).items()}
    with pytest.raises(AttributeError, match="no metric with key 'latncy'"):
        fam.latncy


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"name": "ml_x", "type": "counter"}, "ends in _total"),
    ({"name": "ml_x", "type": "gauge", "buckets": (1.0,)}, "buckets are for a histogram"),
    ({"name": "ml_x", "type": "histogram", "buckets": (1.0, 0.5)}, "increasing"),
    ({"name": "ml_x", "type": "gauge", "multiprocess_mode": "newest"}, "multiprocess_mode"),
    ({"name": "ml_x_total", "type": "counter", "multiprocess_mode": "max"}, "multiprocess_mode"),
    ({"name": "ml_x", "type": "meter"}, "type 'meter'"),
])
def test_contract_refuses_an_inconsistent_entry(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        Metric(labels=("model_name",), help="x", **kwargs)


@pytest.mark.parametrize("n", [1, 5, 9, 1000])
def test_observe_many_equals_observe(n):
    registry = CollectorRegistry()
    one = Histogram("one", "x", buckets=SCORE_BUCKETS, registry=registry)
    many = Histogram("many", "x", buckets=SCORE_BUCKETS, registry=registry)
    rng = np.random.default_rng(n)
    values = np.concatenate([rng.random(n), [0.0, 0.05, 0.5, 1.0]])  # bucket bounds are inclusive
    for v in values:
        one.observe(float(v))
    metrics.observe_many(many, values)
    a = {(s.name.removeprefix("one"), tuple(sorted(s.labels.items()))): s.value
         for s in registry.collect() if s.name == "one" for s in s.samples if not s.name.endswith("_created")}
    b = {(s.name.removeprefix("many"), tuple(sorted(s.labels.items()))): s.value
         for s in registry.collect() if s.name == "many" for s in s.samples if not s.name.endswith("_created")}
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key]), key


def test_error_types():
    assert metrics.error_type(InvalidInput(InputError("age", "row 1 is -4, outside ..."))) == "internal"  # no cause
    try:
        raise InvalidInput(InputError("colour", "unknown input; allowed inputs: age")) from InputError(
            "colour", "unknown input; allowed inputs: age")
    except InvalidInput as e:
        assert metrics.error_type(e) == "unknown_input"
    try:
        raise InvalidInput(InputError("age", "datatype BYTES ...")) from InputError("age", "datatype BYTES ...")
    except InvalidInput as e:
        assert metrics.error_type(e) == "invalid_input"
    assert metrics.error_type(RuntimeError("boom")) == "internal"


# ---- one model's series over its lifecycle --------------------------------------------------


@pytest.fixture(scope="module")
def predictor(config):
    return load_predictor(shipped_bundle("auto"), config)


def options(**overrides):
    return RuntimeSettings(**{"drift_window": 200, "drift_min_rows": 100, "performance_min_outcomes": 50,
                              **overrides})


class Registry:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.families = metrics.Families(self.registry)

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels)


def test_monitoring_lifecycle(predictor, config):
    reg = Registry()
    lv = {"model_name": "unit-auto", "model_version": "1.0.0"}
    mon = metrics.ModelMonitoring("unit-auto", "1.0.0", predictor, options(), registry=reg.families)
    try:
        # created at load
        assert reg.value("ml_model_ready", **lv) == 1.0
        assert reg.value("ml_rows_total", **lv) == 0.0
        assert reg.value("ml_scoring_errors_total", **lv, error_type="unknown_input") == 0.0
        assert reg.value("ml_decisions_total", **lv, decision="accept") == 0.0
        assert reg.value("ml_model_performance", **lv, metric="roc_auc", source="training") == pytest.approx(0.839823)
        assert reg.value("ml_feature_drift_psi", **lv, feature="age") is None

        # a failing call counts in the latency histogram and as an error
        with pytest.raises(InvalidInput):
            with mon.scoring():
                try:
                    raise InputError("age", "row 0 is -4, outside the allowed range [16, 110]")
                except InputError as e:
                    raise InvalidInput(e) from e
        assert reg.value("ml_scoring_latency_seconds_count", **lv) == 1.0
        assert reg.value("ml_scoring_errors_total", **lv, error_type="invalid_input") == 1.0

        auto = config.vertical("auto")
        df = generate(auto, seed=31, rows=150)
        for start in range(0, 150, 50):
            with mon.scoring():
                prediction = predictor.predict({c: df[c].astype(object).where(df[c].notna(), None).tolist()[start:start + 50]
                                                for c in auto.feature_names}, 50)
                mon.observe(f"req-{start}", prediction)
        assert reg.value("ml_scoring_latency_seconds_count", **lv) == 4.0
        assert reg.value("ml_rows_total", **lv) == 150.0
        accepts = reg.value("ml_decisions_total", **lv, decision="accept")
        rejects = reg.value("ml_decisions_total", **lv, decision="reject")
        assert accepts + rejects == 150.0
        assert reg.value("ml_prediction_score_count", **lv) == 150.0
        assert reg.value("ml_quoted_price_count", **lv) == 150.0
        # no running event loop here: observe() refreshes at once
        psi = {f: reg.value("ml_feature_drift_psi", **lv, feature=f) for f in auto.feature_names}
        assert all(v is not None and v < 0.15 for v in psi.values()), psi
        assert reg.value("ml_model_drift_psi", **lv) == pytest.approx(max(psi.values()))
        assert reg.value("ml_feature_drift_ks", **lv, feature="vehicle_make") is None  # numeric only

        # outcomes for the scored rows -> live metrics
        matched, unknown = mon.log.add_outcomes("unit-auto", [(f"req-{50 * (i // 50)}", i % 50,
                                                                int(df["converted"].iloc[i])) for i in range(150)])
        assert len(matched) == 150 and not unknown
        summary = mon.update_live_performance()
        assert summary["outcomes"] == 150
        assert reg.value("ml_model_performance", **lv, metric="roc_auc", source="live") == pytest.approx(summary["roc_auc"])

        # a reload of the same version: the new instance owns the series, the old one's unload leaves them
        new = metrics.ModelMonitoring("unit-auto", "1.0.0", predictor, options(), registry=reg.families)
        mon.close()
        assert reg.value("ml_model_ready", **lv) == 1.0
        assert metrics.active("unit-auto") == {"1.0.0": new}
        mon = new
    finally:
        mon.close()
    # unload: not ready, drift and performance series gone, counters kept
    assert reg.value("ml_model_ready", **lv) == 0.0
    assert reg.value("ml_feature_drift_psi", **lv, feature="age") is None
    assert reg.value("ml_model_drift_psi", **lv) is None
    assert reg.value("ml_model_performance", **lv, metric="roc_auc", source="training") is None
    assert reg.value("ml_rows_total", **lv) == 150.0
    assert metrics.active("unit-auto") == {}


def test_outcomes_off(predictor):
    reg = Registry()
    mon = metrics.ModelMonitoring("unit-off", "1.0.0", predictor, options(outcomes_capacity=0), registry=reg.families)
    try:
        assert mon.log is None
    finally:
        mon.close()


# ---- predictors/outcomes.py -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quality_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    s = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1).round(2)  # rounded: many ties
    q = quality(s, y, 0.5)
    pred = s >= 0.5
    assert q["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert q["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert q["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
    assert q["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
    assert q["accuracy"] == pytest.approx(accuracy_score(y, pred))


def test_quality_with_one_class_leaves_out_roc_auc():
    assert math.isnan(roc_auc([0.1, 0.9], [1, 1]))
    q = quality([0.1, 0.9], [1, 1], 0.5)
    assert "roc_auc" not in q and q["recall"] == 0.5 and q["precision"] == 1.0


def test_prediction_log_is_shared_through_a_file(tmp_path):
    """Two logs on one file stand for two parallel workers: one scores, the other gets the outcome."""
    path = str(tmp_path / "outcomes.sqlite")
    worker_a, worker_b = PredictionLog(path, capacity=1000), PredictionLog(path, capacity=1000)
    worker_a.record("auto", "1.0.0", "req-1", np.array([0.9, 0.2, 0.7]))
    worker_a.record("auto", "1.1.0", "req-2", np.array([0.4]))
    worker_a.record("auto", "1.0.0", None, np.array([0.5]))  # no id: not remembered
    matched, unknown = worker_b.add_outcomes("auto", [("req-1", 0, 1), ("req-2", 0, 0)])
    assert matched == [] and len(unknown) == 2  # not flushed yet by worker A
    assert worker_a.flush() == 4
    matched, unknown = worker_b.add_outcomes("auto", [("req-1", 0, 1), ("req-1", 2, 0), ("req-2", 0, 0),
                                                      ("req-1", 5, 1), ("req-9", 0, 1)])
    assert {(m.version, m.request_id, m.row, m.score, m.outcome) for m in matched} == {
        ("1.0.0", "req-1", 0, 0.9, 1), ("1.0.0", "req-1", 2, 0.7, 0), ("1.1.0", "req-2", 0, 0.4, 0)}
    assert unknown == [("req-1", 5), ("req-9", 0)]
    # sending an outcome again replaces it
    worker_a.add_outcomes("auto", [("req-1", 2, 1)])
    scores, outcomes = worker_a.recent_outcomes("auto", "1.0.0", 10)
    assert sorted(zip(scores.tolist(), outcomes.tolist())) == [(0.7, 1), (0.9, 1)]
    # other models never match
    assert worker_b.add_outcomes("home", [("req-1", 0, 1)])[0] == []


@pytest.fixture(params=["memory", "sqlite"])
def log(request, tmp_path):
    path = None if request.param == "memory" else str(tmp_path / "log.sqlite")
    log = open_prediction_log(path, capacity=5)
    assert isinstance(log, MemoryPredictionLog if path is None else PredictionLog)
    yield log
    log.close()


def test_prediction_log_matches_replaces_and_forgets(log):
    log.record("auto", "1.0.0", "a", np.array([0.1, 0.2, 0.3]))
    log.flush()
    log.record("auto", "1.0.0", "b", np.array([0.4, 0.5, 0.6, 0.7]))
    log.flush(background=True)  # the SQLite writer thread; matching waits for it
    log.record("auto", "1.1.0", "c", np.array([0.8, 0.9]))
    log.record("auto", "1.1.0", "", np.array([0.5]))  # no id: not remembered
    # capacity 5 rows: the oldest request is gone, the newest is there (the older ones may be,
    # in part: SQLite forgets rows, memory whole requests)
    matched, unknown = log.add_outcomes("auto", [("a", 0, 1), ("c", 0, 1), ("c", 1, 0), ("c", 2, 1), ("zz", 0, 1)])
    assert [(m.version, m.request_id, m.row, m.score, m.outcome) for m in matched] == [
        ("1.1.0", "c", 0, 0.8, 1), ("1.1.0", "c", 1, 0.9, 0)]
    assert unknown == [("a", 0), ("c", 2), ("zz", 0)]
    assert log.add_outcomes("home", [("c", 0, 1)])[0] == []  # other models never match
    log.add_outcomes("auto", [("c", 1, 1)])  # sending an outcome again replaces it
    scores, outcomes = log.recent_outcomes("auto", "1.1.0", 10)
    assert sorted(zip(scores.tolist(), outcomes.tolist())) == [(0.8, 1), (0.9, 1)]
    scores, outcomes = log.recent_outcomes("auto", "1.1.0", 1)
    assert scores.tolist() == [0.9]  # the latest one
    assert log.recent_outcomes("auto", "9.9.9", 10)[0].size == 0


def test_memory_log_counts_rows_not_requests():
    log = MemoryPredictionLog(capacity=4)
    for i in range(10):
        log.record("auto", "1.0.0", f"r{i}", np.array([0.5]))
    log.record("auto", "1.0.0", "r9", np.array([0.1, 0.2]))  # the same id again replaces it
    matched, unknown = log.add_outcomes("auto", [(f"r{i}", 0, 1) for i in range(10)])
    assert [m.request_id for m in matched] == ["r7", "r8", "r9"] and matched[-1].score == 0.1
    store = log._stores[("auto", "1.0.0")]
    assert store.rows == 4
    for i in range(1000):  # a caller that always sends the same id does not grow the log
        log.record("auto", "1.0.0", "same", np.array([0.5]))
    assert len(store.order) < 100 and store.rows == 4


@pytest.mark.parametrize("name", ["home", "health", "life", "claims"])
def test_every_vertical_is_monitored(config, name):
    vertical = config.vertical(name)
    pred = load_predictor(shipped_bundle(name), config)
    reg = Registry()
    lv = {"model_name": f"unit-{name}", "model_version": pred.manifest["version"]}
    mon = metrics.ModelMonitoring(lv["model_name"], lv["model_version"], pred,
                                  options(drift_window=1000, drift_min_rows=500), registry=reg.families)
    try:
        batch = to_batch(generate(vertical, seed=5, rows=1000), vertical)
        raw = {f: batch.columns[f].tolist() for f in vertical.feature_names}
        raw = {f: [None if isinstance(v, float) and math.isnan(v) else v for v in col] for f, col in raw.items()}
        mon.observe("r", pred.predict(raw, 1000))
        decisions = {d: reg.value("ml_decisions_total", **lv, decision=d) for d in metrics.DECISIONS[pred.task]}
        assert sum(decisions.values()) == 1000.0
        assert (reg.value("ml_quoted_price_count", **lv) is None) == (name == "claims")
        psi = {f: reg.value("ml_feature_drift_psi", **lv, feature=f) for f in vertical.feature_names}
        assert all(v is not None and v < 0.1 for v in psi.values()), psi
    finally:
        mon.close()
