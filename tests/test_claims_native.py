"""The claims pipeline served without scikit-learn (predictors/claims_native.py): the same numbers
as the pipeline (within 1e-9) on the shipped bundle and on a tiny one trained here, no
scikit-learn/SciPy/pandas in the serving process, and the pipeline whenever the cache is unusable."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from sklearn.utils import murmurhash3_32 as sk_murmurhash3_32

from predictors import claims_native, load_predictor
from predictors.claims_native import NativeUnavailable, hash_index, murmurhash3_32, pipeline_spec
from predictors.encoding import claims_frame
from predictors.examples import load as load_examples
from predictors.reasons import Explainer, ReasonsOptions

from .conftest import shipped_bundle

TOL = 1e-9


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("claims-cache")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, config):
    """A claims bundle trained here with training's own functions: few, small, odd trees."""
    from training.bundle import write_bundle
    from training.synthetic import generate
    from training.train import train_vertical

    vertical = config.vertical("claims")
    df = generate(vertical, seed=5, rows=1500)
    result = train_vertical(df, vertical, config, seed=5,
                            params={"max_iter": 12, "max_leaf_nodes": 9, "min_samples_leaf": 4})
    return write_bundle(tmp_path_factory.mktemp("tiny"), vertical, "1.0.0", result, {"data_source": "test"})


@pytest.fixture(scope="module", params=["shipped", "tiny"])
def pair(request, tiny_bundle, cache_dir, config):
    """(native predictor, pipeline predictor) of one bundle."""
    folder = shipped_bundle("claims") if request.param == "shipped" else tiny_bundle
    native = load_predictor(folder, config, cache_dir=cache_dir)
    assert native.native is not None, "the native path was not installed"
    return native, load_predictor(folder, config, native=False)


def odd_rows() -> dict[str, list]:
    """The example rows of the vertical plus missing values, unknown categories, odd and repeated texts."""
    rows = [dict(r) for r in load_examples("claims")["rows"]]
    base = dict(rows[0])
    texts = ["flood flood flood flood water_damage", "FLOOD Flood fLoOd", "", "   ", None, "façade 東京 naïve",
             "a__b 0 00 000 x_1 --- rear_ended rear_ended", "\u212aelvin ﬁre", "!!!", "cash " * 40]
    for i, text in enumerate(texts):
        rows.append({**base, "incident_description": text, "claim_type": ["Theft", "never_seen", None][i % 3],
                     "policy_tenure_months": None if i % 2 else base.get("policy_tenure_months"),
                     "claimant_age": None if i % 3 == 0 else 16 + i, "days_to_report": [0, 45, 3650][i % 3]})
    names = sorted({k for r in rows for k in r})
    return {name: [r.get(name) for r in rows] for name in names}


@pytest.fixture(scope="module")
def batches(pair, cache_dir):
    native, pipeline = pair
    doc = json.loads(claims_native.cache_path(native.manifest, cache_dir, claims_native.sklearn_version()).read_text())
    probe = doc["probe"]["columns"]
    return [native.normalize(probe), native.normalize(odd_rows())]


# ---- murmurhash --------------------------------------------------------------------------------

def test_murmurhash3_equals_scikit_learns():
    rng = np.random.default_rng(0)
    alphabet = list("abcxyz019_ -") + ["é", "ü", "東", "京", "😀", "\u212a", "ß", "\x00"]
    keys = ["", "a", "ab", "abc", "abcd", "abcde", "water_damage", "rear_ended", "façade", "東京", "😀" * 3]
    keys += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 19)))) for _ in range(3000)]
    for seed in (0, 1, 42, 2**32 - 1):
        for key in keys:
            assert murmurhash3_32(key, seed) == sk_murmurhash3_32(key, seed=seed), (key, seed)
    assert murmurhash3_32(b"bytes key") == sk_murmurhash3_32(b"bytes key")


def test_hash_index_of_the_lowest_int32_is_abs_modulo():
    for n in (1, 3, 64, 1000, 2**20):
        assert hash_index(-2**31, n) == 2**31 % n
        assert hash_index(-5, n) == 5 % n


# ---- same numbers as the pipeline --------------------------------------------------------------

def test_transform_equals_the_column_transformer(pair, batches):
    native, pipeline = pair
    for batch in batches:
        expected = pipeline.model[0].transform(claims_frame(batch, pipeline.features))
        np.testing.assert_array_equal(native.native.transform(batch), expected)


def test_scores_equal_the_pipeline_on_probe_and_odd_rows(pair, batches):
    native, pipeline = pair
    for batch in batches:
        ours = native.scores(batch)
        theirs = pipeline.model.predict_proba(claims_frame(batch, pipeline.features))[:, 1]
        assert np.max(np.abs(ours - theirs)) <= TOL
        raw = pipeline.model.decision_function(claims_frame(batch, pipeline.features))
        assert np.max(np.abs(native.native.raw_score(batch) - raw)) <= TOL


def test_predictions_equal_the_pipelines_row_by_row(pair):
    native, pipeline = pair
    raw = odd_rows()
    n = len(raw["claim_amount"])
    for i in range(n):
        row = {k: v[i:i + 1] for k, v in raw.items()}
        a, b = native.predict(row).outputs, pipeline.predict(row).outputs
        assert abs(a["score"][0] - b["score"][0]) <= TOL
        assert a["decision"] == b["decision"]
        assert abs(a["settlement_estimate"][0] - b["settlement_estimate"][0]) <= 0.01


