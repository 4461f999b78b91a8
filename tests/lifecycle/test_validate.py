"""The validation gate (`insurance models validate`): every check refuses what it must, with the reason."""

from __future__ import annotations

import json
import pickle

import pytest

from lifecycle.validate import FAIL, PASS, golden_examples, validate
from predictors import BundleError, open_bundle
from training.synthetic import generate

from ..conftest import shipped_bundle
from .conftest import copy_bundle, edit_json, insurance

GENEROUS_MS = 5000.0  # the latency gate is exercised explicitly below; elsewhere it must not flake


def status(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def detail(report, name: str) -> str:
    return next(c.detail for c in report.checks if c.name == name)


@pytest.mark.parametrize("name", ["auto", "home", "health", "life", "claims"])
def test_every_shipped_bundle_passes(name):
    report = validate(shipped_bundle(name), latency_budget_ms=GENEROUS_MS)
    assert report.ok, report.text()
    assert [c.name for c in report.checks] == ["format", "manifest", "integrity", "contract", "load", "golden",
                                              "quality", "latency"]
    assert golden_examples(name)["rows"], "golden examples ship with the package"


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_a_pickle_family_file_is_refused_with_the_reason(tmp_path, suffix):
    bundle = copy_bundle(shipped_bundle("claims"), tmp_path / "claims" / "1.0.0")
    (bundle / f"model{suffix}").write_bytes(pickle.dumps({"not": "loaded"}))
    report = validate(bundle)
    assert not report.ok and status(report) == {"format": FAIL}
    assert f"model{suffix}" in detail(report, "format") and "execute code" in detail(report, "format")


def test_a_pickle_under_an_allowed_name_is_refused(tmp_path):
    bundle = copy_bundle(shipped_bundle("auto"), tmp_path / "auto" / "1.0.0")
    (bundle / "model.txt").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    report = validate(bundle)
    assert status(report) == {"format": FAIL} and "pickle stream" in detail(report, "format")


@pytest.mark.parametrize("name", ["model.joblib", "model.txt", "notes.dat"])
def test_the_gate_and_the_runtime_refuse_the_same_pickles(tmp_path, name):
    """One check (predictors/bundle.pickle_files) for both: by suffix, and by the first bytes under
    any other name, also a file that is not the model file (the runtime checked suffixes only)."""
    bundle = copy_bundle(shipped_bundle("auto"), tmp_path / "auto" / "1.0.0")
    (bundle / name).write_bytes(pickle.dumps([1, 2, 3], protocol=5))
    report = validate(bundle)
    assert status(report) == {"format": FAIL} and name in detail(report, "format")
    with pytest.raises(BundleError, match=f"{name}: .*(execute code|pickle stream)"):
        open_bundle(bundle)


def test_a_changed_model_file_fails_the_sha256_check(tmp_path):
    bundle = copy_bundle(shipped_bundle("auto"), tmp_path / "auto" / "1.0.0")
    with (bundle / "model.txt").open("a") as fh:
        fh.write("\n")
    report = validate(bundle)
    assert status(report)["integrity"] == FAIL and "sha256" in detail(report, "integrity")
    assert "model.txt" in detail(report, "integrity")


def test_an_incomplete_manifest_is_refused(tmp_path):
    bundle = copy_bundle(shipped_bundle("home"), tmp_path / "home" / "1.0.0")
    edit_json(bundle / "manifest.json", lambda m: m.pop("reference"))
    report = validate(bundle)
    assert status(report)["manifest"] == FAIL and "lacks reference" in detail(report, "manifest")


def test_model_settings_version_must_match_the_manifest(tmp_path):
    bundle = copy_bundle(shipped_bundle("home"), tmp_path / "home" / "1.0.0")
    edit_json(bundle / "model-settings.json", lambda s: s["parameters"].update(version="9.9.9"))
    report = validate(bundle)
    assert status(report)["manifest"] == FAIL and "9.9.9" in detail(report, "manifest")


def test_a_feature_spec_that_differs_from_the_contract_is_refused(tmp_path):
    bundle = copy_bundle(shipped_bundle("auto"), tmp_path / "auto" / "1.0.0")

    def change(m):
        spec = m["feature_spec"]
        next(f for f in spec if f["name"] == "usage_type")["categories"].append("racing")
        m["feature_spec"] = [f for f in spec if f["name"] != "location"]

    edit_json(bundle / "manifest.json", change)
    report = validate(bundle)
    text = detail(report, "contract")
    assert status(report)["contract"] == FAIL
    assert "missing features location" in text and "feature 'usage_type' differs" in text and "racing" in text


def test_a_weaker_model_fails_the_quality_gate_and_passes_with_a_wider_tolerance(weak_auto):
    stable = shipped_bundle("auto")
    report = validate(weak_auto, stable=stable, latency_budget_ms=GENEROUS_MS)
    assert status(report)["quality"] == FAIL, report.text()
    quality = next(c for c in report.checks if c.name == "quality")
    assert quality.data["stable_version"] == "1.0.0" and quality.data["stable_roc_auc"] == pytest.approx(0.839823)
    assert "worse than stable 1.0.0" in quality.detail
    relaxed = validate(weak_auto, stable=stable, tolerance=0.1, latency_budget_ms=GENEROUS_MS)
    assert relaxed.ok, relaxed.text()
    golden = next(c for c in relaxed.checks if c.name == "golden")
    assert 0 <= golden.data["decision_agreement_with_stable"] <= 1


def test_quality_on_a_common_evaluation_table(tmp_path, weak_auto, config):
    table = tmp_path / "eval.csv"
    generate(config.vertical("auto"), seed=99, rows=1500).to_csv(table, index=False)
    report = validate(weak_auto, stable=shipped_bundle("auto"), eval_data=table, tolerance=0.5,
                      latency_budget_ms=GENEROUS_MS)
    quality = next(c for c in report.checks if c.name == "quality")
    assert quality.status == PASS and "1500 rows" in quality.detail
    assert quality.data["stable_roc_auc"] > quality.data["candidate_roc_auc"]  # 20k rows beat 3k rows


def test_latency_budget(weak_auto):
    report = validate(weak_auto, latency_budget_ms=1e-6, latency_calls=5)
    latency = next(c for c in report.checks if c.name == "latency")
    assert latency.status == FAIL and "exceeds the budget" in latency.detail and latency.data["calls"] == 5


def test_cli_exit_code_and_json_outside_the_checkout(tmp_path, weak_auto):
    """Run from a folder that is not the repository: the golden examples come with the package."""
    ok = insurance("models", "validate", str(shipped_bundle("life")), "--no-compare", "--latency-budget-ms", "5000",
                   cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "RESULT: PASS" in ok.stdout and "golden" in ok.stdout
    bad = insurance("models", "validate", str(weak_auto), "--stable", str(shipped_bundle("auto")), "--json",
                    "--latency-budget-ms", "5000", cwd=tmp_path)
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["stable"].endswith("auto/1.0.0")
    assert {c["name"]: c["status"] for c in report["checks"]}["quality"] == "fail"
    missing = insurance("models", "validate", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_the_folder_name_must_be_the_bundle_version(tmp_path):
    bundle = copy_bundle(shipped_bundle("life"), tmp_path / "life" / "1.2.0")
    report = validate(bundle)
    assert status(report)["manifest"] == FAIL
    assert "folder is named 1.2.0 but the bundle is version 1.0.0" in detail(report, "manifest")
