"""The image, without a container engine (none runs on these machines): hadolint on the
Dockerfile, and the exact command and environment of the image run as a real process on a
model bundle copied to a /mnt/models-like folder, answering V2 requests.

What differs from a container, and why: MLServer comes from the project's .venv instead of
/opt/venv (same pinned versions); ports are free loopback ports instead of 8080-8082 (tests
must not collide with a running `make serve`) and the host is 127.0.0.1; /mnt/models and /tmp
are folders under pytest's tmp_path. Every other variable is the Dockerfile's value.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from .kube import CHART, REPO, VERTICALS, helm_template, one, run, tool

DOCKERFILE = REPO / "Dockerfile"
MODELS = REPO / "models"
VENV_BIN = Path(sys.executable).parent


# ---- Dockerfile parsing (final stage) --------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage() -> dict:
    ins = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    stage = {"ENV": {}, "EXPOSE": [], "ENTRYPOINT": None, "CMD": None, "USER": None, "WORKDIR": None}
    for word, args in ins[last_from + 1:]:
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                stage["ENV"][key] = value
        elif word == "EXPOSE":
            stage["EXPOSE"] += [int(p.split("/")[0]) for p in args.split()]
        elif word in ("ENTRYPOINT", "CMD"):
            stage[word] = json.loads(args)
        elif word in ("USER", "WORKDIR"):
            stage[word] = args
    return stage


# ---- static checks ----------------------------------------------------------------------------

def test_hadolint_passes():
    p = run([tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_is_really_checking(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\nCMD python app.py\n", encoding="utf-8")
    p = run([tool("hadolint"), str(bad)])
    assert p.returncode != 0 and "DL3007" in p.stdout


def test_image_contract():
    st = final_stage()
    assert st["USER"] == "1000", "numeric non-root user (runAsNonRoot can verify it)"
    assert st["ENTRYPOINT"] + st["CMD"] == ["mlserver", "start", "/mnt/models"]
    assert sorted(st["EXPOSE"]) == [8080, 8081, 8082]
    env = st["ENV"]
    assert env["OMP_NUM_THREADS"] == "1" and env["MLSERVER_PARALLEL_WORKERS"] == "0"
    assert env["MLSERVER_DEBUG"] == "false" and env["MLSERVER_HOST"] == "0.0.0.0"
    assert not any(k.startswith("MLSERVER_MODEL_") for k in env)
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "two stages: build and runtime"
    assert re.search(r"^ARG BAKE_MODELS=false$", text, re.M)


def test_image_and_serving_runtime_agree():
    """The ClusterServingRuntime runs the image's own command with the image's settings."""
    st = final_stage()
    rt = one(helm_template(), "ClusterServingRuntime")["spec"]["containers"][0]
    assert rt["command"] + rt["args"] == st["ENTRYPOINT"] + st["CMD"]
    env = {e["name"]: e["value"] for e in rt["env"]}
    for key in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT", "MLSERVER_HOST",
                "MLSERVER_PARALLEL_WORKERS", "MLSERVER_DEBUG", "MLSERVER_METRICS_DIR", "MLSERVER_ENVIRONMENTS_DIR",
                "OMP_NUM_THREADS", "MLSERVER_LOAD_MODELS_AT_STARTUP"):
        assert env[key] == st["ENV"][key], key
    assert {p["containerPort"] for p in rt["ports"]} == set(st["EXPOSE"])
    assert st["ENV"]["MLSERVER_METRICS_DIR"].startswith("/tmp/"), "writable with readOnlyRootFilesystem (emptyDir /tmp)"


def test_dockerignore_keeps_the_build_inputs():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(encoding="utf-8"), re.M))
    sources = {s.rstrip("/") for group in copied for s in group.split()}
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert sources <= allowed and "models" in allowed, (sources, allowed)


def test_image_installs_every_package_of_the_project():
    """`pip install .` in the build stage needs pyproject's packages and readme in the context."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = set(project["tool"]["setuptools"]["packages"])
    text = DOCKERFILE.read_text(encoding="utf-8")
    copied = {s.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M) for s in line.split()}
    assert packages <= copied, f"Dockerfile does not COPY {packages - copied}"
    assert project["project"]["readme"] in copied
    missing = sorted(s for s in copied if not (REPO / s).exists())
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_mlserver_ignores_injected_model_variables(tmp_path):
    """KServe injects MLSERVER_MODEL_NAME/URI/IMPLEMENTATION for runtimes it treats as MLServer.
    With a model-settings.json in the bundle MLServer 1.7.1 ignores them: still exactly one
    model, named after the vertical, with the bundle's version.

    Run in a child process: importing mlserver.cli loads MLServer's generated gRPC protos, which
    clash with tritonclient's (both define `inference.*`) in the test session's interpreter."""
    bundle = _bundle(tmp_path, "auto")
    env = {**os.environ, "MLSERVER_MODEL_NAME": "auto-isvc", "MLSERVER_MODEL_URI": "/mnt/models",
           "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_lightgbm.LightGBMModel", "MLSERVER_MODEL_VERSION": "9.9.9"}
    code = ("import asyncio, json, sys; from mlserver.cli.serve import load_settings; "
            "_, models = asyncio.run(load_settings(sys.argv[1])); "
            "print(json.dumps([[m.name, m.version, m.implementation_] for m in models]))")
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["auto", _version("auto"), "runtime.InsuranceModel"]]


