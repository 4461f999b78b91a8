"""Fixtures of the lifecycle tests: candidate bundles trained into tmp, the `insurance` CLI as a
real process, a real Prometheus. Nothing here writes into the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ..conftest import ROOT, free_port, shipped_bundle, stop_process


def insurance(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
              ) -> subprocess.CompletedProcess:
    """`insurance ...` as a separate process (python -m lifecycle: what the console script runs)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=timeout)


def train_into(out: Path, vertical: str, *args: str) -> Path:
    from training.__main__ import main as train

    assert train(["--vertical", vertical, "--out", str(out), *args]) == 0
    return out / vertical / "1.0.0"


@pytest.fixture(scope="session")
def weak_auto(tmp_path_factory) -> Path:
    """An auto bundle trained on 3,000 rows: valid, but its held-out ROC-AUC (~0.79) is below the
    shipped 1.0.0's (0.840) by more than the default tolerance."""
    return train_into(tmp_path_factory.mktemp("weak-auto"), "auto", "--rows", "3000", "--seed", "5")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A model repository holding a copy of the shipped auto and claims bundles."""
    root = tmp_path / "repository"
    for name in ("auto", "claims"):
        src = shipped_bundle(name)
        shutil.copytree(src, root / name / src.name)
    return root


def copy_bundle(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


# ---- Prometheus -------------------------------------------------------------------------------
def find_prometheus() -> str | None:
    local = Path(os.environ.get("TOOLS_DIR", ROOT / ".tools")) / "bin" / "prometheus"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("prometheus")


class Prometheus:
    """The real `prometheus` binary on a free loopback port with a temporary config and storage,
    scraping the given targets every second; stopped by its PID."""

    def __init__(self, binary: str, workdir: Path, targets: list[str]):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: mlserver\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())["data"]["result"]

    def wait(self, expr: str, check, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.query(expr)
            if check(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{expr}: condition not met in {timeout} s; last answer {last}")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    path = find_prometheus()
    if path is None:
        pytest.fail("prometheus not found on PATH or in .tools/bin: run `make tools` (Debian's prometheus package)",
                    pytrace=False)
    return path
