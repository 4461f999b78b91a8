"""`insurance rollout auto`: InferenceService status read through the kserve SDK's KServeClient, and
the arguments it refuses before touching the release.

No Kubernetes API server runs here: KubeStandin (tests/lifecycle/canary_stack.py) stands in for it,
answering the GET a KServeClient sends for an InferenceService with recorded objects
(tests/testdata/isvc/: a Knative canary at 10 % ready, the same with the canary revision failed, a
Standard-mode object whose controller has not caught up with the spec). The steps, verdicts,
promotion, roll-back and --resume run against real MLServer, nginx and Prometheus in
test_mlops_loop.py."""

from __future__ import annotations

import json
import time

import pytest

from lifecycle.autorollout import AutoRolloutError, IsvcStatus, StatusReader, parse_steps

from .canary_stack import KubeStandin, recorded_isvc
from .conftest import insurance

NS = "insurance-serving"


@pytest.fixture
def api():
    standin = KubeStandin()
    yield standin
    standin.stop()


def test_status_of_recorded_objects():
    ready = IsvcStatus.from_object(recorded_isvc("knative-canary-ready"))
    assert ready.ready and ready.canary_percent == 10 and ready.latest_ready == "auto-predictor-00002"
    assert ready.settled_at(10) == (True, "")
    ok, why = ready.settled_at(25)
    assert not ok and why == "canary takes 10% of the traffic, not 25% yet"

    failed = IsvcStatus.from_object(recorded_isvc("knative-canary-revision-failed"))
    ok, why = failed.settled_at(10)
    assert not ok and "PredictorReady=False" in why and "Ready=False" in why

    standard = IsvcStatus.from_object(recorded_isvc("standard-reconciling"))
    assert standard.ready and standard.canary_percent is None  # Standard mode reports no traffic split
    ok, why = standard.settled_at(10)
    assert not ok and why == "observedGeneration 2 < generation 3"


def test_status_reader_reads_through_kserve_client(api):
    api.put(recorded_isvc("knative-canary-ready"))
    reader = StatusReader(NS, config_dict=api.kubeconfig(NS))
    st = reader.get("auto")
    assert st.name == "auto" and st.canary_percent == 10 and st.conditions["IngressReady"] == "True"
    assert api.requests[-1] == f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/auto"
    with pytest.raises(AutoRolloutError, match="cannot read InferenceService insurance-serving/home"):
        reader.get("home")


def test_wait_follows_the_controller(api):
    """Not reconciled yet (new generation, old status): wait() keeps polling; once the controller
    reports the step, it returns with the time it took."""
    obj = recorded_isvc("knative-canary-ready")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] = 1
    obj["status"]["components"]["predictor"]["traffic"][0]["percent"] = 0
    obj["status"]["components"]["predictor"]["traffic"][1]["percent"] = 100
    api.put(obj)
    step = recorded_isvc("knative-canary-ready")  # generation 2, canary at 10 %
    api.put(step, reconciled=False)
    reader = StatusReader(NS, config_dict=api.kubeconfig(NS))
    assert not reader.get("auto").ready
    import threading

    threading.Timer(2.0, lambda: api.put(step)).start()
    st, waited = reader.wait("auto", 10, timeout=30, poll=0.5)
    assert st.canary_percent == 10 and st.observed_generation == 2 and 1.5 <= waited < 30


def test_wait_gives_up_with_the_reason(api):
    api.put(recorded_isvc("knative-canary-revision-failed"))
    reader = StatusReader(NS, config_dict=api.kubeconfig(NS))
    start = time.monotonic()
    with pytest.raises(AutoRolloutError, match="not Ready within 2 s"):
        reader.wait("auto", 10, timeout=2, poll=0.5)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("steps, ok", [("10,25,50,100", True), ("5,100", True), ("50,10", False), ("0,50", False),
                                       ("10,10", False), ("10,150", False), ("ten", False)])
def test_steps_are_checked(steps, ok):
    if ok:
        assert parse_steps(steps) == [int(s) for s in steps.split(",")]
    else:
        with pytest.raises(AutoRolloutError, match="--steps"):
            parse_steps(steps)


def _values_file(tmp_path, **canary):
    values = {"deploymentMode": "Knative", "verticals": {"auto": {
        "enabled": True, "version": "1.0.0", "storageUri": "pvc://insurance-models/auto/1.0.0",
        "canary": {"enabled": False, "version": "", "storageUri": "", "trafficPercent": 10, **canary}}}}
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize("extra, canary, words", [
    ([], {}, "rollout auto needs --prometheus"),
    (["--prometheus", "http://127.0.0.1:9", "--interval", "ten minutes"], {}, "duration 'ten minutes'"),
    (["--prometheus", "http://127.0.0.1:9", "--version", "1.0.0"], {}, "1.0.0 is already the stable version"),
    (["--prometheus", "http://127.0.0.1:9"], {"enabled": True, "version": "1.0.5", "trafficPercent": 20},
     "another canary of auto is in progress (stable 1.0.0 (80%), canary 1.0.5 (20%))"),
    (["--prometheus", "http://127.0.0.1:9", "--resume"], {}, "--resume needs the report of the interrupted run"),
])
def test_refusals_change_nothing(tmp_path, extra, canary, words):
    values = _values_file(tmp_path, **canary)
    before = values.read_text()
    args = ["rollout", "auto", "--vertical", "auto", "--version", "1.1.0", "--values-file", str(values),
            "--no-status", "--report", str(tmp_path / "report.json"), *extra]
    if "--version" in extra:
        args[args.index("1.1.0")] = extra[extra.index("--version") + 1]
    p = insurance(*args)
    assert p.returncode == 2 and words in p.stderr, p.stdout + p.stderr
    assert values.read_text() == before and "$ " not in p.stdout  # no helm command was run


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    values = _values_file(tmp_path)
    before = values.read_text()
    p = insurance("rollout", "auto", "--vertical", "auto", "--version", "1.1.0", "--values-file", str(values),
                  "--prometheus", "http://127.0.0.1:9", "--steps", "5,50,100", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "plan: auto 1.1.0 at 5%, 50%, 100%, each for 10m (checked every 1m)" in p.stdout
    assert "--set verticals.auto.canary.trafficPercent=5" in p.stdout and "helm upgrade insurance-serving" in p.stdout
    assert values.read_text() == before and not (tmp_path / "rollout-auto-1.1.0.json").exists()
