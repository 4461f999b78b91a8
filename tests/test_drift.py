"""predictors/drift.py: PSI and KS of a sliding window of live rows against a bundle's reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from predictors.drift import PSI_EPSILON, DriftMonitor, ks_statistic, psi
from predictors.encoding import normalize
from training.data import to_batch
from training.synthetic import generate
from training.train import reference_stats

from .conftest import shipped_bundle


@pytest.fixture(scope="module")
def auto(config):
    return config.vertical("auto")


@pytest.fixture(scope="module")
def reference_data(auto):
    """A synthetic auto table, its batch and the reference statistics computed from it."""
    df = generate(auto, seed=11, rows=4000)
    batch = to_batch(df, auto)
    return df, batch, reference_stats(batch, auto)


def monitor_for(vertical, reference, window=1000, min_rows=100):
    return DriftMonitor(vertical.features, reference, window=window, min_rows=min_rows)


def batch_of(vertical, rows: dict[str, list]):
    n = len(next(iter(rows.values())))
    return normalize(vertical.features, rows, n)


def test_psi_formula():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # sum (a - e) ln(a / e), written out
    a, e = np.array([0.2, 0.3, 0.5]), np.array([0.3, 0.3, 0.4])
    assert psi(a, e) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    # an empty bin is clipped at eps instead of giving infinity
    assert psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx((PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
                                                         + 0.5 * math.log(2.0))


def test_psi_is_zero_for_the_reference_distribution_itself(auto, reference_data):
    """The very rows the reference was computed from: every PSI ~0 (reference shares are rounded)."""
    df, batch, reference = reference_data
    monitor = monitor_for(auto, reference, window=len(df))
    monitor.update(batch)
    report = monitor.compute()
    assert report.rows == len(df)
    assert set(report.psi) == set(auto.feature_names)
    assert set(report.ks) == {f.name for f in auto.features if f.kind == "numeric"}
    for name, value in report.psi.items():
        assert value == pytest.approx(0.0, abs=1e-4), name
    for name, value in report.ks.items():
        assert value <= 0.011, name  # the reference CDF is known at 1 % resolution
    assert report.model_psi == max(report.psi.values())


def test_fresh_sample_of_the_same_distribution_stays_far_below_the_alert(auto, reference_data):
    _, _, reference = reference_data
    monitor = monitor_for(auto, reference)
    monitor.update(to_batch(generate(auto, seed=99, rows=1000), auto))
    report = monitor.compute()
    assert report.model_psi < 0.05, report.psi
    assert max(report.ks.values()) < 0.06, report.ks


def test_shipped_bundle_reference_works(auto):
    import json

    manifest = json.loads((shipped_bundle("auto") / "manifest.json").read_text())
    monitor = monitor_for(auto, manifest["reference"])
    monitor.update(to_batch(generate(auto, seed=5, rows=1000), auto))
    assert monitor.compute().model_psi < 0.05


def test_psi_and_ks_rise_with_the_shift(auto, reference_data):
    df, _, reference = reference_data
    psis, kss = [], []
    for shift in (0, 3, 8, 15, 30):
        shifted = df.copy()
        shifted["age"] = np.clip(shifted["age"] + shift, 16, 110)
        monitor = monitor_for(auto, reference, window=len(df))
        monitor.update(to_batch(shifted, auto))
        report = monitor.compute()
        psis.append(report.psi["age"])
        kss.append(report.ks["age"])
        # the other features are untouched
        assert max(v for k, v in report.psi.items() if k != "age") == pytest.approx(0.0, abs=1e-4)
    assert psis == sorted(psis) and kss == sorted(kss)
    assert psis[0] < 0.001 and psis[-1] > 1.0
    assert kss[-1] > 0.5


def test_missing_values_are_a_bin_of_their_own(auto, reference_data):
    _, _, reference = reference_data
    monitor = monitor_for(auto, reference, window=200, min_rows=200)
    rows = to_batch(generate(auto, seed=3, rows=200), auto)
    rows.columns["annual_mileage"][:60] = np.nan  # 30 % missing instead of ~5 %
    monitor.update(rows)
    report = monitor.compute()
    assert report.psi["annual_mileage"] > 0.25
    assert report.psi["age"] < 0.1


def test_unseen_categories_are_counted(auto, reference_data):
    _, _, reference = reference_data
    df = generate(auto, seed=4, rows=500)
    monitor = monitor_for(auto, reference, window=500)
    monitor.update(to_batch(df, auto))
    before = monitor.compute()
    assert before.unseen_share["vehicle_make"] == 0.0

    makes = df["vehicle_make"].to_numpy(dtype=object).copy()
    makes[:50] = "rivian"  # 10 % unseen (lower-cased on validation like any category)
    makes[50:60] = "Lucid"
    df["vehicle_make"] = makes
    monitor = monitor_for(auto, reference, window=500)
    monitor.update(to_batch(df, auto))
    after = monitor.compute()
    assert after.unseen_share["vehicle_make"] == pytest.approx(60 / 500)
    assert after.psi["vehicle_make"] > 0.25 > before.psi["vehicle_make"]


def test_window_slides(auto, reference_data):
    _, _, reference = reference_data
    normal = [to_batch(generate(auto, seed=s, rows=300), auto) for s in (21, 22)]
    df = generate(auto, seed=23, rows=300)
    df["usage_type"] = "rideshare"  # flip the category distribution
    shifted = to_batch(df, auto)

    monitor = monitor_for(auto, reference, window=300, min_rows=300)
    monitor.update(normal[0])
    assert monitor.compute().psi["usage_type"] < 0.1
    monitor.update(shifted)  # the whole window is now shifted
    assert monitor.compute().psi["usage_type"] > 1.0
    monitor.update(normal[1])  # and slides back out again
    assert monitor.compute().psi["usage_type"] < 0.1
    assert monitor.rows == 300 and monitor.rows_seen == 900

    # partial overwrite: 150 shifted rows of 300 -> clearly drifted, less than fully shifted
    monitor.update(to_batch(df.iloc[:150], auto))
    half = monitor.compute().psi["usage_type"]
    assert 0.25 < half < monitor_psi_full(auto, reference, shifted)


def monitor_psi_full(auto, reference, batch):
    m = monitor_for(auto, reference, window=batch.n, min_rows=batch.n)
    m.update(batch)
    return m.compute().psi["usage_type"]


def test_ring_buffer_keeps_the_most_recent_rows_in_small_and_large_batches(auto, reference_data):
    _, _, reference = reference_data
    monitor = monitor_for(auto, reference, window=7, min_rows=1)
    ages = [float(a) for a in range(20, 45)]
    # single rows, a batch wrapping around the end, a batch larger than the window
    ring = monitor.numeric[0].ring
    for absorb_each in (True, False):  # copied into the ring per batch, or many pending batches at once
        for chunk in ([ages[0]], [ages[1]], ages[2:6], ages[6:11], ages[11:25]):
            monitor.update(batch_of(auto, {"age": chunk}))
            if absorb_each:
                monitor.absorb()
        monitor.absorb()
        assert sorted(ring.values().tolist()) == ages[-7:]
        monitor.update(batch_of(auto, {"age": ages[:3]}))
        monitor.update(batch_of(auto, {"age": ages[3:4]}))
        monitor.absorb()
        assert sorted(ring.values().tolist()) == sorted(ages[-3:] + ages[:4])
    # pending batches that newer rows pushed out of the window are dropped on the request path
    for chunk in (ages[:5], ages[5:7], ages[7:14], ages[14:15]):
        monitor.update(batch_of(auto, {"age": chunk}))
    assert [b.n for b in monitor._pending] == [7, 1]
    monitor.absorb()
    assert sorted(ring.values().tolist()) == ages[8:15]


def test_nothing_is_reported_before_min_rows(auto, reference_data):
    _, _, reference = reference_data
    monitor = monitor_for(auto, reference, window=1000, min_rows=100)
    monitor.update(to_batch(generate(auto, seed=8, rows=99), auto))
    assert monitor.compute() is None
    monitor.update(batch_of(auto, {"age": [30.0]}))
    assert monitor.compute().rows == 100


def test_ks_of_a_window_without_values_is_nan(auto, reference_data):
    _, _, reference = reference_data
    monitor = monitor_for(auto, reference, window=10, min_rows=10)
    monitor.update(batch_of(auto, {"vehicle_make": ["bmw"] * 10}))
    report = monitor.compute()
    assert math.isnan(report.ks["age"])
    assert report.psi["age"] > 1.0  # all missing: the missing bin carries the drift


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0, 8.0])
def test_ks_matches_the_two_sample_statistic(kind, shift):
    """Against scipy's two-sample KS on the full reference sample the quantiles came from."""
    rng = np.random.default_rng(7)
    if kind == "continuous":
        reference = rng.normal(40.0, 12.0, 200_000)
        live = rng.normal(40.0 + shift, 12.0, 1000)
    else:
        reference = rng.poisson(3.0, 200_000).astype(np.float64)
        live = rng.poisson(3.0 + shift / 2, 1000).astype(np.float64)
    quantiles = np.quantile(reference, np.linspace(0.0, 1.0, 101))
    expected = ks_2samp(live, reference).statistic
    assert ks_statistic(live, quantiles) == pytest.approx(expected, abs=0.012)


def test_window_must_hold_a_row(auto):
    with pytest.raises(ValueError, match="at least 1 row"):
        DriftMonitor(auto.features, {}, window=0)
