"""Faults: a broken bundle for one vertical, a killed inference worker under load, and a soak
of mixed valid and invalid traffic at a fixed rate.

* A corrupt or missing model file: that model is registered but not ready, with the reason in
  its metadata and the log; the other verticals keep serving (MLServer 1.7.1 alone exits when
  any model fails at startup; runtime/loading.py). Fixing the file and loading it again makes
  it ready; a failing reload of a serving model keeps the serving one.
* parallel_workers 2, API keys on: the credentials reach the workers; SIGKILL of one worker
  during a bounded load fails at most the requests it had in flight, each with a clean 500
  and a message; MLServer starts a new worker and later requests all succeed.
* Soak: SOAK_SECONDS (default 30; `make soak` runs 300) at SOAK_RATE requests/s (default 40)
  of a fixed mix; every answer must be the expected one and the memory flat.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ..conftest import copy_repository, request_json, shipped_bundle, start_server, stop_server
from .conftest import REPORT, Http, children, tree_rss_mib

pytestmark = pytest.mark.slow

ALL = ("auto", "home", "health", "life", "claims")


def _load_error(http: Http, model: str) -> str | None:
    meta = http.get(f"/v2/models/{model}").json()
    return (meta.get("parameters") or {}).get("load_error")


def _broken_repository(dest: Path) -> Path:
    repo = copy_repository(dest, ALL)
    (repo / "home" / "1.0.0" / "model.txt").write_text("tree=garbage\n")  # corrupt: sha256 mismatch
    (repo / "claims" / "1.0.0" / "model.skops").unlink()  # missing
    return repo


# ---- a broken bundle: not ready with the reason, the others serve -----------------------------

def test_broken_bundles_are_not_ready_and_the_others_serve(tmp_path):
    repo = _broken_repository(tmp_path / "repository")
    srv = start_server(repo, tmp_path, [f"/v2/models/{m}/ready" for m in ("auto", "health", "life")])
    try:
        http = Http(srv.http_port)
        for m in ("auto", "health", "life"):
            assert http.post(f"/v2/models/{m}/infer", request_json(m)).status == 200
        for m, reason in (("home", "does not match the manifest"), ("claims", "listed in the manifest but missing")):
            assert http.get(f"/v2/models/{m}/ready").status == 400
            assert http.get(f"/v2/models/{m}/versions/1.0.0/ready").status == 400
            assert reason in _load_error(http, m)
            a = http.post(f"/v2/models/{m}/infer", request_json(m))
            assert a.status == 400 and "not ready" in a.json()["error"]
            assert f"model {m} 1.0.0 is NOT READY" in srv.log_text()
        assert http.get("/v2/health/ready").status == 400, "the server is not fully ready, and says so"
        assert http.get("/v2/health/live").status == 200
        # fix the file and load again: ready
        shutil.copy(shipped_bundle("home") / "model.txt", repo / "home" / "1.0.0" / "model.txt")
        assert http.post("/v2/repository/models/home/load", {}).status == 200
        assert http.get("/v2/models/home/ready").status == 200 and _load_error(http, "home") is None
        assert http.post("/v2/models/home/infer", request_json("home")).status == 200
        # a broken reload of a serving model fails and keeps the serving one
        (repo / "home" / "1.0.0" / "model.txt").write_text("tree=garbage\n")
        a = http.post("/v2/repository/models/home/load", {})
        assert a.status == 500 and "does not match the manifest" in a.json()["error"]
        assert http.post("/v2/models/home/infer", request_json("home")).status == 200
    finally:
        stop_server(srv)


# ---- parallel workers: credentials, readiness, a killed worker ----------------------------------

@pytest.fixture(scope="module")
def parallel(tmp_path_factory, credentials):
    tmp = tmp_path_factory.mktemp("parallel")
    repo = copy_repository(tmp / "repository", ("auto", "claims", "home"))
    (repo / "home" / "1.0.0" / "model.txt").write_text("tree=garbage\n")
    srv = start_server(repo, tmp, ["/v2/models/auto/ready", "/v2/models/claims/ready"],
                       extra_settings={"parallel_workers": 2}, env=credentials.env(reload_seconds=0))
    yield srv
    stop_server(srv)


def test_parallel_workers_get_the_credentials(parallel, credentials):
    http = Http(parallel.http_port)
    assert http.post("/v2/models/auto/infer", request_json("auto")).status == 401
    for _ in range(4):  # round robin: both workers
        assert http.post("/v2/models/auto/infer", request_json("auto"), {"X-API-Key": credentials.keys[0]}).status == 200
        assert http.post("/v2/models/claims/infer", request_json("claims"),
                         {"Authorization": f"Bearer {credentials.token()}"}).status == 200
    client = grpcclient.InferenceServerClient(parallel.grpc)
    inp = grpcclient.InferInput("age", [1], "INT64")
    inp.set_data_from_numpy(np.array([30], dtype=np.int64))
    with pytest.raises(InferenceServerException) as e:
        client.infer("auto", [inp])
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    assert client.infer("auto", [inp], headers={"x-api-key": credentials.keys[1]}).as_numpy("score").shape == (1,)


def test_parallel_workers_report_a_broken_bundle_not_ready(parallel):
    http = Http(parallel.http_port)
    assert http.get("/v2/models/home/ready").status == 400
    assert "does not match the manifest" in _load_error(http, "home")
    assert http.get("/v2/models/auto/ready").status == 200


def _workers(pid: int) -> list[int]:
    out = []
    for c in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.append(c)
        except OSError:
            pass
    return out


def test_killed_worker_under_load(parallel, credentials):
    """Last user of the parallel server."""
    body, headers = json.dumps(request_json("auto")), {"X-API-Key": credentials.keys[0]}
    workers = _workers(parallel.process.pid)
    assert len(workers) == 2, workers
    threads_n, before_kill, after_kill = 4, 200, 400
    results: list[tuple[int, object, bytes]] = []  # (phase, status or exception, body)
    phase = [0]
    lock = threading.Lock()
    done = threading.Event()

    def client():
        http = Http(parallel.http_port, timeout=30)
        while not done.is_set():
            p = phase[0]
            try:
                a = http.post("/v2/models/auto/infer", body, headers)
                r = (p, a.status, a.body[:200])
            except Exception as e:  # a hang (timeout) or a dropped connection
                r = (p, repr(e), b"")
            with lock:
                results.append(r)
                if p == 1 and sum(1 for x in results if x[0] == 1) >= after_kill:
                    done.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(threads_n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(results) < before_kill and time.monotonic() < deadline:
        time.sleep(0.01)
    restarts = parallel.log_text().count("is now ready")
    os.kill(workers[0], signal.SIGKILL)
    phase[0] = 1
    done.wait(timeout=120)
    done.set()
    for t in threads:
        t.join(timeout=40)
    # MLServer starts a replacement and loads the models into it
    deadline = time.monotonic() + 90
    while parallel.log_text().count("is now ready") == restarts and time.monotonic() < deadline:
        time.sleep(0.2)
    assert parallel.log_text().count("is now ready") > restarts, parallel.log_text()[-3000:]
    http = Http(parallel.http_port)
    later = Counter(http.post("/v2/models/auto/infer", body, headers).status for _ in range(100))
    failed = [r for r in results if r[1] != 200]
    REPORT["kill worker"] = (f"parallel_workers 2, {threads_n} clients: {len(results)} requests during the run "
                             f"({sum(1 for r in results if r[1] == 200)} ok, {len(failed)} failed: "
                             f"{dict(Counter(str(r[1]) for r in failed))}); after the restart {dict(later)}")
    assert all(r[1] == 500 and b"Worker process stopped unexpectedly" in r[2] for r in failed), failed[:5]
    assert len(failed) <= threads_n, "only requests in flight on the killed worker may fail"
    assert later == Counter({200: 100})
    assert len(_workers(parallel.process.pid)) == 2


# ---- soak -------------------------------------------------------------------------------------

SOAK_MIX = (  # (weight, kind, expected answer)
    (40, "rest_valid", 200), (10, "grpc_valid", "OK"), (15, "rest_bad_input", 400), (10, "rest_no_key", 401),
    (5, "rest_unknown_model", 404), (5, "rest_not_json", 400), (5, "rest_too_long", 400),
    (5, "grpc_bad_input", "INVALID_ARGUMENT"), (5, "grpc_no_key", "UNAUTHENTICATED"),
)


def _soak_call(kind: str, rng: random.Random, http: Http, grpc_client, key: str):
    model = rng.choice(ALL)
    body = request_json(model)
    auth = {"X-API-Key": key}
    if kind == "rest_valid":
        return http.post(f"/v2/models/{model}/infer", body, auth).status
    if kind == "rest_bad_input":
        body["inputs"][0]["shape"] = [body["inputs"][0]["shape"][0] + 1]
        return http.post(f"/v2/models/{model}/infer", body, auth).status
    if kind == "rest_no_key":
        return http.post(f"/v2/models/{model}/infer", body).status
    if kind == "rest_unknown_model":
        return http.post(f"/v2/models/{model}x/infer", body, auth).status
    if kind == "rest_not_json":
        return http.post(f"/v2/models/{model}/infer", json.dumps(body)[:-5], auth).status
    if kind == "rest_too_long":
        text = next(i for i in body["inputs"] if i["datatype"] == "BYTES")
        text["data"][0] = "x" * 20_000
        return http.post(f"/v2/models/{model}/infer", body, auth).status
    # gRPC
    spec = body["inputs"][0]
    inp = grpcclient.InferInput(spec["name"], spec["shape"], spec["datatype"])
    dtype = {"INT64": np.int64, "FP64": np.float64, "BYTES": np.object_, "FP32": np.float32, "INT32": np.int32}
    data = np.array(spec["data"], dtype=dtype[spec["datatype"]])
    if kind == "grpc_bad_input" and spec["datatype"] != "BYTES":
        data = data.astype(np.float64) * np.inf
        inp = grpcclient.InferInput(spec["name"], spec["shape"], "FP64")
    elif kind == "grpc_bad_input":
        data = np.array([b"\xff\xfe"] * len(data), dtype=np.object_)
    inp.set_data_from_numpy(data)
    try:
        grpc_client.infer(model, [inp], headers={} if kind == "grpc_no_key" else {"x-api-key": key})
        return "OK"
    except InferenceServerException as e:
        return e.status().replace("StatusCode.", "")


def test_soak_mixed_traffic_at_a_fixed_rate(tmp_path, credentials):
    seconds = float(os.environ.get("SOAK_SECONDS", "30"))
    rate = float(os.environ.get("SOAK_RATE", "40"))
    repo = copy_repository(tmp_path / "repository", ALL)
    srv = start_server(repo, tmp_path, [f"/v2/models/{m}/ready" for m in ALL], env=credentials.env(reload_seconds=5))
    try:
        http = Http(srv.http_port, timeout=30)
        grpc_client = grpcclient.InferenceServerClient(srv.grpc)
        rng = random.Random(7)
        kinds = [k for w, k, _ in SOAK_MIX for _ in range(w)]
        expected = {k: e for _, k, e in SOAK_MIX}
        total = int(seconds * rate)
        answers, unexpected, samples, late = Counter(), [], [], 0
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > 1.0:
                late += 1  # more than a second behind the schedule (counted, not asserted)
            kind = rng.choice(kinds)
            got = _soak_call(kind, rng, http, grpc_client, credentials.keys[i % 2])
            answers[(kind, got)] += 1
            if got != expected[kind]:
                unexpected.append((i, kind, got))
            if i % max(1, int(rate * 5)) == 0:  # a memory sample every ~5 s
                samples.append(tree_rss_mib(srv.process.pid))
        elapsed = time.monotonic() - start
        samples.append(tree_rss_mib(srv.process.pid))
        warm = samples[len(samples) // 3] if len(samples) >= 3 else samples[0]
        growth = max(samples[len(samples) // 3:]) - warm
        REPORT["soak"] = (f"{total} requests in {elapsed:.0f} s ({total / elapsed:.1f}/s, target {rate:g}/s; "
                          f"{late} over 1 s late), {len(unexpected)} unexpected; mix "
                          f"{dict(Counter(k for (k, _) in answers.elements()))}; RSS {samples[0]:.0f} -> "
                          f"{samples[-1]:.0f} MiB (max {max(samples):.0f}, growth after the first third "
                          f"{growth:+.1f} MiB)")
        assert not unexpected, unexpected[:10]
        assert srv.ready() and all(srv.ready(f"/v2/models/{m}/ready") for m in ALL)
        assert growth < 40, f"memory grew {growth:.1f} MiB after warm-up: {samples}"
        assert "SENTINEL" not in srv.log_text()
    finally:
        stop_server(srv)
