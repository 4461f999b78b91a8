"""Bundles: shipped metrics, manifest completeness, integrity and safe loading."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from predictors import BundleError, load_predictor, open_bundle
from predictors.bundle import MANIFEST, REQUIRED_KEYS, read_manifest, sha256_file

from .conftest import shipped_bundle

VERTICALS = ["auto", "home", "health", "life", "claims"]


@pytest.mark.parametrize("name", VERTICALS)
def test_shipped_model_beats_baseline_and_floor(name):
    metrics = read_manifest(shipped_bundle(name))["metrics"]
    assert metrics["holdout"]["roc_auc"] >= 0.75
    assert metrics["holdout"]["roc_auc"] > metrics["baseline"]["roc_auc"]
    assert metrics["cv"]["folds"] == 5 and metrics["cv"]["roc_auc_mean"] >= 0.75
    assert set(metrics["holdout"]) == {"roc_auc", "accuracy", "precision", "recall", "f1"}
    if name == "claims":
        assert metrics["baseline"]["name"] == "knn_k5"


@pytest.mark.parametrize("name", VERTICALS)
def test_shipped_manifest_is_complete_and_current(name, config):
    folder = shipped_bundle(name)
    manifest = read_manifest(folder)
    assert set(REQUIRED_KEYS) <= set(manifest)
    assert manifest["version"] == folder.name and manifest["vertical"] == name
    assert manifest["feature_spec"] == config.vertical(name).feature_spec(), \
        "verticals.yaml changed since the bundle was trained: run `make train`"
    assert manifest["files"][manifest["model_file"]] == sha256_file(folder / manifest["model_file"])
    for key in ("data_sha256", "git_commit", "params", "seed"):
        assert manifest["training"][key]
    assert set(manifest["reference"]) == set(config.vertical(name).feature_names)
    settings = json.loads((folder / "model-settings.json").read_text())
    assert settings == {"name": name, "implementation": "runtime.InsuranceModel",
                        "parameters": {"version": folder.name, "uri": "./"}}


@pytest.mark.parametrize("name", VERTICALS)
def test_shipped_model_file_is_not_a_pickle(name):
    folder = shipped_bundle(name)
    head = (folder / read_manifest(folder)["model_file"]).read_bytes()[:4]
    assert head[:1] != b"\x80"  # pickle protocol 2+ opcode
    assert head in (b"tree", b"PK\x03\x04")  # LightGBM text / skops zip


@pytest.fixture
def bundle_copy(tmp_path):
    def copy(name: str):
        dest = tmp_path / name
        shutil.copytree(shipped_bundle(name), dest)
        return dest
    return copy


def test_changed_model_file_is_refused(bundle_copy):
    folder = bundle_copy("auto")
    model = folder / "model.txt"
    model.write_text(model.read_text().replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(BundleError, match="sha256 .* does not match the manifest"):
        open_bundle(folder)


def test_missing_model_file_is_refused(bundle_copy):
    folder = bundle_copy("home")
    (folder / "model.txt").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        load_predictor(folder)


def test_incomplete_manifest_is_refused(bundle_copy):
    folder = bundle_copy("life")
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["reference"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest lacks reference"):
        open_bundle(folder)


class _Boom:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_pickle_is_refused_before_it_is_read(bundle_copy, tmp_path):
    folder = bundle_copy("auto")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(str(marker)))
    (folder / "model.pkl").write_bytes(payload)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["model.pkl"] = sha256_file(folder / "model.pkl")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"\.pkl files can execute code"):
        open_bundle(folder)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: loading it would have created the file
    assert marker.exists()


def test_skops_type_outside_the_trusted_list_is_refused(bundle_copy, tmp_path):
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    folder = bundle_copy("claims")
    # A FunctionTransformer would call an arbitrary function: not on the trusted list.
    hostile = Pipeline([("f", FunctionTransformer(func=print))])
    skops.io.dump(hostile, folder / "model.skops")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["model.skops"] = sha256_file(folder / "model.skops")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="cannot load the sklearn model: .*[Uu]ntrusted.*builtins.print"):
        open_bundle(folder)
