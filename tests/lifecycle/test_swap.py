"""Hot swap on a real MLServer: `insurance models upload|load|unload` while traffic runs.

The load is bounded (4 threads, at most MAX_REQUESTS requests, stopped once enough answers
came from each side of the swap) and goes to the unversioned path, the one backends call."""

from __future__ import annotations

import pickle
import shutil
import threading
from collections import Counter

import httpx
import pytest

from insurance_client import InsuranceClient, Retry

from ..conftest import copy_repository, request_json, start_server, stop_server
from .conftest import insurance

MAX_REQUESTS = 6000
THREADS = 4
pytestmark = pytest.mark.slow


class Load:
    """THREADS threads posting to /v2/models/auto/infer until stopped or MAX_REQUESTS."""

    def __init__(self, send):
        self.send = send
        self.results: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop.is_set():
            with self.lock:
                if len(self.results) >= MAX_REQUESTS:
                    return
            outcome = self.send()
            with self.lock:
                self.results.append(outcome)

    def count(self, version: str) -> int:
        with self.lock:
            return sum(1 for s, v in self.results if s == 200 and v == version)

    def wait_for(self, version: str, n: int, timeout: float = 60.0):
        done = threading.Event()
        deadline = threading.Timer(timeout, done.set)
        deadline.start()
        try:
            while not done.is_set() and self.count(version) < n:
                if len(self.results) >= MAX_REQUESTS:
                    break
                done.wait(0.05)
        finally:
            deadline.cancel()
        assert self.count(version) >= n, f"only {self.count(version)} answers from {version}: {self.summary()}"

    def finish(self) -> Counter:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.summary()

    def summary(self) -> Counter:
        with self.lock:
            return Counter(self.results)


def plain_sender(url: str, body: dict):
    local = threading.local()

    def send():
        client = getattr(local, "client", None) or httpx.Client(timeout=10)
        local.client = client
        try:
            r = client.post(f"{url}/v2/models/auto/infer", json=body)
        except httpx.HTTPError as e:
            return (0, type(e).__name__)
        return (r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text[:200])
    return send


@pytest.fixture
def served(tmp_path):
    repo = copy_repository(tmp_path / "repo", ["auto"])
    servers = []

    def start(workers: int = 0):
        srv = start_server(repo, tmp_path, ["/v2/models/auto/versions/1.0.0/ready"],
                           extra_settings={"parallel_workers": workers})
        servers.append(srv)
        return srv
    yield repo, start
    for srv in servers:
        stop_server(srv)


def _lead():
    return request_json("auto")


