"""predictors/lgbm.py (LightGBM's C library without the lightgbm package) against the lightgbm
package itself, and compiled trees loaded as a shared library (no LLVM in the serving process):
equal outputs, the cache's checks, what a serving process imports. Not timed."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from predictors import lgbm, load_predictor
from predictors.scoring import (CompiledScorer, SharedLibraryScorer, expectations_path, library_path, linker,
                                lleaves_available, probe_matrix)

from .conftest import ROOT, shipped_bundle

AUTO_MODEL = shipped_bundle("auto") / "model.txt"
needs_compiler = pytest.mark.skipif(not lleaves_available() or linker() is None,
                                    reason="lleaves (optional) or a linker (ld/cc) missing")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small binary model with a categorical feature and missing values, trained here."""
    import lightgbm

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    x[:, 3] = rng.integers(0, 6, size=400)
    x[rng.random(size=x.shape) < 0.1] = np.nan
    y = ((np.nan_to_num(x[:, 0]) + (x[:, 3] == 2) + rng.normal(scale=0.5, size=400)) > 0.5).astype(int)
    data = lightgbm.Dataset(x, y, categorical_feature=[3], params={"verbose": -1})
    booster = lightgbm.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1,
                              "min_data_in_leaf": 5}, data, num_boost_round=20)
    path = tmp_path_factory.mktemp("tiny") / "model.txt"
    booster.save_model(str(path))
    return path


@pytest.fixture(params=["auto", "tiny"])
def model_file(request, tiny_model) -> Path:
    return AUTO_MODEL if request.param == "auto" else tiny_model


@pytest.mark.parametrize("kind", [{}, {"raw_score": True}, {"pred_contrib": True}], ids=["normal", "raw", "contrib"])
def test_binding_predicts_bitwise_like_the_lightgbm_package(model_file, kind):
    import lightgbm

    text = model_file.read_text(encoding="utf-8")
    ours, theirs = lgbm.Booster(model_str=text), lightgbm.Booster(model_str=text)
    x = probe_matrix(theirs)
    got, expected = ours.predict(x, num_threads=1, **kind), theirs.predict(x, num_threads=1, **kind)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert got.tobytes() == expected.tobytes()


def test_binding_dumps_the_same_model(model_file):
    import lightgbm

    text = model_file.read_text(encoding="utf-8")
    assert lgbm.Booster(model_str=text).dump_model() == lightgbm.Booster(model_str=text).dump_model()


def test_single_row_fast_path_equals_the_batch(model_file):
    booster = lgbm.Booster(model_file=model_file)
    x = probe_matrix(booster, rows=200)
    single, out = booster.single_row(), np.empty(1)
    rows = []
    for i in range(len(x)):
        row = np.ascontiguousarray(x[i:i + 1])
        single(row.ctypes.data, out.ctypes.data)
        rows.append(out[0])
    assert np.array(rows).tobytes() == booster.predict(x).tobytes()


@pytest.mark.parametrize("shape", [(5, 3), (39,), (2, 40)])
def test_a_bad_matrix_shape_names_expected_and_given(shape):
    booster = lgbm.Booster(model_file=AUTO_MODEL)
    with pytest.raises(ValueError) as e:
        booster.predict(np.zeros(shape))
    assert "(rows, 39)" in str(e.value) and f"got shape {shape}" in str(e.value)


def test_lightgbm_errors_carry_lightgbms_message():
    import lightgbm

    with pytest.raises(lightgbm.basic.LightGBMError) as theirs:
        lightgbm.Booster(model_str="tree\nversion=v4\nnot a model\n")
    with pytest.raises(lgbm.LightGBMError) as ours:
        lgbm.Booster(model_str="tree\nversion=v4\nnot a model\n")
    assert str(theirs.value) and str(theirs.value) in str(ours.value)


