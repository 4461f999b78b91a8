"""The real `prometheus` binary for tests (Debian's package, or .tools/bin from `make tools`): a
free loopback port, a temporary config and storage, every target scraped each second; stopped
by its PID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from .conftest import ROOT, free_port, stop_process


def find_prometheus() -> str | None:
    local = Path(os.environ.get("TOOLS_DIR", ROOT / ".tools")) / "bin" / "prometheus"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("prometheus")


class Prometheus:
    def __init__(self, binary: str, workdir: Path, targets: list[str] | str, job: str = "mlserver",
                 timeout: float = 60.0):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [
                {"targets": [targets] if isinstance(targets, str) else list(targets)}]}],
        }))
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            cwd=workdir, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def query_raw(self, expr: str) -> dict:
        return requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def query(self, expr: str) -> list[dict]:
        body = self.query_raw(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def values(self, expr: str, by: str) -> dict[str, float]:
        return {s["metric"].get(by, ""): float(s["value"][1]) for s in self.query(expr)}

    def wait(self, expr: str, check, timeout: float = 60.0):
        """Query until check(result) holds; fail with the last answer after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.query(expr)
            if check(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{expr}: condition not met in {timeout} s; last answer {last}")

    def stop(self) -> None:
        stop_process(self.process, grace=15)
