"""The image's size and contents, and its stop: SIGTERM (what the kubelet sends when a pod
ends) under load loses no request that the server accepted, and the server exits 0 quickly."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time

import pytest

from ..conftest import ROOT, request_json, shipped_bundle
from .conftest import run_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def image_bytes(ref: str) -> int:
    return int(run_engine("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def test_image_size_and_contents(images, figures, container_factory):
    plain, baked = image_bytes(images.plain), image_bytes(images.baked)
    models = sum(f.stat().st_size for f in (ROOT / "models").rglob("*") if f.is_file() and f.name != "settings.json")
    figures["image size (MB)"] = f"{plain / 1e6:.0f}"
    figures["baked image size (MB)"] = f"{baked / 1e6:.0f}"
    # the baked variant adds the models and nothing else (one layer; allow filesystem overhead)
    assert 0 < baked - plain < models + 1_000_000, (plain, baked, models)
    # the runtime stage carries no build leftovers: sources, compilers, caches (its byte-code is
    # what the server and its children import, built on purpose: test_run.py)
    c = container_factory(images.plain, user="1000")
    check = ("import os, shutil, sys\n"
             "bad = [p for p in ('/src', '/root/.cache/pip', '/home/mlserver/.cache') if os.path.exists(p)]\n"
             "bad += [t for t in ('gcc', 'cc', 'git') if shutil.which(t)]\n"
             "sys.exit(' '.join(bad) or None)")
    c.exec("python", "-c", check)


def _post(port: int, body: bytes) -> str:
    """One request on a new connection: 'ok', 'refused' (never accepted) or what failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
    except OSError:
        return "refused"
    try:
        conn.request("POST", "/v2/models/auto/infer", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200 and json.loads(data)["model_name"] == "auto":
            return "ok"
        return f"status {resp.status}: {data[:200]!r}"
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as e:
        return f"dropped: {e!r}"
    except OSError as e:
        return f"error: {e!r}"
    finally:
        conn.close()


def big_request(name: str, repeat: int) -> bytes:
    """The example request with its rows repeated: requests that take long enough to be in flight."""
    request = request_json(name)
    for spec in request["inputs"]:
        spec["data"] = spec["data"] * repeat
        spec["shape"] = [spec["shape"][0] * repeat, *spec["shape"][1:]]
    return json.dumps(request).encode()


def test_sigterm_under_load_loses_no_request(images, container_factory, figures, tmp_path):
    """Kubernetes takes an ending pod out of the Service's endpoints (the chart's preStop wait
    covers the delay) and sends SIGTERM: no new requests come, but those in flight must all be
    answered, and the server must exit 0 well within the grace period."""
    models = tmp_path / "models"
    shutil.copytree(shipped_bundle("auto"), models)
    c = container_factory(images.plain, user="1000", models=models)
    c.wait_ready([f"/v2/models/auto/versions/{shipped_bundle('auto').name}/ready"])
    port = c.ports[8080]
    body = big_request("auto", 700)  # 2,100 rows

    results: list[str] = []
    in_flight = [0]
    lock = threading.Lock()
    term_sent = threading.Event()

    def load():
        while not term_sent.is_set():  # out of the endpoints: no new requests after SIGTERM
            with lock:
                in_flight[0] += 1
            outcome = _post(port, body)
            with lock:
                in_flight[0] -= 1
                results.append(outcome)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    with lock:
        assert results.count("ok") >= 6, results[:10]
        busy, done_before = in_flight[0], len(results)
        term_sent.set()
    sent = time.monotonic()
    run_engine("kill", "--signal", "TERM", c.name)
    code = int(run_engine("wait", c.name, timeout=60).stdout.strip().splitlines()[-1])
    stopped_s = time.monotonic() - sent
    for t in threads:
        t.join(30)
    answered_after = results[done_before:]
    failed = [r for r in results if r != "ok"]
    figures["SIGTERM under load: stop (s)"] = f"{stopped_s:.1f}"
    figures["SIGTERM under load: requests ok / in flight at SIGTERM / failed"] = (
        f"{results.count('ok')} / {busy} / {len(failed)}")
    assert busy >= 1 and len(answered_after) >= 1, "no request was in flight when SIGTERM came"
    assert not failed, failed[:5]
    assert code == 0, f"exit code {code} after SIGTERM:\n{c.logs()}"
    assert stopped_s < 10, f"took {stopped_s:.1f} s to stop"