def test_the_booster_handle_is_freed(monkeypatch):
    lib = lgbm.library()
    freed = []
    real = lib.LGBM_BoosterFree
    monkeypatch.setattr(lib, "LGBM_BoosterFree", lambda handle: freed.append(handle.value) or real(handle))
    booster = lgbm.Booster(model_file=AUTO_MODEL)
    handle = booster.handle.value
    gc.collect()
    assert handle not in freed
    del booster
    gc.collect()
    assert handle in freed


def test_without_the_library_the_lightgbm_package_serves(monkeypatch, tmp_path, caplog):
    import lightgbm

    direct = lgbm.Booster(model_file=AUTO_MODEL)
    monkeypatch.setattr(lgbm, "_lib", None)
    monkeypatch.setattr(lgbm, "_warned", False)
    monkeypatch.setattr(lgbm, "library_candidates", lambda: [tmp_path / "lib_lightgbm.so"])
    with caplog.at_level(logging.WARNING, logger="predictors.lgbm"):
        booster = lgbm.load_booster(AUTO_MODEL.read_text(encoding="utf-8"))
    assert isinstance(booster, lightgbm.Booster)
    assert "lib_lightgbm not found" in caplog.text and str(tmp_path) in caplog.text
    x = probe_matrix(booster, rows=64)
    assert booster.predict(x, num_threads=1).tobytes() == direct.predict(x).tobytes()


def _child(code: str) -> dict:
    """Run code in a fresh interpreter (this checkout on its path); its last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_serving_process_imports_neither_lightgbm_nor_scipy():
    out = _child(f"""
        import json, sys
        from predictors.predictor import load_predictor
        from predictors.examples import v2_request
        p = load_predictor({str(shipped_bundle("auto"))!r})
        rows = {{i["name"]: i["data"] for i in v2_request("auto")["inputs"]}}
        score = p.predict(rows).outputs["score"].tolist()
        print(json.dumps({{"score": score, "loaded": sorted(m for m in ("lightgbm", "scipy", "sklearn")
                                                         if m in sys.modules)}}))
        """)
    assert out["loaded"] == [] and len(out["score"]) == 3 and all(0.0 < s < 1.0 for s in out["score"])


# ---- compiled trees as a shared library -----------------------------------------------------------

@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory) -> Path:
    """A cache folder holding the auto model's compiled library (compiled once for this module)."""
    cache = tmp_path_factory.mktemp("compiled")
    predictor = load_predictor(shipped_bundle("auto"))
    predictor.use_compiled_trees(cache, background=False)
    assert isinstance(predictor.scorer, SharedLibraryScorer)
    return cache


@needs_compiler
def test_compiled_library_equals_lightgbm_within_1e_9(compiled_cache):
    predictor = load_predictor(shipped_bundle("auto"))
    predictor.use_compiled_trees(compiled_cache)
    assert isinstance(predictor.scorer, SharedLibraryScorer)
    x = probe_matrix(predictor.model, seed=7)
    expected = predictor.model.predict(x, num_threads=1)
    np.testing.assert_allclose(predictor.scorer(x), expected, rtol=0, atol=1e-9)
    single = np.array([predictor.scorer(x[i:i + 1])[0] for i in range(300)])
    np.testing.assert_allclose(single, expected[:300], rtol=0, atol=1e-9)


@needs_compiler
def test_a_serving_process_with_compiled_trees_loads_no_llvm(compiled_cache):
    out = _child(f"""
        import json, sys
        from predictors.predictor import load_predictor
        p = load_predictor({str(shipped_bundle("auto"))!r})
        p.use_compiled_trees({str(compiled_cache)!r})
        from predictors.examples import v2_request
        p.predict({{i["name"]: i["data"] for i in v2_request("auto")["inputs"]}})
        print(json.dumps({{"scorer": type(p.scorer).__name__,
                          "loaded": sorted(m for m in ("llvmlite", "lleaves", "lightgbm", "scipy") if m in sys.modules)}}))
        """)
    assert out == {"scorer": "SharedLibraryScorer", "loaded": []}


