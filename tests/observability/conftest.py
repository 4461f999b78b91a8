"""Fixtures of the observability tests: promtool, the rule files and their unit tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "helm" / "insurance-serving" / "files" / "rules"
RULES_TESTS_DIR = ROOT / "observability" / "tests"
DASHBOARDS_DIR = ROOT / "helm" / "insurance-serving" / "files" / "dashboards"
DOCS = ROOT / "docs" / "observability.md"
RUNBOOK_BASE = "https://github.com/insurance-serving/insurance-serving/blob/main/docs/observability.md"


def find_promtool() -> str | None:
    tools_bin = Path(os.environ.get("TOOLS_DIR", ROOT / ".tools")) / "bin" / "promtool"
    if tools_bin.is_file() and os.access(tools_bin, os.X_OK):
        return str(tools_bin)
    return shutil.which("promtool")


@pytest.fixture(scope="session")
def promtool() -> str:
    path = find_promtool()
    if path is None:
        pytest.fail(
            "promtool not found on PATH or in .tools/bin: run `make tools` "
            "(or scripts/install-prometheus.sh; Debian's `prometheus` package ships it)",
            pytrace=False,
        )
    return path


def run_promtool(promtool: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def rules_test_files() -> list[Path]:
    return sorted(RULES_TESTS_DIR.glob("*.test.yaml"))


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerts(path: Path) -> list[dict]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"] if "alert" in rule]


def all_alerts() -> list[dict]:
    return [rule for path in rule_files() for rule in alerts(path)]
