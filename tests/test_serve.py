"""`make serve`'s launcher (python -m runtime.serve): waits for every model, prints a working example."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from .conftest import copy_repository, free_port

pytestmark = pytest.mark.slow


def test_launcher_prints_a_working_example_and_stops_cleanly(tmp_path, verticals):
    repo = copy_repository(tmp_path / "repo", verticals)
    port = free_port()
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False}))
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve", str(repo)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "Ready in" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        text = log.read_text()
        ready = re.search(r"Ready in ([\d.]+) s: (.*)", text)
        assert ready, text[-3000:]
        assert float(ready.group(1)) < 30
        assert ready.group(2).split(", ") == [f"{name} 1.0.0" for name in verticals]
        body = re.search(r"-d '(\{.*\})'", text).group(1)
        url = re.search(r"(http://127\.0\.0\.1:\d+/v2/models/auto/infer)", text).group(1)
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 200 and r.json()["model_name"] == "auto"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0
    assert "Traceback" not in log.read_text()


def test_wait_ready_reports_an_exited_server_and_a_deadline(tmp_path):
    """runtime.serve.wait_ready, shared by the launcher, tests/conftest.py and bench/servers.py."""
    from runtime.serve import NotReady, wait_ready

    url = f"http://127.0.0.1:{free_port()}/v2/health/ready"  # nothing listens there
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(NotReady, match="exited with 3") as info:
        wait_ready(exited, [url], timeout=30)
    assert info.value.returncode == 3
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(NotReady, match="not ready in 1 s") as info:
            wait_ready(sleeping, [url], timeout=1, interval=0.05)
        assert info.value.returncode is None and info.value.pending == [url]
    finally:
        sleeping.kill()
        sleeping.wait()