@needs_compiler
def test_a_cached_library_loads_without_the_compiler(compiled_cache, monkeypatch):
    so = library_path(AUTO_MODEL, compiled_cache)
    before = {p: p.stat().st_mtime_ns for p in (so, expectations_path(so))}

    def no_compile(*args, **kwargs):
        raise AssertionError(f"compiler spawned: {args}")

    monkeypatch.setattr("predictors.predictor.compile_in_subprocess", no_compile)
    monkeypatch.setattr(subprocess, "run", no_compile)
    monkeypatch.setattr(subprocess, "Popen", no_compile)
    predictor = load_predictor(shipped_bundle("auto"))
    assert predictor.use_compiled_trees(compiled_cache) is None  # loaded at once, no background thread
    assert isinstance(predictor.scorer, SharedLibraryScorer)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def _tamper_expected(npz: Path) -> None:
    with np.load(npz) as data:
        x, expected = data["x"], data["expected"].copy()
    expected[17] += 1e-6
    np.savez(npz, x=x, expected=expected)


def _tamper_rows(npz: Path) -> None:
    with np.load(npz) as data:
        x, expected = data["x"][:10], data["expected"][:10]  # too few rows to check anything
    np.savez(npz, x=x, expected=expected)


@needs_compiler
@pytest.mark.parametrize("tamper", [_tamper_expected, _tamper_rows], ids=["expected-outputs", "probe-rows"])
def test_a_tampered_cache_entry_is_refused(compiled_cache, tmp_path, tamper, caplog, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(compiled_cache, cache)
    so = library_path(AUTO_MODEL, cache)
    tamper(expectations_path(so))
    monkeypatch.setattr("predictors.predictor.compile_in_subprocess", None)  # a cached entry: never recompiled
    predictor = load_predictor(shipped_bundle("auto"))
    with caplog.at_level(logging.WARNING, logger="predictors.predictor"):
        predictor.use_compiled_trees(cache)
    assert predictor.scorer is predictor.booster_scorer
    assert "compiled trees unavailable" in caplog.text and so.stem in caplog.text


@needs_compiler
def test_the_cache_key_follows_the_cpu(monkeypatch):
    from predictors import scoring

    here = library_path(AUTO_MODEL, "/cache")
    monkeypatch.setattr(scoring, "cpu_identity", lambda: "model name=another cpu;flags=fpu")
    assert library_path(AUTO_MODEL, "/cache") != here


@pytest.mark.skipif(not lleaves_available(), reason="lleaves not installed (optional: compiled trees)")
def test_without_a_linker_compiled_trees_run_through_llvmlite(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("predictors.scoring.linker", lambda: None)  # compiled_path then names the object file
    predictor = load_predictor(shipped_bundle("auto"))
    with caplog.at_level(logging.WARNING, logger="predictors.predictor"):
        predictor.use_compiled_trees(tmp_path, background=False)
    assert isinstance(predictor.scorer, CompiledScorer)
    assert "no linker" in caplog.text and "llvmlite" in caplog.text
    assert list(tmp_path.glob("*.o")) and not list(tmp_path.glob("*.so"))


@pytest.mark.parametrize("vertical", ["auto", "claims"])
def test_reasons_come_from_the_binding_without_the_lightgbm_package(vertical):
    out = _child(f"""
        import json, sys
        from predictors.predictor import load_predictor
        from predictors.examples import v2_request
        from predictors.reasons import Reasons, ReasonsOptions
        p = load_predictor({str(shipped_bundle(vertical))!r})
        reasons = Reasons(p, ReasonsOptions())
        raw = {{i["name"]: i["data"] for i in v2_request({vertical!r})["inputs"]}}
        batch = p.normalize(raw)
        print(json.dumps({{"unavailable": reasons.unavailable, "error": reasons.explainer.verify(batch),
                          "booster": type(reasons.explainer.booster).__module__, "lightgbm": "lightgbm" in sys.modules}}))
        """)
    assert out["unavailable"] is None and out["booster"] == "predictors.lgbm" and not out["lightgbm"]
    assert out["error"] <= 1e-9
