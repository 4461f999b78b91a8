"""Runs tests/lifecycle/test_autorollout.py (InferenceService status through the kserve SDK's
KServeClient, `rollout auto` refusals and plans) in a fresh interpreter: the SDK's generated gRPC
protos and tritonclient.grpc's register the same symbols and cannot share this process. The
child's own report is shown when it fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import KSERVE_PROCESS_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_autorollout_tests_in_a_fresh_interpreter(tmp_path):
    env = {**os.environ, KSERVE_PROCESS_ENV: "1"}
    p = subprocess.run([sys.executable, "-m", "pytest", str(HERE / "test_autorollout.py"), "-q", "-p",
                        "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert p.returncode == 0, f"autorollout tests failed:\n{p.stdout[-12000:]}\n{p.stderr[-3000:]}"
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
