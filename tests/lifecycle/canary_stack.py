"""The loopback stand-ins of a cluster for `insurance rollout auto` / `insurance retrain` tests.

Real parts: MLServer processes (one per model version, as KServe runs one predictor per version),
nginx as the weighted gateway (Debian's package; its upstream weights are rewritten and nginx
reloaded at each step, as Gateway API HTTPRoute weights are), Prometheus scraping every MLServer.

Stand-ins for what cannot run here, and only those:
  KubeStandin   a small HTTP server answering the Kubernetes API paths KServeClient reads
                (GET .../serving.kserve.io/v1beta1/namespaces/NS/inferenceservices/NAME) with
                recorded InferenceService objects (tests/testdata/isvc/), stands in for the
                Kubernetes API server; its delayed status updates stand in for KServe's
                controller reconciling a change.
  standin helm  `helm get values` / `helm upgrade --set ...` on a values file: stands in for helm
                + KServe's controller + the gateway controller. An upgrade writes the values,
                rewrites nginx's weights from them (lifecycle/rollout.py's routes()) and reloads
                nginx, and posts the InferenceService the controller would report.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from ..conftest import free_port, stop_process

ISVC_DIR = Path(__file__).resolve().parents[1] / "testdata" / "isvc"  # recorded InferenceService objects
ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"


def recorded_isvc(name: str) -> dict:
    return json.loads((ISVC_DIR / f"{name}.json").read_text())


# ---------------------------------------------------------------- Kubernetes API stand-in
class KubeStandin:
    """Stands in for the Kubernetes API server: serves InferenceService objects by namespace/name.
    put() replaces one (the controller stand-in calls it)."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.pending: dict[tuple[str, str], tuple[float, dict]] = {}
        self.requests: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                standin.requests.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 7 and parts[:3] == ["apis", "serving.kserve.io", "v1beta1"] \
                        and parts[3] == "namespaces" and parts[5] == "inferenceservices":
                    obj = standin.get(parts[4], parts[6])
                    if obj is not None:
                        return self._send(200, obj)
                    return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "reason": "NotFound", "code": 404,
                                            "message": f'inferenceservices.serving.kserve.io "{parts[6]}" not found'})
                return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": "the server could not find "
                                                                                      "the requested resource"})

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, obj: dict, reconciled: bool = True) -> None:
        """Store an object; reconciled=False shows it as the controller's work in progress (new
        generation, old status, Ready False) until put() again with reconciled=True."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if reconciled:
            self.pending.pop(key, None)
            self.objects[key] = obj
        else:
            self.pending[key] = obj

    def get(self, namespace: str, name: str) -> dict | None:
        key = (namespace, name)
        if key in self.pending:
            final = self.pending[key]
            shown = copy.deepcopy(final)
            old = self.objects.get(key) or final
            shown["status"] = copy.deepcopy(old.get("status") or {})
            shown["status"]["observedGeneration"] = (old.get("metadata") or {}).get("generation", 1)
            for c in shown["status"].get("conditions", []):
                if c["type"] in ("Ready", "PredictorReady"):
                    c["status"] = "False"
                    c["reason"] = "RevisionMissing"
            return shown
        return self.objects.get(key)

    def kubeconfig(self, namespace: str) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "standin",
                "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                "users": [{"name": "standin", "user": {"token": "standin-token"}}],
                "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                              "namespace": namespace}}]}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def isvc_for(values: dict, vertical: str, namespace: str, generation: int) -> dict:
    """The InferenceService status KServe (Knative mode) reports for the chart's values, built on the
    recorded canary object: traffic split between the last 100 % revision and the latest one."""
    from lifecycle.rollout import routes

    r = routes(values)[vertical]
    obj = recorded_isvc("knative-canary-ready")
    obj["metadata"].update(name=vertical, namespace=namespace, generation=generation)
    st = obj["status"]
    st["observedGeneration"] = generation
    pred = st["components"]["predictor"]
    stable_rev = f"{vertical}-predictor-{r.stable.replace('.', '-')}"
    if r.canary_active:
        canary_rev = f"{vertical}-predictor-{r.canary.replace('.', '-')}"
        pred["traffic"] = [{"revisionName": canary_rev, "percent": r.canary_percent, "latestRevision": True,
                            "tag": "latest"},
                           {"revisionName": stable_rev, "percent": 100 - r.canary_percent, "latestRevision": False,
                            "tag": "prev"}]
        pred["latestCreatedRevision"] = pred["latestReadyRevision"] = canary_rev
        pred["previousRolledoutRevision"] = stable_rev
    else:
        pred["traffic"] = [{"revisionName": stable_rev, "percent": 100, "latestRevision": True}]
        pred["latestCreatedRevision"] = pred["latestReadyRevision"] = pred["latestRolledoutRevision"] = stable_rev
        pred.pop("previousRolledoutRevision", None)
    return obj


# ---------------------------------------------------------------- nginx gateway
class NginxGateway:
    """Real nginx (master + 1 worker) on a loopback port; weights(...) rewrites the upstream and
    reloads it with SIGHUP, then waits until the new workers answer."""

    def __init__(self, binary: str = "/usr/sbin/nginx"):
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.dir / "nginx.conf"
        self.generation = 0
        self.weights({"127.0.0.1:9": 1})
        self.process = subprocess.Popen([binary, "-c", str(self.conf), "-p", str(self.dir), "-g", "daemon off;"],
                                        stdout=(self.dir / "stdout.log").open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._generation_is(self.generation):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def _generation_is(self, n: int) -> bool:
        try:
            r = httpx.get(f"{self.url}/_gateway", timeout=2)
            return r.status_code == 200 and r.text.strip() == str(n)
        except httpx.HTTPError:
            return False

    def weights(self, upstreams: dict[str, int]) -> None:
        """{"127.0.0.1:PORT": weight}; weight 0 takes the server out."""
        self.generation += 1
        servers = "\n".join(f"    server {addr} weight={w};" for addr, w in upstreams.items() if w > 0)
        self.conf.write_text(f"""
{'user root;' if os.geteuid() == 0 else ''}
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi; uwsgi_temp_path {self.dir}/uwsgi; scgi_temp_path {self.dir}/scgi;
  upstream predictors {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location = /_gateway {{ return 200 "{self.generation}\\n"; }}
    location / {{
      proxy_pass http://predictors;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
        if getattr(self, "process", None) is not None:
            os.kill(self.process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 20
            while not self._generation_is(self.generation):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not reload: {(self.dir / 'error.log').read_text()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process, grace=10)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- helm stand-in
HELM_SCRIPT = r'''
"""Stand-in for helm (+ KServe's and the gateway's controllers): see tests/lifecycle/canary_stack.py."""
import json, os, sys
sys.path.insert(0, os.environ["INSURANCE_STANDIN_ROOT"])
from tests.lifecycle.canary_stack import apply_upgrade

state_path = os.environ["INSURANCE_STANDIN_STATE"]
argv = sys.argv[1:]
state = json.load(open(state_path))
if argv[:2] == ["get", "values"]:
    print(json.dumps(state["values"]))
    sys.exit(0)
if argv[:1] == ["upgrade"]:
    sets = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1) if argv[i] in ("--set", "--set-string")]
    apply_upgrade(state_path, sets)
    sys.exit(0)
print(f"standin helm: unsupported {argv}", file=sys.stderr)
sys.exit(1)
'''


def _set(values: dict, key: str, raw: str, string: bool) -> None:
    node = values
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    value: object = raw
    if not string:
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
    node[parts[-1]] = value


def apply_upgrade(state_path: str, sets: list[tuple[str, str]]) -> None:
    """`helm upgrade --set ...` in the helm stand-in process: new values, then the controller
    stand-in (in the test process) is told to reconcile them."""
    state = json.loads(Path(state_path).read_text())
    for flag, kv in sets:
        k, v = kv.split("=", 1)
        _set(state["values"], k, v, flag == "--set-string")
    state["generation"] = state.get("generation", 1) + 1
    Path(state_path).write_text(json.dumps(state, indent=2))
    httpx.post(state["controller"] + "/_standin/apply", json={"values": state["values"], "generation":
                                                             state["generation"], "sets": [kv for _, kv in sets]},
               timeout=30).raise_for_status()


class Controller:
    """Stands in for KServe's controller and the gateway controller, in the test process: on
    POST /_standin/apply (from the helm stand-in) it starts a real MLServer for each routed version
    that has none (from the model repository, with a pre-assigned metrics port that Prometheus
    scrapes), stops the ones no longer routed, sets nginx's weights from the values, and reports
    the InferenceService status to the API stand-in: not reconciled at once, Ready once the
    predictors answer."""

    def __init__(self, vertical: str, namespace: str, repository: Path, workdir: Path, gateway: NginxGateway,
                 api: KubeStandin, metrics_ports: dict[str, int], env: dict[str, str]):
        from ..conftest import start_server, stop_server

        self._start_server, self._stop_server = start_server, stop_server
        self.vertical, self.namespace, self.repository, self.workdir = vertical, namespace, repository, workdir
        self.gateway, self.api, self.metrics_ports, self.env = gateway, api, metrics_ports, env
        self.servers: dict[str, object] = {}  # version -> tests.conftest.Server
        self.addresses: dict[str, str] = {}  # version -> 127.0.0.1:http_port
        self.weights_log: list[dict[str, int]] = []
        self.applied: list[list[str]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.applied.append(body["sets"])
                obj = isvc_for(body["values"], outer.vertical, outer.namespace, body["generation"])
                outer.api.put(obj, reconciled=False)
                threading.Thread(target=outer.reconcile, args=(body["values"], obj), daemon=True).start()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, version: str) -> None:
        """A predictor (real MLServer) for one version, as KServe starts one per revision."""
        if version in self.servers:
            return
        import shutil

        folder = self.workdir / f"predictor-{version}"
        shutil.copytree(self.repository / self.vertical / version, folder / self.vertical / version)
        env = {**self.env, "INSURANCE_OUTCOMES_DB": str(folder / "outcomes.sqlite")}
        server = self._start_server(folder, self.workdir, [f"/v2/models/{self.vertical}/versions/{version}/ready"],
                                    extra_settings={"metrics_port": self.metrics_ports[version]}, env=env)
        self.servers[version] = server
        self.addresses[version] = f"127.0.0.1:{server.http_port}"

    def reconcile(self, values: dict, obj: dict) -> None:
        from lifecycle.rollout import routes

        try:
            with self.lock:
                r = routes(values)[self.vertical]
                wanted = [r.stable] + ([r.canary] if r.canary else [])
                for v in wanted:
                    self.serve(v)
                weights = {self.addresses[r.stable]: 100 - (r.canary_percent or 0) if r.canary_active else 100}
                if r.canary_active:
                    weights[self.addresses[r.canary]] = r.canary_percent
                self.gateway.weights(weights)
                self.weights_log.append({v: weights.get(self.addresses[v], 0) for v in self.addresses})
                for v in [v for v in self.servers if v not in wanted]:
                    self._stop_server(self.servers.pop(v))
                    self.addresses.pop(v)
                self.api.put(obj, reconciled=True)
        except Exception as e:  # noqa: BLE001 - the test asserts there were none
            self.errors.append(f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for s in self.servers.values():
            self._stop_server(s)


def write_helm(tmp: Path, root: Path) -> Path:
    script = tmp / "standin_helm.py"
    script.write_text(HELM_SCRIPT)
    wrapper = tmp / "helm"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


# ---------------------------------------------------------------- traffic
class Traffic:
    """Leads through the gateway (unversioned path: the gateway picks the version), the true outcome
    of each row reported to the server that scored it (the version in the answer)."""

    def __init__(self, gateway_url: str, servers: dict[str, str], rows: list[dict], labels: list[int],
                 batch: int = 20, pause: float = 0.02):
        self.gateway_url, self.servers = gateway_url, servers
        self.rows, self.labels, self.batch, self.pause = rows, labels, batch, pause
        self.sent: dict[str, int] = {}
        self.errors: list[str] = []
        self.outcome_errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Traffic":
        self.thread.start()
        return self

    def _run(self):
        from insurance_client import InsuranceClient

        rng = random.Random(3)
        with InsuranceClient(self.gateway_url, timeout=30) as gw:
            while not self._stop.is_set():
                i = rng.randrange(0, len(self.rows) - self.batch)
                try:
                    results = gw.score_many("auto", self.rows[i:i + self.batch], quote_time="2026-11-23T10:00:00Z")
                    version = results[0].model_version
                    self.sent[version] = self.sent.get(version, 0) + 1
                except Exception as e:  # noqa: BLE001 - counted, the test asserts there were none
                    self.errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.2)
                    continue
                try:
                    with InsuranceClient(f"http://{self.servers[version]}", timeout=30) as direct:
                        direct.report_outcomes("auto", list(zip(results, self.labels[i:i + self.batch])))
                except Exception as e:  # noqa: BLE001 - a version retired between scoring and its outcome
                    self.outcome_errors.append(f"{version}: {type(e).__name__}: {e}")
                time.sleep(self.pause)

    def stop(self):
        self._stop.set()
        self.thread.join(30)