def test_reasons_equal_the_pipeline_paths(pair, batches):
    native, pipeline = pair
    ours, theirs = Explainer(native, ReasonsOptions()), Explainer(pipeline, ReasonsOptions())
    assert ours.booster is native.native.booster and theirs.booster is not ours.booster
    for batch in batches:
        c1, b1 = ours.contributions(batch)
        c2, b2 = theirs.contributions(batch)
        assert np.max(np.abs(c1 - c2)) <= TOL and np.max(np.abs(b1 - b2)) <= TOL
        assert ours.verify(batch) <= 1e-6


def test_groups_are_the_pipelines(pair):
    from predictors.reasons import pipeline_groups

    native, pipeline = pair
    np.testing.assert_array_equal(native.native.groups, pipeline_groups(pipeline.model[0], pipeline.features))


# ---- no scikit-learn in the server -------------------------------------------------------------

def test_serving_process_imports_no_scikit_learn_scipy_or_pandas(cache_dir):
    code = f"""
import json, sys
from predictors import load_predictor
from predictors.examples import v2_request
from predictors.reasons import Reasons, ReasonsOptions
p = load_predictor({str(shipped_bundle('claims'))!r}, cache_dir={str(cache_dir)!r})
raw = {{t['name']: t['data'] for t in v2_request('claims')['inputs']}}
prediction = p.predict(raw)
texts = Reasons(p, ReasonsOptions()).compute(prediction, raw, 3)
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'sklearn', 'scipy', 'pandas', 'lightgbm'}})
print(json.dumps({{'heavy': heavy, 'native': p.native is not None, 'reasons': len(texts)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"heavy": [], "native": True, "reasons": 3}


# ---- the cache: warm, cold, tampered -----------------------------------------------------------

def _spy_exports(monkeypatch):
    calls = []
    real = claims_native.export_in_subprocess

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(claims_native, "export_in_subprocess", spy)
    return calls


def test_cold_cache_exports_once_then_warm_cache_spawns_no_child(tmp_path, config, monkeypatch):
    calls = _spy_exports(monkeypatch)
    folder = shipped_bundle("claims")
    first = load_predictor(folder, config, cache_dir=tmp_path)
    assert first.native is not None and len(calls) == 1 and len(list(tmp_path.glob("claims-native-*.json"))) == 1

    def no_child(*args, **kwargs):
        raise AssertionError(f"a subprocess was spawned: {args}")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    second = load_predictor(folder, config, cache_dir=tmp_path)
    assert second.native is not None and len(calls) == 1
    assert second._model is None  # the skops file was not loaded


def _tamper(doc, what):
    if what == "fill":
        doc["spec"]["numeric"]["fill"][1] += 500.0
    elif what == "token_pattern":
        doc["spec"]["text"][0]["token_pattern"] = "[a-z]+"
    elif what == "expected":
        doc["probe"]["expected"][7] += 1e-6
    elif what == "trees":
        lines = doc["trees"].split("\n")
        i = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
        lines[i] = "leaf_value=" + " ".join(repr(float(v) + 0.5) for v in lines[i].split("=")[1].split())
        doc["trees"] = "\n".join(lines)
    elif what == "categories":
        cats = doc["spec"]["onehot"][0]["categories"]
        cats[0], cats[1] = cats[1], cats[0]


@pytest.mark.parametrize("what", ["fill", "token_pattern", "expected", "trees", "categories", "truncated"])
def test_tampered_cache_is_refused_and_the_pipeline_serves(tmp_path, config, cache_dir, caplog, what):
    folder = shipped_bundle("claims")
    good = claims_native.cache_path(load_predictor(folder, config, cache_dir=cache_dir).manifest, cache_dir,
                                    claims_native.sklearn_version())
    target = tmp_path / good.name
    if what == "truncated":
        target.write_text(good.read_text()[:5000])
    else:
        doc = json.loads(good.read_text())
        _tamper(doc, what)
        target.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="predictors.claims_native"):
        p = load_predictor(folder, config, cache_dir=tmp_path)
    assert p.native is None and "serving the scikit-learn pipeline in-process" in caplog.text
    raw = odd_rows()
    reference = load_predictor(folder, config, native=False).predict(raw).outputs["score"]
    np.testing.assert_array_equal(p.predict(raw).outputs["score"], reference)


def test_failed_export_falls_back_to_the_pipeline_with_the_childs_reason(tmp_path, config, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="predictors.claims_native"):
        p = load_predictor(shipped_bundle("claims"), config, cache_dir=blocker)
    assert p.native is None and "failed (exit 1): FileExistsError" in caplog.text
    assert type(p.model).__module__.startswith("sklearn.")


def test_without_scikit_learn_the_export_is_not_tried(tmp_path, config, caplog, monkeypatch):
    calls = _spy_exports(monkeypatch)
    monkeypatch.setattr(claims_native, "sklearn_version", lambda: None)  # stands for an image without it
    with caplog.at_level(logging.WARNING, logger="predictors.claims_native"):
        p = load_predictor(shipped_bundle("claims"), config, cache_dir=tmp_path)
    assert p.native is None and not calls and "scikit-learn is not installed" in caplog.text


def test_a_pipeline_of_another_shape_is_named_in_the_refusal(pair):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    _, pipeline = pair
    other = Pipeline([("preprocess", pipeline.model[0]), ("scale", StandardScaler()), ("model", pipeline.model[1])])
    with pytest.raises(NativeUnavailable, match=r"steps \['ColumnTransformer', 'StandardScaler', "
                                                r"'HistGradientBoostingClassifier'\]"):
        pipeline_spec(other, pipeline.features)


def test_export_command_names_what_it_cannot_export(tmp_path, capsys):
    assert claims_native.main(["export", str(shipped_bundle("auto")), str(tmp_path)]) == 1
    assert "framework 'lightgbm'; the native path exports sklearn bundles" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
