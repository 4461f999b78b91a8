"""Fixtures of the lifecycle tests: candidate bundles trained into tmp, the `insurance` CLI as a
real process, a real Prometheus. Nothing here writes into the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT, shipped_bundle
from ..prometheus import find_prometheus

#: test_autorollout.py reads InferenceService status through the kserve SDK, whose generated gRPC protos
#: register the same `inference.*` symbols as tritonclient.grpc's (imported by the server tests of this
#: process): test_autorollout_process.py runs it in a fresh interpreter instead.
KSERVE_PROCESS_ENV = "INSURANCE_TEST_KSERVE_PROCESS"
collect_ignore = [] if os.environ.get(KSERVE_PROCESS_ENV) == "1" else ["test_autorollout.py"]


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


# ---- Prometheus: tests/prometheus.py ----------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    path = find_prometheus()
    if path is None:
        pytest.fail("prometheus not found on PATH or in .tools/bin: run `make tools` (Debian's prometheus package)",
                    pytrace=False)
    return path
