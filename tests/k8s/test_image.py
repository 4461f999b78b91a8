"""The Dockerfile without building it: hadolint, the image's contract (user, command, ports,
settings) and its agreement with the chart's runtime container, the build context, and how
MLServer reads a bundle under KServe's injected variables. The image itself is built and run
by a real container engine in tests/image/.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .kube import CHART, REPO, helm_template, one, run, tool

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
    assert st["ENTRYPOINT"] + st["CMD"] == ["insurance-mlserver", "start", "/mnt/models"]
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


# ---- bundles ---------------------------------------------------------------------------------

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
