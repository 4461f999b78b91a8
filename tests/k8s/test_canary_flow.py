"""Canary, promote and rollback as values changes (`insurance rollout`, which `make canary|promote|
rollback` call): the exact `helm upgrade` flags it prints are rendered with `helm template`
on top of the release's values, and the resulting InferenceService is checked at each step,
in both deployment modes. No cluster: `--values-file` stands in for `helm get values`."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from .kube import CHART, REPO, isvcs, run, tool


def _rollout(*args: str) -> subprocess.CompletedProcess:
    """`insurance rollout ...` as its own process (python -m lifecycle = the console script)."""
    return subprocess.run([sys.executable, "-m", "lifecycle", "rollout", *args], capture_output=True, text=True,
                          cwd=REPO)


def _set_path(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


class Release:
    """User-supplied values of a release, updated like `helm upgrade --reset-then-reuse-values --set`."""

    def __init__(self, tmp_path, values: dict):
        self.tmp_path, self.values, self.step = tmp_path, values, 0

    def file(self) -> str:
        self.step += 1
        path = self.tmp_path / f"values-{self.step}.yaml"
        path.write_text(yaml.safe_dump(self.values), encoding="utf-8")
        return str(path)

    def plan(self, *args: str) -> list[str]:
        p = _rollout(*args, "--dry-run", "--values-file", self.file())
        assert p.returncode == 0, p.stderr
        argv = shlex.split(p.stdout.strip().splitlines()[-1])
        assert argv[1:6] == ["upgrade", "insurance-serving", "helm/insurance-serving", "--namespace", "insurance-serving"]
        assert "--reset-then-reuse-values" in argv
        return argv

    def apply(self, *args: str) -> dict:
        """Run the planned upgrade as `helm template`; keep its --set values; return the isvcs."""
        argv = self.plan(*args)
        flags = []
        for flag, value in zip(argv, argv[1:]):
            if flag in ("--set", "--set-string"):
                flags += [flag, value]
                key, _, raw = value.partition("=")
                typed = raw if flag == "--set-string" else yaml.safe_load(raw)
                _set_path(self.values, key, typed)
        p = run([tool("helm"), "template", "insurance-serving", str(CHART), "-n", "insurance-serving",
                 "-f", self.file(), *flags])
        assert p.returncode == 0, p.stderr
        return isvcs([d for d in yaml.safe_load_all(p.stdout) if d])

    def error(self, *args: str) -> str:
        p = _rollout(*args, "--dry-run", "--values-file", self.file())
        assert p.returncode != 0
        return p.stderr


def _base(mode: str) -> dict:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    values["deploymentMode"] = mode
    values["verticals"]["auto"]["storageUri"] = "gs://insurance-models/models/auto/1.0.0"
    return values


def _ready(model: dict) -> str:
    return model["readinessProbe"]["httpGet"]["path"]


def test_standard_canary_promote(tmp_path):
    rel = Release(tmp_path, _base("Standard"))
    auto = rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "10")["auto"]["spec"]
    assert auto["predictor"]["model"]["storageUri"].endswith("/auto/1.0.0")
    [entry] = auto["canary"]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["model"]["storageUri"] == "gs://insurance-models/models/auto/1.1.0"
    assert _ready(entry["predictor"]["model"]) == "/v2/models/auto/versions/1.1.0/ready"
    auto = rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "50")["auto"]["spec"]
    assert auto["canary"][0]["trafficPercent"] == 50
    auto = rel.apply("promote", "--vertical", "auto", "--version", "1.1.0")["auto"]["spec"]
    assert "canary" not in auto
    assert auto["predictor"]["model"]["storageUri"] == "gs://insurance-models/models/auto/1.1.0"
    assert _ready(auto["predictor"]["model"]) == "/v2/models/auto/versions/1.1.0/ready"


def test_standard_canary_rollback(tmp_path):
    rel = Release(tmp_path, _base("Standard"))
    rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "10")
    auto = rel.apply("rollback", "--vertical", "auto")["auto"]["spec"]
    assert "canary" not in auto, "KServe deletes the canary Deployment"
    assert auto["predictor"]["model"]["storageUri"].endswith("/auto/1.0.0")
    assert _ready(auto["predictor"]["model"]) == "/v2/models/auto/versions/1.0.0/ready"


def test_knative_canary_rollback_promote(tmp_path):
    rel = Release(tmp_path, _base("Knative"))
    pred = rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "10")["auto"]["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    assert pred["model"]["storageUri"] == "gs://insurance-models/models/auto/1.1.0"
    pred = rel.apply("rollback", "--vertical", "auto")["auto"]["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 0, "all traffic back on the last revision rolled out at 100 %"
    # the stable bundle is back in the spec: the latest revision is a stable one, so the canary
    # revision leaves Knative's route (KServe routes `latestRevision` at 0 % + the previous one)
    # and is scaled away instead of running at 0 % until the next canary
    assert pred["model"]["storageUri"].endswith("/auto/1.0.0")
    assert _ready(pred["model"]) == "/v2/models/auto/versions/1.0.0/ready"
    # second rollback: drop the canary entry; the stable revision takes 100 %
    pred = rel.apply("rollback", "--vertical", "auto")["auto"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred and pred["model"]["storageUri"].endswith("/auto/1.0.0")
    assert "has no canary" in rel.error("rollback", "--vertical", "auto")
    pred = rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "20")["auto"]["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 20
    pred = rel.apply("promote", "--vertical", "auto")["auto"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred, "promote = remove it: the latest revision takes 100 %"
    assert pred["model"]["storageUri"].endswith("/auto/1.1.0")
    assert _ready(pred["model"]) == "/v2/models/auto/versions/1.1.0/ready"


@pytest.mark.parametrize("args, message", [
    (("promote", "--vertical", "auto"), "auto has no canary in this release"),
    (("canary", "--vertical", "auto", "--version", "1.0.0", "--percent", "5"), "already the stable version"),
    (("canary", "--vertical", "auto", "--version", "1.1", "--percent", "5"), "not a semantic version"),
    (("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "150"), "not within 0-100"),
])
def test_bad_requests_are_refused(tmp_path, args, message):
    assert message in Release(tmp_path, _base("Standard")).error(*args)


def test_storage_uri_is_derived_or_given(tmp_path):
    values = _base("Standard")
    values["verticals"]["home"]["storageUri"] = "s3://bucket/home-latest/"
    rel = Release(tmp_path, values)
    assert "pass STORAGE_URI=" in rel.error("canary", "--vertical", "home", "--version", "1.1.0", "--percent", "5")
    home = rel.apply("canary", "--vertical", "home", "--version", "1.1.0", "--percent", "5",
                     "--storage-uri", "s3://bucket/home-1.1.0/")["home"]["spec"]
    assert home["canary"][0]["predictor"]["model"]["storageUri"] == "s3://bucket/home-1.1.0/"


def test_make_canary_runs_the_validation_gate_first(tmp_path):
    """`make canary` is `insurance rollout canary --repository REPOSITORY`: a canary bundle that is not in
    the repository (or fails validation) gets no helm upgrade. (The passing gate: tests/lifecycle/test_rollout.py.)"""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_base("Standard")), encoding="utf-8")
    empty = tmp_path / "repo"
    (empty / "auto").mkdir(parents=True)
    p = subprocess.run(["make", "-s", "canary", "VERTICAL=auto", "VERSION=1.1.0", "PERCENT=10", "DRY_RUN=1",
                        f"REPOSITORY={empty}", f"ROLLOUT_ARGS=--values-file {values}"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode != 0, p.stdout
    assert "helm upgrade" not in p.stdout and "upgrade insurance-serving" not in p.stdout
    p = subprocess.run(["make", "-s", "promote", "VERTICAL=auto", "DRY_RUN=1", f"ROLLOUT_ARGS=--values-file {values}"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode != 0 and "auto has no canary in this release" in p.stderr
    p = subprocess.run(["make", "-s", "canary", "VERTICAL=auto"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode != 0 and "usage: make canary VERTICAL=auto VERSION=1.1.0 PERCENT=10" in p.stderr


def test_s3_uris_the_rollout_derives_end_in_a_slash(tmp_path):
    values = _base("Standard")
    values["verticals"]["auto"]["storageUri"] = "s3://insurance-models/models/auto/1.0.0/"
    rel = Release(tmp_path, values)
    auto = rel.apply("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "10")["auto"]["spec"]
    assert auto["canary"][0]["predictor"]["model"]["storageUri"] == "s3://insurance-models/models/auto/1.1.0/"
    assert "must end in /" in rel.error("canary", "--vertical", "auto", "--version", "1.2.0", "--percent", "10",
                                        "--storage-uri", "s3://insurance-models/models/auto/1.2.0")
    # a stable s3 URI without the slash (values from before the check) still yields a canary URI with one
    values["verticals"]["auto"]["storageUri"] = "s3://insurance-models/models/auto/1.0.0"
    values["verticals"]["auto"]["canary"]["enabled"] = False
    (tmp_path / "b").mkdir()
    argv = Release(tmp_path / "b", values).plan("canary", "--vertical", "auto", "--version", "1.1.0", "--percent", "5")
    assert "verticals.auto.canary.storageUri=s3://insurance-models/models/auto/1.1.0/" in argv


def test_make_help_lists_the_kubernetes_targets():
    p = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0
    listed = {line.split()[0] for line in p.stdout.splitlines() if line.strip()}
    listed = {re.sub(r"\x1b\[[0-9;]*m", "", name) for name in listed}
    assert {"kube-tools", "manifests", "helm-lint", "docker-lint", "test-kube", "canary", "promote", "rollback"} <= listed
