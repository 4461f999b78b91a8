"""`insurance rollout` (what `make canary|promote|rollback` run) and the validation gate in front of
a canary. --values-file stands in for `helm get values`."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import yaml

from ..conftest import ROOT, shipped_bundle
from .conftest import insurance


@pytest.fixture
def values(tmp_path):
    v = yaml.safe_load((ROOT / "helm" / "insurance-serving" / "values.yaml").read_text())
    v["verticals"]["auto"]["storageUri"] = "gs://bucket/models/auto/1.0.0"
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(v))
    return path


def make(*args):
    return subprocess.run(["make", "-s", *args], capture_output=True, text=True, cwd=ROOT)


def _upgrade(stdout: str) -> list[str]:
    """The printed helm upgrade, without the helm binary (make passes the project's own)."""
    line = [x for x in stdout.strip().splitlines() if " upgrade " in x][-1]
    return shlex.split(line)[1:]


def test_make_targets_run_insurance_rollout(values):
    v = yaml.safe_load(values.read_text())
    v["verticals"]["auto"]["canary"].update(enabled=True, version="1.1.0", storageUri="gs://bucket/models/auto/1.1.0")
    values.write_text(yaml.safe_dump(v))
    for action in ("promote", "rollback"):
        cli = insurance("rollout", action, "--vertical", "auto", "--dry-run", "--values-file", str(values))
        mk = make(action, "VERTICAL=auto", "DRY_RUN=1", f"ROLLOUT_ARGS=--values-file {values}")
        assert cli.returncode == 0 == mk.returncode, cli.stderr + mk.stdout + mk.stderr
        assert _upgrade(cli.stdout) == _upgrade(mk.stdout)
        assert _upgrade(cli.stdout)[:6] == ["upgrade", "insurance-serving", "helm/insurance-serving", "--namespace",
                                            "insurance-serving", "--reset-then-reuse-values"]
    assert not (ROOT / "scripts" / "canary.py").exists(), "one implementation of the canary commands"


def test_make_canary_passes_the_gate_before_the_upgrade(values, tmp_path, weak_auto):
    import shutil

    from lifecycle.registry import register

    repo = tmp_path / "repo"
    shutil.copytree(shipped_bundle("auto"), repo / "auto" / "1.0.0")
    assert register(weak_auto, repo, version="1.2.0", tolerance=0.1, latency_budget_ms=5000).ok
    args = ("canary", "VERTICAL=auto", "VERSION=1.2.0", "PERCENT=10", "DRY_RUN=1", f"REPOSITORY={repo}",
            f"ROLLOUT_ARGS=--values-file {values} --tolerance 0.1 --latency-budget-ms 5000")
    ok = make(*args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verticals.auto.canary.version=1.2.0" in _upgrade(ok.stdout)
    bad = repo / "auto" / "1.2.0" / "model.txt"
    bad.write_text(bad.read_text() + "\n")
    refused = make(*args)
    assert refused.returncode != 0 and "no helm upgrade was run" in refused.stderr
    assert " upgrade " not in refused.stdout


def test_promote_and_rollback_follow_the_values(values, tmp_path):
    v = yaml.safe_load(values.read_text())
    v["verticals"]["auto"]["canary"].update(enabled=True, version="1.1.0", storageUri="gs://bucket/models/auto/1.1.0")
    values.write_text(yaml.safe_dump(v))
    promote = insurance("rollout", "promote", "--vertical", "auto", "--version", "1.1.0", "--dry-run",
                        "--values-file", str(values))
    assert promote.returncode == 0, promote.stderr
    assert "--set-string verticals.auto.version=1.1.0" in promote.stdout
    assert "--set verticals.auto.canary.enabled=false" in promote.stdout
    rollback = insurance("rollout", "rollback", "--vertical", "auto", "--dry-run", "--values-file", str(values))
    assert rollback.stdout.strip().endswith("--set verticals.auto.canary.enabled=false")
    v["deploymentMode"] = "Knative"
    values.write_text(yaml.safe_dump(v))
    knative = insurance("rollout", "rollback", "--vertical", "auto", "--dry-run", "--values-file", str(values))
    assert knative.stdout.strip().endswith("--set verticals.auto.canary.trafficPercent=0")
    assert "run rollback again" in knative.stderr
    v["verticals"]["auto"]["canary"]["trafficPercent"] = 0
    values.write_text(yaml.safe_dump(v))
    second = insurance("rollout", "rollback", "--vertical", "auto", "--dry-run", "--values-file", str(values))
    assert second.stdout.strip().endswith("--set verticals.auto.canary.enabled=false"), "ends the canary entry"
    wrong = insurance("rollout", "promote", "--vertical", "auto", "--version", "2.0.0", "--dry-run",
                      "--values-file", str(values))
    assert wrong.returncode == 2 and "is not the canary of auto (the canary is 1.1.0)" in wrong.stderr


def test_errors_name_the_problem(values):
    p = insurance("rollout", "canary", "--vertical", "auto", "--version", "1.1", "--percent", "10", "--dry-run",
                  "--values-file", str(values))
    assert p.returncode == 2 and "not a semantic version" in p.stderr
    p = insurance("rollout", "canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "150", "--dry-run",
                  "--values-file", str(values))
    assert p.returncode == 2 and "PERCENT 150 is not within 0-100" in p.stderr
    p = insurance("rollout", "promote", "--vertical", "home", "--dry-run", "--values-file", str(values))
    assert p.returncode == 2 and "home has no canary" in p.stderr


def test_a_canary_that_fails_validation_is_not_rolled_out(values, tmp_path, weak_auto):
    import shutil

    from lifecycle.registry import register

    repo = tmp_path / "repo"
    shutil.copytree(shipped_bundle("auto"), repo / "auto" / "1.0.0")
    assert register(weak_auto, repo, version="1.2.0", tolerance=0.1, latency_budget_ms=5000).ok
    bad = repo / "auto" / "1.2.0" / "model.txt"
    bad.write_text(bad.read_text() + "\n")
    p = insurance("rollout", "canary", "--vertical", "auto", "--version", "1.2.0", "--percent", "10",
                  "--dry-run", "--values-file", str(values), "--repository", str(repo))
    assert p.returncode == 1 and "sha256" in p.stdout and "no helm upgrade was run" in p.stderr
    assert "helm upgrade" not in p.stdout
    ok = insurance("rollout", "canary", "--vertical", "auto", "--version", "1.0.0", "--percent", "10", "--dry-run",
                   "--values-file", str(values), "--repository", str(repo))
    assert ok.returncode == 2 and "already the stable version" in ok.stderr  # the values check still applies


def test_every_command_has_help():
    commands = [[], ["models"], ["models", "list"], ["models", "validate"], ["models", "register"],
                ["models", "load"], ["models", "unload"], ["models", "upload"], ["rollout"], ["ab"],
                ["ab", "report"]]
    for cmd in commands:
        p = insurance(*cmd, "--help")
        assert p.returncode == 0 and p.stdout.startswith("usage: insurance"), (cmd, p.stderr)
