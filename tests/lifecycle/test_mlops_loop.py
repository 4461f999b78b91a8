"""The MLOps loop on loopback (issue 15's "Done when"):

drifted traffic raises PSI in Prometheus -> `insurance retrain` decides a retrain is due, trains
from the PostgreSQL table, gates and registers 1.1.0 -> `insurance rollout auto` steps it
10 -> 50 -> 100 and promotes; a second run with a deliberately worse candidate (trained on
labels scrambled by the query) is rolled back at the first step.

Real: PostgreSQL, MLServer (one process per version, as KServe runs one predictor per revision),
nginx as the weighted gateway, Prometheus scraping every predictor, the kserve SDK's KServeClient,
the `insurance` CLI as a process. Stand-ins (tests/lifecycle/canary_stack.py): the Kubernetes API
server (recorded InferenceService objects), helm + KServe's controller (values file, predictors
started and stopped, nginx weights rewritten and reloaded, status reported).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from training.synthetic import generate

from ..conftest import ROOT, copy_repository, free_port
from ..postgres import Postgres, find_postgres_bin, load_into
from ..prometheus import Prometheus
from .canary_stack import Controller, KubeStandin, NginxGateway, Traffic, isvc_for, write_helm
from .conftest import insurance

NS, RELEASE = "insurance-serving", "insurance-serving"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
PSI_WINDOW = "5s"
# Each predictor: drift from 200 rows (window 400), live ROC-AUC from 50 outcomes: small numbers
# so that the loop runs in a minute or two; the rules are the production ones.
PREDICTOR_ENV = {"INSURANCE_DRIFT_MIN_ROWS": "200", "INSURANCE_DRIFT_WINDOW": "400",
                 "INSURANCE_PERFORMANCE_MIN_OUTCOMES": "50", "INSURANCE_PERFORMANCE_WINDOW": "400"}


def _drifted(df):
    """Older drivers: age and driving_years up 30 years (clipped to the contract's maximum)."""
    out = df.copy()
    out["age"] = (out["age"] + 30).clip(upper=110)
    out["driving_years"] = (out["driving_years"] + 30).clip(upper=90)
    return out


def _records(df, vertical):
    cols = list(vertical.feature_names)
    return df[cols].astype(object).where(df[cols].notna(), None).to_dict("records")


@pytest.fixture(scope="module")
def loop(tmp_path_factory, config, prometheus_binary):
    if find_postgres_bin() is None or not Path("/usr/sbin/nginx").exists():
        pytest.fail("PostgreSQL or nginx missing: run `make tools` (Debian's postgresql and nginx-light)",
                    pytrace=False)
    tmp = tmp_path_factory.mktemp("loop")
    vertical = config.vertical("auto")
    stack: dict = {"tmp": tmp}
    cleanup = []
    try:
        pg = Postgres(find_postgres_bin())
        cleanup.append(pg.stop)
        data = generate(vertical, seed=42)  # the rows 1.0.0 was trained on (make train)
        load_into(pg, "auto_leads", data, vertical)
        repo = copy_repository(tmp / "repo", ["auto"])
        values = yaml.safe_load((ROOT / "helm/insurance-serving/values.yaml").read_text())
        values["deploymentMode"] = "Knative"
        state = tmp / "release.json"
        api = KubeStandin()
        cleanup.append(api.stop)
        gateway = NginxGateway()
        cleanup.append(gateway.stop)
        ports = {v: free_port() for v in VERSIONS}
        controller = Controller("auto", NS, repo, tmp, gateway, api, ports, PREDICTOR_ENV)
        cleanup.append(controller.stop)
        state.write_text(json.dumps({"values": values, "generation": 1, "controller": controller.url}))
        controller.serve("1.0.0")
        controller.reconcile(values, isvc_for(values, "auto", NS, 1))
        prom = Prometheus(prometheus_binary, tmp / "prometheus", [f"127.0.0.1:{p}" for p in ports.values()])
        cleanup.append(prom.stop)
        test_rows = generate(vertical, seed=11, rows=4000)
        traffic = Traffic(gateway.url, controller.addresses, _records(test_rows, vertical),
                          test_rows["converted"].tolist()).start()
        cleanup.append(traffic.stop)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(api.kubeconfig(NS)))
        stack.update(pg=pg, repo=repo, state=state, api=api, gateway=gateway, controller=controller, prom=prom,
                     traffic=traffic, kubeconfig=kubeconfig, helm=write_helm(tmp, ROOT), vertical=vertical,
                     test_rows=test_rows,
                     env={"INSURANCE_STANDIN_STATE": str(state), "INSURANCE_STANDIN_ROOT": str(ROOT),
                          "PGPASSWORD": pg.password})
        yield stack
    finally:
        for stop in reversed(cleanup):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop every part
                pass