# ---- the image's command as a real process ----------------------------------------------------

def _version(vertical: str) -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return str(values["verticals"][vertical]["version"])


def _bundle_source(vertical: str) -> Path:
    src = MODELS / vertical / _version(vertical)
    if not (src / "model-settings.json").is_file():
        pytest.fail(f"no shipped bundle at {src}: the chart's default version must exist in models/", pytrace=False)
    return src


def _bundle(tmp_path: Path, vertical: str) -> Path:
    dst = tmp_path / "mnt" / "models"
    shutil.copytree(_bundle_source(vertical), dst)
    return dst


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ImageProcess:
    """`ENTRYPOINT + CMD` of the Dockerfile with its ENV, on a /mnt/models-like folder."""

    def __init__(self, tmp_path: Path, models: Path):
        st = final_stage()
        self.http, self.grpc, self.metrics = _free_ports(3)
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "INSURANCE_"))}
        for k, v in st["ENV"].items():
            if k == "PATH":
                v = f"{VENV_BIN}:{os.environ['PATH']}"  # /opt/venv/bin in the image
            elif v.startswith("/tmp/"):
                v = str(tmp / v[len("/tmp/"):])
            env[k] = v
        env.update(MLSERVER_HOST="127.0.0.1", MLSERVER_HTTP_PORT=str(self.http),
                   MLSERVER_GRPC_PORT=str(self.grpc), MLSERVER_METRICS_PORT=str(self.metrics))
        self.argv = [a.replace("/mnt/models", str(models)) for a in st["ENTRYPOINT"] + st["CMD"]]
        assert shutil.which(self.argv[0], path=env["PATH"]) == str(VENV_BIN / "mlserver")
        workdir = tmp_path / "home"
        workdir.mkdir()
        self.log = tmp_path / "mlserver.log"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=env, cwd=workdir, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def wait_ready(self, path: str, timeout: float = 90) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mlserver exited:\n{self.log.read_text()[-3000:]}"
            try:
                if _http("GET", self.base + path)[0] == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{path} not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _example(vertical: str) -> bytes:
    return (CHART / "files" / "examples" / f"{vertical}.json").read_bytes()


@pytest.mark.slow
def test_image_command_serves_one_bundle_like_kserve(tmp_path):
    """KServe's case: one bundle at /mnt/models -> exactly one model, named after the
    vertical, with the bundle's version; the chart's probe paths answer; V2 infer works."""
    models = _bundle(tmp_path, "auto")
    version = _version("auto")
    server = ImageProcess(tmp_path, models)
    try:
        ready_s = server.wait_ready(f"/v2/models/auto/versions/{version}/ready")
        rt = one(helm_template(), "ClusterServingRuntime")["spec"]["containers"][0]
        assert _http("GET", server.base + rt["livenessProbe"]["httpGet"]["path"])[0] == 200
        status, body = _http("POST", server.base + "/v2/repository/index", b"{}")
        assert status == 200
        assert [(m["name"], m["version"], m["state"]) for m in json.loads(body)] == [("auto", version, "READY")]
        status, body = _http("POST", server.base + "/v2/models/auto/infer", _example("auto"))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["model_name"] == "auto" and answer["model_version"] == version
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert {"score", "confidence", "price", "decision"} <= set(outputs)
        assert 0.0 <= outputs["score"]["data"][0] <= 1.0
        # another version's probe path must fail: the readiness probe pins the version
        assert _http("GET", server.base + "/v2/models/auto/versions/0.0.0-wrong/ready")[0] != 200
        status, metrics = _http("GET", f"http://127.0.0.1:{server.metrics}/metrics")
        assert status == 200 and b"# TYPE" in metrics
        rss = _rss_mib(server.proc.pid)
        print(f"\n[image process] auto ready in {ready_s:.1f} s, RSS {rss:.0f} MiB")
        limits = rt["resources"]["limits"]["memory"]
        assert limits.endswith("Gi") and rss < int(limits[:-2]) * 1024 * 0.8, "default memory limit leaves headroom"
        startup = one(helm_template(), "InferenceService", "auto")["spec"]["predictor"]["model"]["startupProbe"]
        assert ready_s < startup["periodSeconds"] * startup["failureThreshold"]
    finally:
        server.stop()


@pytest.mark.slow
def test_image_command_serves_the_baked_models(tmp_path):
    """BAKE_MODELS=true: models/ (without the local settings.json) at /mnt/models -> all five
    verticals served by one process, each at its versioned ready path, each answering V2."""
    dst = tmp_path / "mnt" / "models"
    shutil.copytree(MODELS, dst, ignore=shutil.ignore_patterns("settings.json"))
    assert (MODELS / "settings.json").exists() and not (dst / "settings.json").exists()
    server = ImageProcess(tmp_path, dst)
    try:
        times = {v: server.wait_ready(f"/v2/models/{v}/versions/{_version(v)}/ready") for v in VERTICALS}
        for v in VERTICALS:
            status, body = _http("POST", server.base + f"/v2/models/{v}/infer", _example(v))
            assert status == 200, (v, body)
            assert json.loads(body)["model_name"] == v
        print(f"\n[image process] five models ready in {max(times.values()):.1f} s, "
              f"RSS {_rss_mib(server.proc.pid):.0f} MiB")
    finally:
        server.stop()
