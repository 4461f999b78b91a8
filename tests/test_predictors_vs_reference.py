"""predictors/ (Normalizer, LeadEncoder caches, BoosterScorer, RiskPricing, vectorized pricing, the
prediction cache, compiled trees) against the plain row-by-row reference (tests/reference.py),
on generated rows of every vertical; batched and unbatched calls agree. Not timed."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone

import numpy as np
import pytest

from predictors import load_predictor
from predictors.business import RiskPricing, _apply_rule
from predictors.cache import PredictionCache, request_key
from predictors.encoding import normalize
from .reference import reference_claims, reference_lead
from predictors.scoring import BoosterScorer, lleaves_available, max_difference, probe_matrix
from predictors.spec import NUMERIC
from training.synthetic import generate

from .conftest import shipped_bundle

ROWS = 2000
PEAK = datetime(2026, 11, 23, 18, 30, tzinfo=timezone.utc)
OFF_PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def raw_rows(vertical, rows: int = ROWS, seed: int = 5) -> list[dict]:
    """Generated rows as a client sends them: missing values as None, integral numbers as int, and
    some noise the server must absorb: upper-case and padded categories, unseen categories, padded
    or empty text."""
    df = generate(vertical, seed=seed, rows=rows)
    rng = random.Random(seed)
    out = []
    for record in df.to_dict("records"):
        row = {}
        for f in vertical.features:
            v = record[f.name]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = None
            elif f.kind == NUMERIC:
                v = int(v) if float(v).is_integer() and rng.random() < 0.5 else float(v)
            else:
                r = rng.random()
                if r < 0.05:
                    v = f"  {v.upper()} "
                elif r < 0.08 and f.kind != "text":
                    v = "unheard-of"
                elif r < 0.10:
                    v = "" if f.kind != "text" else "   "
            row[f.name] = v
        out.append(row)
    return out


def columns(rows: list[dict], features) -> dict[str, list]:
    return {f.name: [r[f.name] for r in rows] for f in features}


def assert_same(fast: dict, ref: dict, exact: bool = True) -> None:
    for name, expected in ref.items():
        got = fast[name]
        got = got.tolist() if hasattr(got, "tolist") else list(got)
        if exact or isinstance(expected[0], str):
            assert got == expected, f"output {name} differs"
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=f"output {name}")


@pytest.fixture(scope="module")
def predictors_by_name(verticals):
    return {name: load_predictor(shipped_bundle(name)) for name in verticals}


@pytest.mark.parametrize("name", ["auto", "home", "health", "life"])
@pytest.mark.parametrize("now", [PEAK, OFF_PEAK], ids=["peak", "off-peak"])
def test_lead_fast_path_equals_reference(predictors_by_name, name, now):
    predictor = predictors_by_name[name]
    rows = raw_rows(predictor.vertical)
    expected = reference_lead(predictor, rows, now)
    fast = predictor.predict(columns(rows, predictor.features), now=now).outputs
    assert_same(fast, expected)


def test_claims_fast_path_equals_reference(predictors_by_name):
    predictor = predictors_by_name["claims"]
    rows = raw_rows(predictor.vertical)
    expected = reference_claims(predictor, rows)
    fast = predictor.predict(columns(rows, predictor.features)).outputs
    assert_same(fast, expected, exact=False)
    assert fast["decision"] == expected["decision"]


@pytest.mark.parametrize("name", ["auto", "home", "health", "life", "claims"])
def test_batched_and_unbatched_calls_agree(predictors_by_name, name):
    predictor = predictors_by_name[name]
    # claims: scikit-learn takes ~5 ms a call whatever the size, so fewer rows one at a time
    rows = raw_rows(predictor.vertical, rows=150 if name == "claims" else 600, seed=9)
    whole = predictor.predict(columns(rows, predictor.features), now=PEAK).outputs
    for size in (1, 7, 32, 65):  # one row (single-row C API), small (scalar checks), larger (numpy checks)
        parts: dict[str, list] = {k: [] for k in whole}
        for start in range(0, len(rows), size):
            out = predictor.predict(columns(rows[start:start + size], predictor.features), now=PEAK).outputs
            for k, v in out.items():
                parts[k].extend(v.tolist() if hasattr(v, "tolist") else v)
        for k, v in whole.items():
            assert parts[k] == (v.tolist() if hasattr(v, "tolist") else list(v)), f"{name} {k} at size {size}"


def test_normalize_fast_and_general_paths_agree(predictors_by_name):
    predictor = predictors_by_name["auto"]
    rows = raw_rows(predictor.vertical, rows=300, seed=3)
    small = [predictor.normalize(columns(rows[i:i + 1], predictor.features)) for i in range(len(rows))]
    big = predictor.normalize(columns(rows, predictor.features))
    for f in predictor.features:
        got = np.concatenate([b.columns[f.name] for b in small])
        if f.kind == NUMERIC:
            np.testing.assert_array_equal(got, big.columns[f.name])
        else:
            assert got.tolist() == big.columns[f.name].tolist()
    assert np.concatenate([b.present for b in small]).tolist() == big.present.tolist()
    assert sum(b.unseen.get("vehicle_make", 0) for b in small) == big.unseen.get("vehicle_make", 0)


def test_many_bytes_rows_normalize_like_their_strings(predictors_by_name):
    # gRPC raw contents carry BYTES as bytes: the per-distinct-value path decodes them like strings
    predictor = predictors_by_name["auto"]
    cols = columns(raw_rows(predictor.vertical, rows=300, seed=4), predictor.features)
    as_bytes = {name: [v.encode() if isinstance(v, str) else v for v in values] for name, values in cols.items()}
    a, b = predictor.normalize(cols), predictor.normalize(as_bytes)
    for f in predictor.features:
        if f.kind == NUMERIC:
            np.testing.assert_array_equal(a.columns[f.name], b.columns[f.name])
        else:
            assert a.columns[f.name].tolist() == b.columns[f.name].tolist()
    assert a.present.tolist() == b.present.tolist() and a.unseen == b.unseen


def test_invalid_utf8_in_many_rows_names_the_row(predictors_by_name):
    from predictors import InputError

    values = [b"nurse"] * 300
    values[123] = b"\xff\xfe"
    with pytest.raises(InputError, match="'occupation': row 123 is not valid UTF-8"):
        predictors_by_name["auto"].normalize({"occupation": values})


@pytest.mark.parametrize("values, message", [
    ([True], "row 0 is True: expected a number or null"),
    ([float("nan")], "row 0 is nan: numbers must be finite"),
    ([float("inf")], "row 0 is inf: numbers must be finite"),
    ([200], "row 0 is 200, outside the allowed range"),
    (["30"], "row 0 is '30': expected a number or null"),
])
def test_scalar_checks_give_the_general_errors(predictors_by_name, values, message):
    from predictors import InputError

    with pytest.raises(InputError, match=message):
        predictors_by_name["auto"].normalize({"age": values})


def test_risk_tables_equal_the_rule_definition(config):
    rules = [
        {"feature": "age", "bands": [[None, 25, 1.45], [25, 70, 1.0], [70, None, 1.25]]},
        {"feature": "annual_mileage", "bands": [[5000, 8000, 0.9], [20000, 30000, 1.2]]},  # gaps
        {"feature": "driving_years", "bands": [[0, 10, 1.1], [5, 20, 0.95]]},  # overlapping: row-wise
        {"feature": "usage_type", "categories": {"business": 1.2, "rideshare": 1.4}},
        {"feature": "vehicle_make", "categories": {"lada": 3.0}},  # not a category: row-wise
    ]
    vertical = config.vertical("auto")
    batch = normalize(vertical.features, {
        "age": [16, 24.999, 25, 69, 70, 110, None, 40],
        "annual_mileage": [0, 5000, 7999, 8000, 19999, 20000, 30000, None],
        "driving_years": [0, 5, 9, 10, 19, 20, None, 7],
        "usage_type": ["business", "RIDESHARE", None, "personal", "boat", "commute", "business", ""],
        "vehicle_make": ["lada", "bmw", None, "Lada", "x", "tesla", "ford", "lada"],
    })
    expected = np.ones(batch.n)
    for rule in rules:
        _apply_rule(rule, batch, expected)
    assert RiskPricing(rules, vertical.features).factor(batch).tolist() == expected.tolist()


def test_booster_scorer_equals_booster_predict(predictors_by_name):
    predictor = predictors_by_name["auto"]
    x = probe_matrix(predictor.model, rows=512)
    assert max_difference(BoosterScorer(predictor.model), lambda a: predictor.model.predict(a, num_threads=1), x) == 0.0


def test_prediction_cache_returns_the_same_outputs_and_counts(predictors_by_name, config):
    predictor = load_predictor(shipped_bundle("auto"))
    rows = raw_rows(predictor.vertical, rows=50, seed=4)
    cache = predictor.enable_cache(ttl_seconds=60)
    first = [predictor.predict(columns([r], predictor.features), now=PEAK).outputs for r in rows]
    again = [predictor.predict(columns([r], predictor.features), now=PEAK).outputs for r in rows]
    assert cache.misses == len(rows) and cache.hits == len(rows)
    assert [o["price"].tolist() for o in first] == [o["price"].tolist() for o in again]
    off_peak = predictor.predict(columns([rows[0]], predictor.features), now=OFF_PEAK).outputs
    assert cache.misses == len(rows) + 1  # the market state is part of the key
    assert off_peak["market_factors"] != first[0]["market_factors"]
    uncached = predictors_by_name["auto"].predict(columns([rows[0]], predictor.features), now=OFF_PEAK).outputs
    assert off_peak["price"].tolist() == uncached["price"].tolist()


def test_prediction_cache_ttl_size_and_unsafe_keys():
    clock = [0.0]
    cache = PredictionCache(10, max_entries=2, clock=lambda: clock[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # "b" is the least recently used
    assert cache.get("b") is None and cache.get("c") == 3
    clock[0] = 10.0
    assert cache.get("a") is None  # expired
    assert cache.hits == 2 and cache.misses == 2 and cache.hit_ratio == 0.5
    names = ("age", "occupation")
    assert request_key(names, {"age": [1]}, 1, None) != request_key(names, {"age": [True]}, 1, None)  # True == 1
    assert request_key(names, {"occupation": ["x"]}, 1, None) != request_key(names, {"occupation": [b"x"]}, 1, None)
    assert request_key(names, {"colour": ["red"]}, 1, None) is None
    assert request_key(names, {"age": [[1]]}, 1, None) is None


def test_invalid_requests_are_never_cached():
    predictor = load_predictor(shipped_bundle("auto"))
    cache = predictor.enable_cache(ttl_seconds=60)
    from predictors import InputError

    for _ in range(2):
        with pytest.raises(InputError):
            predictor.predict({"age": [5]})
    assert len(cache) == 0


@pytest.mark.skipif(not lleaves_available(), reason="lleaves not installed (optional: compiled trees)")
def test_compiled_trees_equal_lightgbm_within_1e_9(tmp_path):
    predictor = load_predictor(shipped_bundle("auto"))
    predictor.use_compiled_trees(tmp_path, background=False)
    assert predictor.scorer.name == "lleaves"
    assert not any(p.is_relative_to(shipped_bundle("auto")) for p in tmp_path.rglob("*.o"))
    rows = raw_rows(predictor.vertical, rows=1000, seed=8)
    expected = reference_lead(predictor, rows, PEAK)
    fast = predictor.predict(columns(rows, predictor.features), now=PEAK).outputs
    np.testing.assert_allclose(fast["score"], expected["score"], rtol=0, atol=1e-9)
    assert fast["decision"] == expected["decision"]


def test_compiled_trees_cache_falls_back_to_the_temporary_folder(tmp_path, monkeypatch):
    from predictors.scoring import default_cache_dir

    readonly = tmp_path / "readonly-home"
    readonly.write_text("a file: nothing can be created under it, like a read-only root")
    monkeypatch.setenv("XDG_CACHE_HOME", str(readonly))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert default_cache_dir() == tmp_path / "tmp" / "insurance-serving" / "compiled"


@pytest.mark.skipif(not lleaves_available(), reason="lleaves not installed (optional: compiled trees)")
def test_compiled_trees_are_reused_after_a_restart(tmp_path, monkeypatch):
    from predictors import scoring

    first = load_predictor(shipped_bundle("auto"))
    first.use_compiled_trees(tmp_path, background=False)
    assert first.scorer.name == "lleaves"
    monkeypatch.setattr(scoring, "compile_to", None)  # a second compile would fail
    monkeypatch.setattr("predictors.predictor.compile_in_subprocess", None)
    restarted = load_predictor(shipped_bundle("auto"))
    assert restarted.use_compiled_trees(tmp_path) is None  # no background compile: loaded at once
    assert restarted.scorer.name == "lleaves"