def _values(loop) -> dict:
    return json.loads(loop["state"].read_text())["values"]["verticals"]["auto"]


def _release_args(loop) -> list[str]:
    return ["--release", RELEASE, "--namespace", NS, "--helm", str(loop["helm"])]


def _rollout_args(loop) -> list[str]:
    # Judging thresholds sized for a few hundred rows per step (the defaults want 100 requests).
    return ["--prometheus", loop["prom"].url, "--steps", "10,50,100", "--interval", "10s", "--ready-timeout", "180s",
            "--kubeconfig", str(loop["kubeconfig"]), "--chart", str(ROOT / "helm/insurance-serving"),
            "--min-requests", "10", "--latency-ratio", "5", "--canary-auc-tolerance", "0.1"]


def _psi_held(loop, threshold: float = 0.2):
    sel = 'model_name="auto",model_version="1.0.0",feature="age"'
    loop["prom"].wait(f"min_over_time(ml_feature_drift_psi{{{sel}}}[{PSI_WINDOW}]) > {threshold} "
                      f"and ml_feature_drift_psi{{{sel}}} offset {PSI_WINDOW} > {threshold}",
                      lambda r: len(r) == 1, timeout=120)


@pytest.mark.slow
def test_drift_retrain_rollout_promote_then_worse_candidate_rolled_back(loop):
    prom, tmp, traffic, controller = loop["prom"], loop["tmp"], loop["traffic"], loop["controller"]
    # live ROC-AUC from the first 50-400 outcomes is noisy: a tolerance sized for that sample
    retrain = ["retrain", "--vertical", "auto", "--prometheus", prom.url, "--repository", str(loop["repo"]),
               "--psi-window", PSI_WINDOW, "--auc-tolerance", "0.1", *_release_args(loop)]

    # 1. normal traffic: drift gauges exist and stay low -> not due
    prom.wait('ml_feature_drift_psi{model_name="auto",model_version="1.0.0",feature="age"}', lambda r: len(r) == 1,
              timeout=120)
    p = insurance(*retrain, "--check-only", "--data", loop["pg"].url(), "--table", "auto_leads",
                  "--report", str(tmp / "check.json"), env=loop["env"])
    assert p.returncode == 0, p.stdout + p.stderr
    check = json.loads((tmp / "check.json").read_text())["decision"]
    assert check["due"] is False, p.stdout
    assert check["serving_version"] == "1.0.0" and check["serving_from"] == "chart values"
    assert "decision: NOT DUE" in p.stdout
    assert check["triggers"][0]["evidence"]["features"]["age"]["psi"] < 0.2

    # 2. drifted traffic: age PSI above 0.2 for the whole window -> due; train from PostgreSQL, gate, register
    traffic.rows = _records(_drifted(loop["test_rows"]), loop["vertical"])
    _psi_held(loop)
    p = insurance(*retrain, "--data", loop["pg"].url(), "--table", "auto_leads", "--time-column", "quoted_at",
                  "--report", str(tmp / "retrain.json"), env=loop["env"])
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((tmp / "retrain.json").read_text())
    drift = rep["decision"]["triggers"][0]
    assert rep["decision"]["due"] and drift["name"] == "drift" and drift["fired"]
    assert drift["evidence"]["features"]["age"]["held"] and drift["evidence"]["features"]["age"]["psi"] > 0.2
    assert rep["registration"]["registered"] and rep["registration"]["version"] == "1.1.0"
    quality = next(c for c in rep["registration"]["validation"]["checks"] if c["name"] == "quality")
    assert quality["status"] == "pass"
    manifest = json.loads((loop["repo"] / "auto/1.1.0/manifest.json").read_text())
    assert manifest["training"]["database"]["table"] == "auto_leads"
    assert manifest["training"]["database"]["rows"] == 20000
    assert loop["pg"].password not in (loop["repo"] / "auto/1.1.0/manifest.json").read_text()
    # the table holds 1.0.0's training rows: the same model, byte for byte
    assert (loop["repo"] / "auto/1.1.0/model.txt").read_bytes() == (loop["repo"] / "auto/1.0.0/model.txt").read_bytes()
    assert "not rolled out (--rollout none)" in p.stdout and not _values(loop)["canary"]["enabled"]

    # 3. rollout auto: 10 -> 50 -> 100 -> promote
    traffic.rows = _records(loop["test_rows"], loop["vertical"])
    report = tmp / "rollout-1.1.0.json"
    p = insurance("rollout", "auto", "--vertical", "auto", "--version", "1.1.0", *_release_args(loop),
                  *_rollout_args(loop), "--report", str(report), env=loop["env"], timeout=600)
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(report.read_text())
    assert r["outcome"] == "promoted" and [s["percent"] for s in r["history"]] == [10, 50, 100]
    assert all(s["verdict"] == "promote" for s in r["history"])
    for s in r["history"]:
        last = s["judgements"][-1]["ab"]
        assert last["canary"]["requests"] >= 10 and last["canary"]["live_roc_auc"] is not None
    assert r["history"][0]["status"]["canary_percent"] == 10 and r["history"][0]["ready_after_s"] > 0
    assert _values(loop)["version"] == "1.1.0" and not _values(loop)["canary"]["enabled"]
    assert {"1.0.0": 90, "1.1.0": 10} in controller.weights_log and {"1.0.0": 50, "1.1.0": 50} in controller.weights_log
    assert list(controller.servers) == ["1.1.0"]  # 1.0.0's predictor retired after the promotion
    assert any(path.endswith(f"/namespaces/{NS}/inferenceservices/auto") for path in loop["api"].requests)

    # 4. a deliberately worse candidate (half the labels flipped by the query), let through the gate
    #    with --tolerance 1, rolled out by retrain --rollout auto: rolled back at the first step
    cols = ", ".join(f'"{c}"' for c in loop["vertical"].feature_names)
    query = (f"SELECT row_id, quoted_at, {cols}, CASE WHEN row_id % 2 = 0 THEN 1 - converted ELSE converted END "
             "AS converted FROM auto_leads ORDER BY row_id")
    p = insurance(*retrain, "--force", "--data", loop["pg"].url(), "--query", query, "--tolerance", "1",
                  "--rollout", "auto", *_rollout_args(loop), "--interval", "120s", "--check-every", "4s",
                  "--rollout-report", str(tmp / "rollout-1.2.0.json"),
                  "--report", str(tmp / "retrain-worse.json"), env=loop["env"], timeout=600)
    print("\n" + p.stdout)
    assert p.returncode == 1, p.stdout + p.stderr
    rep = json.loads((tmp / "retrain-worse.json").read_text())
    assert rep["registration"]["version"] == "1.2.0" and rep["rollout"]["outcome"] == "rolled back"
    hist = rep["rollout"]["history"]
    assert [s["percent"] for s in hist] == [10] and hist[0]["verdict"] == "roll back"
    assert hist[0]["rule"].startswith("quality: canary live ROC-AUC")
    # found by a check within the 120 s interval, and rolled back then, not at the interval's end
    assert hist[0]["judgements"][-1]["early"] is True
    applied = datetime.fromisoformat(hist[0]["applied_at"])
    assert (datetime.fromisoformat(rep["rollout"]["final"]["at"]) - applied).total_seconds() < 120
    assert _values(loop)["version"] == "1.1.0" and _values(loop)["canary"]["trafficPercent"] == 0
    assert controller.weights_log[-1].get("1.2.0", 0) == 0 and controller.weights_log[-1]["1.1.0"] == 100
    assert not traffic.errors, traffic.errors[:5]
    assert not controller.errors, controller.errors


