"""Start and stop the servers under test, each on free loopback ports.

A: this project's runtime (`runtime.InsuranceModel`) on MLServer, full business path.
B: MLServer's stock `mlserver_lightgbm.LightGBMModel` on the same model.txt (client pre-encodes).
C: a KServe custom predictor (bench/kserve_server.py) calling predictors/.
D: the floor, uvicorn + orjson (bench/floor_server.py) calling predictors/.
M: the MLServer floor: A's requests and outputs, a runtime that computes nothing (bench/noop_runtime.py).
Every server gets OMP_NUM_THREADS=1 (LightGBM's OpenMP threads otherwise oversubscribe the cores).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from runtime import serve
from runtime.serve import NotReady, free_port, local_settings, wait_ready

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
BIN = Path(sys.executable).parent
MODEL = "auto"
VERSION = "1.0.0"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Running:
    label: str
    process: subprocess.Popen
    http_port: int
    grpc_port: int | None
    log: Path
    cold_start_s: float = float("nan")
    rss_samples: list[float] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str | None:
        return None if self.grpc_port is None else f"127.0.0.1:{self.grpc_port}"

    def rss_mb(self) -> float:
        """Resident memory of the server and all its children (workers), in MB."""
        try:
            proc = psutil.Process(self.process.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        mb = total / 2**20
        self.rss_samples.append(mb)
        return mb

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # MLServer's parallel workers are children: make sure none outlives the run
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _wait_ready(run: Running, paths: list[str], started: float, timeout: float) -> Running:
    also = None if run.grpc_port is None else (lambda: port_open(run.grpc_port))
    try:
        wait_ready(run.process, [run.http + p for p in paths], started + timeout - time.monotonic(),
                   interval=0.02, also=also)
    except NotReady as e:
        run.stop()
        raise RuntimeError(f"{run.label} {e}:\n{run.log_tail()}") from e
    run.cold_start_s = time.monotonic() - started
    return run


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.update(extra or {})
    return env


def mlserver_repository(workdir: Path, server: str, *, extra: dict[str, Any] | None = None,
                        batching: tuple[int, float] | None = None, models: tuple[str, ...] = (MODEL,)) -> Path:
    """A model repository for server A (`runtime.InsuranceModel`), B (stock LightGBM) or M (no-op)."""
    repo = workdir / "repository"
    if repo.exists():
        shutil.rmtree(repo)
    for name in models:
        bundle = next((MODELS / name).glob("*/manifest.json")).parent
        if server == "M":  # the MLServer floor (bench/noop_runtime.py)
            dest = repo / name
            dest.mkdir(parents=True)
            settings = {"name": name, "implementation": "bench.noop_runtime.FixedAnswer",
                        "parameters": {"version": "1.0.0"}}
        elif server == "A":
            dest = repo / name / bundle.name
            shutil.copytree(bundle, dest)
            settings = json.loads((dest / "model-settings.json").read_text())
            if extra:
                settings.setdefault("parameters", {})["extra"] = extra
        else:  # B: the stock runtime takes the model file itself (it would look for model.bst in a folder)
            dest = repo / name
            dest.mkdir(parents=True)
            settings = {"name": name, "implementation": "mlserver_lightgbm.LightGBMModel",
                        "parameters": {"uri": str(bundle / "model.txt"), "version": bundle.name}}
        if batching:
            settings["max_batch_size"], settings["max_batch_time"] = batching
        (dest / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return repo


def without_pyarrow(workdir: Path) -> dict[str, str]:
    """Environment of a server that cannot import pyarrow, like the image (`pip install .`: pyarrow
    comes only with the dev/parquet extras, and pandas imports it at startup when present)."""
    site = workdir / "no-pyarrow"
    site.mkdir(parents=True, exist_ok=True)
    # a finder that refuses pyarrow (not sys.modules['pyarrow'] = None: scikit-learn reads that entry)
    (site / "sitecustomize.py").write_text(
        "import sys\n\n\nclass _NoPyarrow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pyarrow' or name.startswith('pyarrow.'):\n"
        "            raise ImportError('pyarrow is not installed (as in the image)')\n\n\n"
        "sys.meta_path.insert(0, _NoPyarrow())\n")
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}


def start_mlserver(label: str, repo: Path, workdir: Path, *, parallel_workers: int = 0,
                   models: tuple[str, ...] = (MODEL,), timeout: float = 120.0,
                   env: dict[str, str] | None = None, stock: bool = False) -> Running:
    """A (and M) through this project's entry point; `stock`: MLServer's own `mlserver start` (B)."""
    settings = local_settings(parallel_workers=parallel_workers)
    http_port, grpc_port = settings["http_port"], settings["grpc_port"]
    log = workdir / f"{label.replace(' ', '_').replace('/', '_')}.log"
    started = time.monotonic()
    process = serve.start_mlserver(repo, settings=settings, cwd=workdir, log=log, env=_env(env),
                                   command=serve.MLSERVER if stock else serve.SERVER)
    run = Running(label, process, http_port, grpc_port, log)
    return _wait_ready(run, [f"/v2/models/{m}/ready" for m in models], started, timeout)


def _start_module(label: str, workdir: Path, module: str, args: list[str], http_port: int, grpc_port: int,
                  timeout: float) -> Running:
    """`python -m module args` serving MODEL from its shipped bundle (`--bundle` appended)."""
    bundle = next((MODELS / MODEL).glob("*/manifest.json")).parent
    log = workdir / f"{module.rsplit('.', 1)[-1]}.log"
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", module, *args, "--bundle", str(bundle)],
                               cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
    run = Running(label, process, http_port, grpc_port, log)
    return _wait_ready(run, [f"/v2/models/{MODEL}/ready"], started, timeout)


def start_kserve(label: str, workdir: Path, timeout: float = 120.0) -> Running:
    http_port, grpc_port = free_port(), free_port()
    return _start_module(label, workdir, "bench.kserve_server", ["--http-port", str(http_port), "--grpc-port",
                         str(grpc_port), "--name", MODEL], http_port, grpc_port, timeout)


def start_floor(label: str, workdir: Path, timeout: float = 60.0) -> Running:
    http_port, grpc_port = free_port(), free_port()
    return _start_module(label, workdir, "bench.floor_server", ["--port", str(http_port), "--grpc-port",
                         str(grpc_port)], http_port, grpc_port, timeout)
