"""`insurance models register` and `models list`: versions, immutability, routing from chart values."""

from __future__ import annotations

import json

import pytest
import yaml

from lifecycle.registry import register
from lifecycle.repository import RepositoryError, bump, next_version, resolve, semver_key
from predictors.bundle import read_manifest
from predictors import load_predictor

from ..conftest import ROOT
from .conftest import insurance

GATE = {"latency_budget_ms": 5000.0}


def test_semver_order_and_bumps(tmp_path):
    assert sorted(["1.10.0", "1.9.0", "1.0.0-rc.1", "1.0.0", "0.9.9"], key=semver_key) == \
        ["0.9.9", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0"]
    assert [bump("1.9.3", p) for p in ("major", "minor", "patch")] == ["2.0.0", "1.10.0", "1.9.4"]
    assert next_version(tmp_path, "auto") == "1.0.0"
    for v in ("1.0.0", "1.9.0", "1.10.0"):
        (tmp_path / "auto" / v).mkdir(parents=True)
        (tmp_path / "auto" / v / "model-settings.json").write_text("{}")
    assert next_version(tmp_path, "auto", "minor") == "1.11.0"
    assert resolve(f"file://{tmp_path}") == tmp_path
    with pytest.raises(RepositoryError, match="not read directly"):
        resolve("gs://bucket/models")


def test_register_gives_the_next_version_and_rewrites_it(repo, weak_auto):
    reg = register(weak_auto, repo, tolerance=0.1, **GATE)
    assert reg.ok, reg.report.text()
    assert (reg.vertical, reg.version, reg.path) == ("auto", "1.1.0", repo / "auto" / "1.1.0")
    manifest = read_manifest(reg.path)
    assert manifest["version"] == "1.1.0" and manifest["registration"]["trained_as_version"] == "1.0.0"
    settings = json.loads((reg.path / "model-settings.json").read_text())
    assert settings["parameters"]["version"] == "1.1.0" and settings["name"] == "auto"
    assert load_predictor(reg.path).manifest["version"] == "1.1.0"  # loads like any bundle (hashes intact)
    assert read_manifest(weak_auto)["version"] == "1.0.0", "the training output is left as it was"
    again = register(weak_auto, repo, bump="patch", tolerance=0.1, **GATE)
    assert again.version == "1.1.1"
    with pytest.raises(RepositoryError, match="immutable"):
        register(weak_auto, repo, version="1.1.0", tolerance=0.1, **GATE)
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_a_bundle_that_fails_validation_is_not_registered(repo, weak_auto):
    reg = register(weak_auto, repo, **GATE)  # default tolerance: worse than stable 1.0.0
    assert not reg.ok and reg.path is None and reg.version == "1.1.0"
    assert [c.name for c in reg.report.failed()] == ["quality"]
    assert sorted(p.name for p in (repo / "auto").iterdir()) == ["1.0.0"]
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_register_cli(repo, weak_auto, tmp_path):
    p = insurance("models", "register", str(weak_auto.parent.parent), "--repository", str(repo), "--version", "2.0.0",
                  "--tolerance", "0.1", "--latency-budget-ms", "5000", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["registered"] and out["version"] == "2.0.0" and (repo / "auto" / "2.0.0" / "model.txt").is_file()
    refused = insurance("models", "register", str(weak_auto), "--repository", str(repo), "--latency-budget-ms", "5000",
                        cwd=tmp_path)
    # against 2.0.0 (the newest, same model) the quality gate passes: compare against 1.0.0 through chart values
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"verticals": {"auto": {"enabled": True, "version": "1.0.0"}}}))
    refused = insurance("models", "register", str(weak_auto), "--repository", str(repo), "--values", str(values),
                        "--latency-budget-ms", "5000", cwd=tmp_path)
    assert refused.returncode == 1 and "not registered" in refused.stdout and "stable 1.0.0" in refused.stdout


def test_list_shows_metrics_and_routing(repo, weak_auto, tmp_path):
    assert register(weak_auto, repo, tolerance=0.1, **GATE).ok
    values = yaml.safe_load((ROOT / "helm" / "insurance-serving" / "values.yaml").read_text())
    values["verticals"]["auto"]["canary"].update(enabled=True, version="1.1.0", trafficPercent=10)
    values["verticals"]["home"]["canary"].update(enabled=True, version="1.3.0", trafficPercent=5)
    vfile = tmp_path / "values.yaml"
    vfile.write_text(yaml.safe_dump(values))
    p = insurance("models", "list", "--repository", f"file://{repo}", "--values", str(vfile), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    auto_10 = next(line for line in lines if line.startswith("auto") and " 1.0.0 " in line)
    auto_11 = next(line for line in lines if line.startswith("auto") and " 1.1.0 " in line)
    assert "stable (90%)" in auto_10 and "0.840" in auto_10 and "lightgbm" in auto_10
    assert "canary (10%)" in auto_11
    assert "the chart routes home 1.0.0 as stable, but the repository has no such bundle" in p.stdout
    data = json.loads(insurance("models", "list", "--repository", str(repo), "--values", str(vfile), "--json",
                                cwd=tmp_path).stdout)
    rows = {(b["vertical"], b["version"]): b for b in data["bundles"]}
    assert rows[("claims", "1.0.0")]["framework"] == "sklearn" and rows[("claims", "1.0.0")]["route"] == "stable (100%)"
    assert rows[("auto", "1.1.0")]["holdout_roc_auc"] < rows[("auto", "1.0.0")]["holdout_roc_auc"]
    assert {"vertical": "home", "version": "1.3.0", "route": "canary"} in data["routed_but_missing"]
