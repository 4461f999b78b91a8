"""training/: reproducibility, real-data loading, CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from predictors import load_predictor
from predictors.bundle import read_manifest, sha256_file
from training.__main__ import main as train
from training.data import DataError, data_hash, load_table
from training.synthetic import generate

from .conftest import shipped_bundle


def _train(out, *args):
    assert train([*args, "--out", str(out)]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name, rows", [("auto", "3000"), ("claims", "3000")])
def test_same_command_same_data_same_model_hash(tmp_path, name, rows):
    _train(tmp_path / "a", "--vertical", name, "--rows", rows)
    _train(tmp_path / "b", "--vertical", name, "--rows", rows)
    a, b = read_manifest(tmp_path / "a" / name / "1.0.0"), read_manifest(tmp_path / "b" / name / "1.0.0")
    assert a["files"] == b["files"]
    assert a["training"]["data_sha256"] == b["training"]["data_sha256"]
    _train(tmp_path / "c", "--vertical", name, "--rows", rows, "--seed", "7")
    c = read_manifest(tmp_path / "c" / name / "1.0.0")
    assert c["files"] != a["files"] and c["training"]["data_sha256"] != a["training"]["data_sha256"]


def test_synthetic_data_is_deterministic_and_has_signal(config):
    vertical = config.vertical("home")
    a, b = generate(vertical, seed=1, rows=500), generate(vertical, seed=1, rows=500)
    assert data_hash(a) == data_hash(b)
    assert data_hash(a) != data_hash(generate(vertical, seed=2, rows=500))
    assert 0.2 < a[vertical.target].mean() < 0.8
    assert a["property_type"].isna().any()  # missingness is part of the process


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_trains_from_a_real_table(tmp_path, config, suffix):
    vertical = config.vertical("life")
    df = generate(vertical, seed=3, rows=2500)
    path = tmp_path / f"life{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    loaded = load_table(path, vertical)
    assert data_hash(loaded) == data_hash(df)  # the same table hashes the same from any format
    _train(tmp_path / "out", "--vertical", "life", "--data", str(path), "--version", "2.0.0")
    folder = tmp_path / "out" / "life" / "2.0.0"
    manifest = read_manifest(folder)
    assert manifest["training"]["data_sha256"] == data_hash(df)
    assert manifest["training"]["data_source"] == str(path)
    predictor = load_predictor(folder)
    assert predictor.predict({"age": [40]}).outputs["decision"][0] in ("accept", "reject")


def test_table_without_a_feature_column_is_refused(tmp_path, config):
    vertical = config.vertical("auto")
    path = tmp_path / "auto.csv"
    generate(vertical, rows=50).drop(columns=["usage_type"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="missing columns usage_type"):
        load_table(path, vertical)


def test_existing_bundle_is_not_overwritten_without_force(tmp_path):
    _train(tmp_path, "--vertical", "auto", "--rows", "1000")
    with pytest.raises(FileExistsError, match="bundles are immutable"):
        train(["--vertical", "auto", "--rows", "1000", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="not semver"):
        train(["--vertical", "auto", "--rows", "1000", "--out", str(tmp_path), "--version", "v2"])


def test_cli_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True)
    for option in ("--vertical", "--all", "--version", "--data", "--seed", "--rows", "--out"):
        assert option in out.stdout


def test_shipped_bundle_reproduces_from_the_committed_code(tmp_path):
    """`make train` would rewrite models/ with byte-identical model files."""
    _train(tmp_path, "--vertical", "health")
    shipped = read_manifest(shipped_bundle("health"))
    assert sha256_file(tmp_path / "health" / "1.0.0" / "model.txt") == shipped["files"]["model.txt"]
