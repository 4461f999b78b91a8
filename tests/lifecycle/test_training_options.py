"""`python -m training --tune N` (Optuna) and MLflow tracking (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import builtins
import subprocess
import sys

import pytest

from predictors.bundle import read_manifest
from training.__main__ import main as train

pytestmark = pytest.mark.slow


def _train(out, *args, **env):
    assert train(["--vertical", "auto", "--rows", "1500", "--out", str(out), *args]) == 0
    return read_manifest(out / "auto" / "1.0.0")


def test_tuning_is_seeded_recorded_and_reproducible(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a = _train(tmp_path / "a", "--tune", "3")
    b = _train(tmp_path / "b", "--tune", "3")
    tuning = a["training"]["tuning"]
    assert tuning["trials"] == 3 and tuning["seed"] == 42 and tuning["sampler"] == "TPESampler"
    assert tuning["best_cv_roc_auc"] >= tuning["default_params_cv_roc_auc"]  # trial 0 is the defaults
    params = a["training"]["params"]["lightgbm"]
    for k, v in tuning["best_params"].items():
        assert params[k] == v, k
    assert a["files"] == b["files"] and a["training"]["tuning"] == b["training"]["tuning"]
    assert a["metrics"]["cv"]["roc_auc_mean"] == pytest.approx(tuning["best_cv_roc_auc"], abs=1e-6)
    plain = _train(tmp_path / "c")
    assert "tuning" not in plain["training"] and plain["training"]["params"]["lightgbm"]["num_leaves"] == 15
    for m in (a, plain):  # provenance stays in every bundle
        assert {"data_sha256", "git_commit", "params", "seed"} <= set(m["training"])


def test_tuning_the_claims_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert train(["--vertical", "claims", "--rows", "1200", "--tune", "2", "--out", str(tmp_path)]) == 0
    m = read_manifest(tmp_path / "claims" / "1.0.0")
    assert set(m["training"]["tuning"]["best_params"]) <= set(m["training"]["params"]["hist_gradient_boosting"])


def test_mlflow_run_is_recorded_when_the_uri_is_set(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lifecycle-test")
    manifest = _train(tmp_path / "out", "--tune", "2")
    run_id = manifest["training"]["mlflow"]["run_id"]
    run = mlflow.tracking.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_sha256"] == manifest["training"]["data_sha256"]
    assert run.data.tags["git_commit"] == manifest["training"]["git_commit"]
    assert float(run.data.metrics["holdout.roc_auc"]) == pytest.approx(manifest["metrics"]["holdout"]["roc_auc"])
    assert run.data.params["lightgbm.num_leaves"] == str(manifest["training"]["params"]["lightgbm"]["num_leaves"])
    assert run.data.params["tune.trials"] == "2"
    artifacts = mlflow.tracking.MlflowClient(tracking_uri=uri).list_artifacts(run_id)
    assert [a.path for a in artifacts] == ["manifest.json"]


def test_training_works_without_mlflow_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    manifest = _train(tmp_path / "out")
    assert "mlflow" not in manifest["training"]
    assert "mlflow is not installed" in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()


def test_help_lists_tune():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True)
    assert "--tune N" in out.stdout and "Optuna" in out.stdout
