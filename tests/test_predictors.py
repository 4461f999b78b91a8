"""predictors/: the feature contract, validation, encoding and business rules, without a server."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from predictors import InputError, load_predictor
from predictors.business import AnomalyScorer, MarketPricing, RiskPricing, confidence, triage
from predictors.encoding import LeadEncoder, normalize
from predictors.spec import ConfigError, parse_config
from training.data import to_batch
from training.synthetic import generate

from .conftest import shipped_bundle

# The API contract of the issue, written out independently of verticals.yaml.
CONTRACT = {
    "auto": ("age driving_years vehicle_age annual_mileage", "vehicle_make vehicle_model usage_type",
             "occupation location"),
    "home": ("property_age square_footage property_value", "construction_type roof_type property_type",
             "address security_features"),
    "health": ("age bmi annual_income dependents", "smoker plan_tier region", "occupation pre_existing_conditions"),
    "life": ("age coverage_amount term_years annual_income", "smoker policy_type health_class", "occupation hobbies"),
    "claims": ("claim_amount policy_tenure_months days_to_report prior_claims_count claimant_age",
               "claim_type incident_type submission_channel", "incident_description"),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_config_matches_the_api_contract(config, name):
    vertical = config.vertical(name)
    for kind, names in zip(("numeric", "categorical", "text"), CONTRACT[name]):
        assert [f.name for f in vertical.features if f.kind == kind] == names.split()
    assert vertical.framework == ("sklearn" if name == "claims" else "lightgbm")


def test_lead_scoring_default_threshold_is_0_65(config):
    assert {config.vertical(v).decision_threshold for v in ("auto", "home", "health", "life")} == {0.65}


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="feature 'x' has kind 'number'"):
        parse_config({"verticals": {"v": {"task": "lead_scoring", "features": [{"name": "x", "kind": "number"}]}}})
    with pytest.raises(ConfigError, match="unknown vertical 'boat'"):
        parse_config({"verticals": {"v": {"task": "lead_scoring", "framework": "lightgbm", "target": "y",
                                          "features": []}}}).vertical("boat")


@pytest.fixture(scope="module")
def auto(config):
    return config.vertical("auto")


@pytest.mark.parametrize("raw, offending, message", [
    ({"colour": ["red"]}, "colour", "unknown input"),
    ({"age": [30, float("nan")]}, "age", "row 1 is nan: numbers must be finite"),
    ({"age": [30.0, float("inf")]}, "age", "finite"),
    ({"age": np.array([30.0, -np.inf])}, "age", "finite"),
    ({"age": [30, "forty"]}, "age", "expected a number"),
    ({"age": [True]}, "age", "expected a number"),
    ({"age": [200]}, "age", "outside the allowed range"),
    ({"age": [30], "vehicle_make": ["bmw", "audi"]}, "vehicle_make", "has 2 rows"),
    ({"age": []}, "age", "empty batch"),
    ({"occupation": [b"\xff\xfe"]}, "occupation", "UTF-8"),
    ({"vehicle_make": [42]}, "vehicle_make", "expected strings"),
])
def test_normalize_refuses_bad_input_naming_it(auto, raw, offending, message):
    with pytest.raises(InputError) as err:
        normalize(auto.features, raw)
    assert err.value.input_name == offending
    assert message in str(err.value)


@pytest.mark.parametrize("bounds, value, shown", [
    ({"min": 0.0}, -1.0, "[0, inf]"),
    ({"max": 10.0}, 11.0, "[-inf, 10]"),
])
def test_one_sided_range_refuses_out_of_range_with_an_input_error(bounds, value, shown):
    from predictors.spec import Feature

    feature = Feature(name="amount", kind="numeric", **bounds)
    with pytest.raises(InputError) as err:  # a 400 on the server, not a TypeError (500) from formatting None
        normalize([feature], {"amount": [5.0, value]})
    assert err.value.input_name == "amount"
    assert f"row 1 is {value:g}, outside the allowed range {shown}" in str(err.value)


def test_required_feature(config):
    claims = config.vertical("claims")
    with pytest.raises(InputError, match="'claim_amount': is required"):
        normalize(claims.features, {"claim_type": ["theft"]})
    with pytest.raises(InputError, match="'claim_amount': is required: row 1 is null"):
        normalize(claims.features, {"claim_amount": [10.0, None]})


def test_missing_values_and_case_insensitive_categories(auto):
    batch = normalize(auto.features, {"age": [30, None], "vehicle_make": ["BMW", "Lada"], "occupation": ["", " nurse "]})
    assert np.isnan(batch.columns["age"][1]) and batch.columns["age"][0] == 30
    assert list(batch.columns["vehicle_make"]) == ["bmw", "lada"]
    assert batch.unseen == {"vehicle_make": 1}
    assert list(batch.columns["occupation"]) == [None, "nurse"]
    assert list(batch.present) == [2.0, 2.0]  # row 0: age, make; row 1: make, occupation
    x = LeadEncoder(auto.features, 16).encode(batch)
    make_col = LeadEncoder(auto.features, 16).columns.index("vehicle_make")
    assert x[0, make_col] == auto.feature("vehicle_make").categories.index("bmw")
    assert np.isnan(x[1, make_col])  # unseen category -> missing for the model


def test_text_hashing_is_stable_and_counts_tokens(auto):
    enc = LeadEncoder(auto.features, 16)
    batch = normalize(auto.features, {"occupation": ["Senior senior TEACHER", "teacher senior senior"]})
    x = enc.encode(batch)
    start = enc.columns.index("occupation__h0")
    block = x[:, start:start + 16]
    assert block[0].sum() == 3 and (block[0] == block[1]).all()  # bag of words: order and case free
    import zlib

    assert block[0, zlib.crc32(b"senior") % 16] >= 2


def test_confidence_is_zero_on_threshold_and_grows_to_one():
    scores = np.array([0.65, 1.0, 0.0, 0.825, 0.325])
    conf = confidence(scores, 0.65, np.full(5, 9.0), 9)
    np.testing.assert_allclose(conf, [0.0, 1.0, 1.0, 0.5, 0.5])
    half = confidence(scores, 0.65, np.full(5, 4.5), 9)
    np.testing.assert_allclose(half, conf / 2)


def test_price_is_base_times_risk_times_market(config):
    predictor = load_predictor(shipped_bundle("health"))
    raw = {"age": [70, 40], "bmi": [42.0, 25.0], "smoker": ["yes", "no"], "plan_tier": ["gold", "silver"]}
    off_peak = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    out = predictor.predict(raw, now=off_peak).outputs
    low = [0.9 if s < 0.3 else 1.0 for s in out["score"]]
    # age 70 -> 1.9, bmi 42 -> 1.45, smoker -> 1.5, gold -> 1.25; second row all 1.0
    expected = [4800.0 * 1.9 * 1.45 * 1.5 * 1.25 * low[0], 4800.0 * low[1]]
    np.testing.assert_allclose(out["price"], np.round(expected, 2))
    assert [json.loads(m)["low_intent_discount"] for m in out["market_factors"]] == low


def test_peak_hours_window_is_utc_and_end_exclusive(config):
    market = MarketPricing(config.market)
    assert market.is_peak(datetime(2026, 1, 5, 17, 0, tzinfo=timezone.utc))
    assert not market.is_peak(datetime(2026, 1, 5, 21, 0, tzinfo=timezone.utc))
    from datetime import timedelta

    assert market.is_peak(datetime(2026, 1, 5, 19, 30, tzinfo=timezone(timedelta(hours=2))))  # 17:30 UTC


def test_risk_bands_ignore_missing_values(config):
    vertical = config.vertical("auto")
    batch = normalize(vertical.features, {"age": [22, None, 80], "usage_type": ["rideshare", None, "personal"]})
    np.testing.assert_allclose(RiskPricing(vertical.pricing["risk"]).factor(batch), [1.45 * 1.4, 1.0, 1.25])


def test_anomaly_score_is_about_uniform_on_training_like_claims(config):
    predictor = load_predictor(shipped_bundle("claims"))
    vertical = config.vertical("claims")
    batch = to_batch(generate(vertical, seed=123, rows=4000), vertical)
    anomaly = AnomalyScorer(predictor.manifest["reference"], predictor.features).score(batch)
    assert 0.0 <= anomaly.min() and anomaly.max() <= 1.0
    # roughly uniform: the features are independent in the generator
    assert 0.4 < np.median(anomaly) < 0.6
    assert 0.0 < (anomaly >= 0.99).mean() < 0.03
    extreme = normalize(vertical.features, {"claim_amount": [5e7], "claim_type": ["spaceship"]})
    assert AnomalyScorer(predictor.manifest["reference"], predictor.features).score(extreme)[0] == 1.0


def test_triage_rules(config):
    rules = config.vertical("claims").triage
    got = triage(np.array([0.95, 0.95, 0.1, 0.5, 0.1]), np.array([0.1, 0.995, 0.2, 0.2, 0.999]), rules)
    assert got == ["ML_APPROVED", "ML_REVIEW", "ML_REJECTED", "ML_REVIEW", "ML_REVIEW"]


def test_settlement_is_expected_payout(config):
    predictor = load_predictor(shipped_bundle("claims"))
    out = predictor.predict({"claim_amount": [1000.0, 1000.0], "claim_type": ["fire", None]}).outputs
    ratio = np.array([0.9, config.vertical("claims").triage["default_payout_ratio"]])
    np.testing.assert_allclose(out["settlement_estimate"], np.round(out["score"] * 1000.0 * ratio, 2))


def test_threshold_override_changes_decisions_only(config):
    base = load_predictor(shipped_bundle("life"))
    strict = load_predictor(shipped_bundle("life"), threshold=0.99)
    raw = {"age": [35, 45], "policy_type": ["term", "whole"]}
    a, b = base.predict(raw).outputs, strict.predict(raw).outputs
    np.testing.assert_array_equal(a["score"], b["score"])
    assert b["decision"] == ["reject", "reject"]


def test_lead_scoring_bundle_loads_without_importing_scikit_learn():
    # a fresh interpreter: this test process has imported scikit-learn already
    import subprocess
    import sys

    code = ("import sys\n"
            "from predictors import load_predictor\n"
            "from predictors.bundle import MODEL_FILES\n"
            f"auto = load_predictor({str(shipped_bundle('auto'))!r})\n"
            "print('sklearn' in sys.modules, 'scipy.stats' in sys.modules)\n"
            f"claims = load_predictor({str(shipped_bundle('claims'))!r})\n"  # served natively: claims_native.py
            "print('sklearn' in sys.modules, claims.native is not None)\n"
            "print(type(claims.model).__module__.split('.')[0])\n")  # scikit-learn still importable after
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[:3] == ["False False", "False True", "sklearn"]