def test_swap_versions_under_load_without_a_failed_request(served, weak_auto, tmp_path):
    repo, start = served
    srv = start(0)  # the shipped setting (models/settings.json, chart: parallelWorkers 0)
    load = Load(plain_sender(srv.http, _lead()))
    try:
        load.wait_for("1.0.0", 50)
        up = insurance("models", "upload", str(weak_auto), "--url", srv.http, "--repository", str(repo),
                       "--version", "1.1.0", "--tolerance", "0.1", "--latency-budget-ms", "5000", cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "uploaded auto 1.1.0" in up.stdout and "/v2/models/auto/infer -> 1.1.0" in up.stdout
        load.wait_for("1.1.0", 50)
        down = insurance("models", "unload", "auto", "--version", "1.0.0", "--url", srv.http,
                         "--repository", str(repo), cwd=tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "still served: 1.1.0" in down.stdout
        after = load.count("1.1.0")
        load.wait_for("1.1.0", after + 50)
    finally:
        summary = load.finish()
    print(f"\nswap under load (parallel_workers 0): {dict(summary)}")
    failed = {k: n for k, n in summary.items() if k[0] != 200}
    assert not failed, f"failed requests during the swap: {failed}"
    assert summary[(200, "1.0.0")] >= 50 and summary[(200, "1.1.0")] >= 100
    assert sum(summary.values()) <= MAX_REQUESTS
    assert httpx.get(f"{srv.http}/v2/models/auto/versions/1.0.0/ready").status_code != 200
    assert (repo / ".retired" / "auto" / "1.0.0" / "manifest.json").is_file()
    listed = insurance("models", "list", "--repository", str(repo), "--url", srv.http, cwd=tmp_path)
    assert listed.returncode == 0 and "1.1.0" in listed.stdout and "READY" in listed.stdout
    assert " 1.0.0 " not in listed.stdout  # retired versions are not part of the repository any more


def test_with_parallel_workers_the_client_retries_through_the_swap(served, weak_auto, tmp_path):
    """MLServer 1.7.1 makes a newly loaded version the default of the unversioned path before it
    is ready when the model loads in worker processes; for that instant it answers 400 "Model
    auto is not ready yet". insurance_client retries that (and 503, connection errors)."""
    repo, start = served
    srv = start(1)
    lead = {"age": 34, "vehicle_make": "toyota", "usage_type": "commute"}
    client = InsuranceClient(srv.http, retry=Retry(attempts=8, backoff=0.05, max_backoff=0.5), seed=1)

    def send():
        try:
            return (200, client.score("auto", lead).model_version)
        except Exception as e:  # noqa: BLE001 - counted as a failure
            return (0, f"{type(e).__name__}: {e}")

    load = Load(send)
    try:
        load.wait_for("1.0.0", 50)
        up = insurance("models", "upload", str(weak_auto), "--url", srv.http, "--repository", str(repo),
                       "--version", "1.1.0", "--tolerance", "0.1", "--latency-budget-ms", "5000", "--replace",
                       cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "retired 1.0.0" in up.stdout
        after = load.count("1.1.0")
        load.wait_for("1.1.0", after + 50)
    finally:
        summary = load.finish()
        client.close()
    print(f"\nswap under load (parallel_workers 1, insurance_client): {dict(summary)}, "
          f"retries {client.retries_made}")
    assert not {k: n for k, n in summary.items() if k[0] != 200}
    assert summary[(200, "1.0.0")] >= 50 and summary[(200, "1.1.0")] >= 50


def test_upload_refuses_a_bundle_that_fails_validation(served, tmp_path):
    repo, start = served
    srv = start(0)
    bad = tmp_path / "bad" / "auto" / "1.2.0"
    shutil.copytree(repo / "auto" / "1.0.0", bad)
    for f in ("manifest.json", "model-settings.json"):
        text = (bad / f).read_text().replace('"1.0.0"', '"1.2.0"')
        (bad / f).write_text(text)
    (bad / "model.joblib").write_bytes(pickle.dumps("x"))
    p = insurance("models", "upload", str(bad), "--url", srv.http, "--repository", str(repo), cwd=tmp_path)
    assert p.returncode == 1 and "model.joblib" in p.stdout and "nothing was copied or loaded" in p.stdout
    assert sorted(x.name for x in (repo / "auto").iterdir()) == ["1.0.0"]
    assert httpx.get(f"{srv.http}/v2/models/auto/versions/1.2.0/ready").status_code != 200


def test_load_and_unload_a_model(served, tmp_path):
    repo, start = served
    srv = start(0)
    p = insurance("models", "unload", "auto", "--url", srv.http, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert httpx.get(f"{srv.http}/v2/models/auto/ready").status_code != 200
    p = insurance("models", "load", "auto", "--version", "1.0.0", "--url", srv.http, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "versions 1.0.0" in p.stdout and httpx.get(f"{srv.http}/v2/models/auto/ready").status_code == 200
    p = insurance("models", "unload", "auto", "--version", "1.0.0", "--url", srv.http, cwd=tmp_path)
    assert p.returncode == 2 and "needs --repository" in p.stderr
    p = insurance("models", "load", "nosuch", "--url", srv.http, cwd=tmp_path)
    assert p.returncode == 2 and "nosuch" in p.stderr