@pytest.mark.slow
def test_interrupted_rollout_keeps_its_weight_and_resumes(loop):
    """SIGINT during a step: the release keeps the canary at that step's weight, the report says so
    (exit 3); `--resume` re-judges that step and finishes the rollout."""
    import signal
    import subprocess
    import sys
    import time

    from lifecycle.registry import register

    stable = _values(loop)["version"]
    candidate = "1.3.0"
    assert register(loop["repo"] / "auto" / stable, loop["repo"], version=candidate, tolerance=0.1,
                    latency_budget_ms=5000).ok
    report = loop["tmp"] / f"rollout-{candidate}.json"
    args = ["rollout", "auto", "--vertical", "auto", "--version", candidate, *_release_args(loop), *_rollout_args(loop),
            "--report", str(report)]
    slow = [a if a != "10s" else "600s" for a in args]  # a long interval: interrupted while it waits
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), **loop["env"]}
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", *slow], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if report.exists():
            r = json.loads(report.read_text())
            if r["history"] and r["history"][-1].get("ready_after_s") is not None:
                break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    r = json.loads(report.read_text())
    assert r["outcome"] == "interrupted" and r["current_percent"] == 10 and "SIGINT" in r["message"]
    assert _values(loop)["canary"] == {**_values(loop)["canary"], "enabled": True, "version": candidate,
                                       "trafficPercent": 10}

    p = insurance(*args, "--resume", env=loop["env"], timeout=600)
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(report.read_text())
    assert r["outcome"] == "promoted" and [s["percent"] for s in r["history"]] == [10, 50, 100]
    assert r["message"].startswith(f"{candidate} is the stable version")
    assert _values(loop)["version"] == candidate
    p = insurance(*args, "--resume", env=loop["env"])
    assert p.returncode == 2 and "that rollout already ended (promoted)" in p.stderr
