"""Runs tests/security/inproc (unit tests of runtime/: authentication, limits, MLServer fixes,
load failures, signatures in the runtime) in a fresh interpreter.

They import runtime/, hence MLServer's generated gRPC protos, which register the same
`inference.*` symbols as tritonclient.grpc's and cannot share a process with them (the server
tests import tritonclient.grpc). The child's own report is shown when it fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import INPROC_ENV, REPORT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_runtime_unit_tests_in_a_fresh_interpreter(tmp_path):
    env = {**os.environ, INPROC_ENV: "1"}
    p = subprocess.run([sys.executable, "-m", "pytest", str(HERE / "inproc"), "-q", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "basetemp"), "-o", "addopts=--strict-markers"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert p.returncode == 0, f"runtime unit tests failed:\n{p.stdout[-12000:]}\n{p.stderr[-3000:]}"
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
    REPORT["runtime unit tests (fresh interpreter)"] = summary
