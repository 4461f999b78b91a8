"""The pod KServe would make for one vertical, run with `podman kube play`.

Assembled from the rendered chart (`helm template`), read generically so that chart changes
flow in: the serving runtime's container (the InferenceService's `runtime`, else the one
runtime) with the predictor's `model` fields merged over it, the runtime's volumes, and the
predictor's pod-level fields.

What this test stands in for, because no Kubernetes API server or KServe controller runs here:
- KServe's predictor reconciler: merging the `model` container fields onto the runtime's
  container as its MergeRuntimeContainers does (a strategic merge patch: env by name, ports by
  containerPort, volumeMounts by mountPath, other fields replaced), copying the runtime's
  volumes and the predictor's pod fields, and replacing `{{.Name}}` in args;
- the storage initializer (or the PVC mount of a pvc:// storageUri): the vertical's bundle is
  a read-only hostPath at /mnt/models, laid out as KServe leaves it;
- the kubelet's readiness/startup probes: the test polls the rendered probe paths through the
  published ports (podman kube play turns only liveness probes into health checks);
- the image tag: the runtime's image is replaced by the image built in this session.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import time
import urllib.request
import uuid

import pytest
import tritonclient.http as httpclient
import yaml

from ..conftest import request_json, shipped_bundle
from ..k8s.kube import helm_template
from ..test_server import check_outputs, triton_inputs
from .conftest import engine, http_get, run_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

VERTICAL = "auto"
# Fields of the predictor's `model` that KServe merges onto the runtime's container.
CONTAINER_FIELDS = ("command", "args", "env", "ports", "livenessProbe", "readinessProbe", "startupProbe",
                    "securityContext", "resources", "volumeMounts", "workingDir", "lifecycle")
# Pod-level fields of the predictor spec (PodSpec inlined in KServe's ComponentExtensionSpec).
POD_FIELDS = ("securityContext", "terminationGracePeriodSeconds", "volumes", "serviceAccountName")


def merge_by(base: list[dict], over: list[dict], key: str) -> list[dict]:
    merged = {item[key]: item for item in base}
    merged.update({item[key]: item for item in over})
    return list(merged.values())


def kserve_pod(objs: list[dict], vertical: str, image: str, models_dir, host_ports: dict[int, int]) -> dict:
    isvc = next(o for o in objs if o["kind"] == "InferenceService" and o["metadata"]["name"] == vertical)
    predictor = isvc["spec"]["predictor"]
    model = predictor.get("model", {})
    runtimes = [o for o in objs if o["kind"] in ("ClusterServingRuntime", "ServingRuntime")]
    runtime = next((r for r in runtimes if r["metadata"]["name"] == model.get("runtime")), None)
    assert runtime or len(runtimes) == 1, f"no runtime {model.get('runtime')!r} among {[r['metadata']['name'] for r in runtimes]}"
    runtime = runtime or runtimes[0]
    container = copy.deepcopy(next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"))
    for f in CONTAINER_FIELDS:
        if f not in model:
            continue
        if f == "env":
            container[f] = merge_by(container.get(f, []), model[f], "name")
        elif f == "ports":
            container[f] = merge_by(container.get(f, []), model[f], "containerPort")
        elif f == "volumeMounts":
            container[f] = merge_by(container.get(f, []), model[f], "mountPath")
        else:
            container[f] = copy.deepcopy(model[f])
    container["args"] = [a.replace("{{.Name}}", vertical) for a in container.get("args", [])]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    for p in container.get("ports", []):
        p["hostPort"] = host_ports[p["containerPort"]]
        p["hostIP"] = "127.0.0.1"
    container.setdefault("volumeMounts", []).append(
        {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True})

    spec = {"containers": [container], "restartPolicy": "Never",
            "volumes": copy.deepcopy(runtime["spec"].get("volumes", []))}
    for f in POD_FIELDS:
        if f in predictor:
            spec[f] = merge_by(spec[f], predictor[f], "name") if f == "volumes" else copy.deepcopy(predictor[f])
    spec["volumes"].append({"name": "kserve-provision-location",
                            "hostPath": {"path": str(models_dir), "type": "Directory"}})
    labels = {**isvc["metadata"].get("labels", {}), **predictor.get("labels", {}),
              "serving.kserve.io/inferenceservice": vertical, "component": "predictor"}
    name = f"{vertical}-predictor-pytest-{uuid.uuid4().hex[:6]}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def quantity_bytes(q: str) -> int:
    """A Kubernetes memory quantity ("1Gi", "512M", "1073741824") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def repository_call(base: str, action: str, name: str) -> int:
    req = urllib.request.Request(f"{base}/v2/repository/models/{name}/{action}", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_status(url: str, want: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if http_get(url) == want:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {want} within {timeout} s")


def test_kserve_pod_of_one_vertical_runs_with_podman_kube_play(images, figures, tmp_path):
    if engine() != "podman":
        pytest.fail("`kube play` needs podman (make tools installs it)", pytrace=False)
    models = tmp_path / "provision-location"
    shutil.copytree(shipped_bundle(VERTICAL), models)
    objs = helm_template()
    ports = [p["containerPort"] for r in objs if r["kind"] in ("ClusterServingRuntime", "ServingRuntime")
             for c in r["spec"]["containers"] for p in c.get("ports", [])]
    host_ports = dict(zip(sorted(set(ports)), free_ports(len(set(ports)))))
    pod = kserve_pod(objs, VERTICAL, images.plain, models, host_ports)
    container = pod["spec"]["containers"][0]
    kube = tmp_path / "pod.yaml"
    kube.write_text(yaml.safe_dump(pod, sort_keys=False))

    start = time.monotonic()
    run_engine("kube", "play", str(kube), timeout=180)
    try:
        named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}

        def host_port(port) -> int:  # a probe's port: a number or the name of a container port
            return host_ports[named.get(port, port)]

        def url(probe: str) -> str:
            get = container[probe]["httpGet"]
            return f"http://127.0.0.1:{host_port(get['port'])}{get['path']}"

        startup = container.get("startupProbe") or container["readinessProbe"]
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        wait_status(url("readinessProbe"), 200, timeout=min(budget, 180))
        ready_s = time.monotonic() - start
        assert ready_s < budget, f"ready after {ready_s:.0f} s: beyond the startup probe's {budget} s"
        assert http_get(url("livenessProbe")) == 200

        # what ran is what the chart says: user, read-only root, command and args
        info = json.loads(run_engine("inspect", f"{pod['metadata']['name']}-{container['name']}").stdout)[0]
        assert info["Config"]["User"] in ("1000", "")  # the image's USER 1000 when the chart sets no runAsUser
        sc = container.get("securityContext", {})
        assert info["HostConfig"]["ReadonlyRootfs"] == bool(sc.get("readOnlyRootFilesystem"))
        assert info["Path"] == container["command"][0] and info["Args"][-len(container["args"]):] == container["args"]
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        if memory:
            assert info["HostConfig"]["Memory"] == quantity_bytes(memory), "the memory limit is enforced"

        # V2 through the published HTTP port, answers equal predictors/ in-process
        http_port = host_port(container["readinessProbe"]["httpGet"]["port"])
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{http_port}")
        request = request_json(VERTICAL)
        result = client.infer(VERTICAL, triton_inputs(httpclient, request), parameters=request["parameters"])
        check_outputs(VERTICAL, request, {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]})

        # the readiness path answers 200 only while the model is loaded; liveness stays 200
        base = f"http://127.0.0.1:{http_port}"
        assert repository_call(base, "unload", VERTICAL) == 200
        wait_status(url("readinessProbe"), 404, timeout=10)
        assert http_get(url("livenessProbe")) == 200
        assert repository_call(base, "load", VERTICAL) == 200
        wait_status(url("readinessProbe"), 200, timeout=60)
        figures[f"{VERTICAL}: kube play pod ready (s)"] = f"{ready_s:.1f}"
    finally:
        run_engine("kube", "down", str(kube), check=False, timeout=120)
