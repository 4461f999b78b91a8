"""Shared fixtures: config, shipped bundles, V2 requests of the example rows, and a real MLServer.

The server fixture starts the real `mlserver` executable on free loopback ports, serving a
copy of the shipped repository (plus a second `auto` version trained into tmp) from a
temporary folder: tests never write into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# One OpenMP thread for LightGBM / scikit-learn in the test process (set before they load): on a
# shared 2-core machine, OpenMP's spinning threads slow training down by an order of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from predictors.examples import v2_request  # noqa: E402
from predictors.spec import load_config  # noqa: E402
from runtime.serve import NotReady, free_port, is_ready, local_settings, start_mlserver, wait_ready  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def verticals(config):
    return sorted(config.verticals)


def shipped_bundle(name: str) -> Path:
    """The one shipped bundle of a vertical (models/<name>/<semver>/)."""
    found = sorted(p.parent for p in (MODELS / name).glob("*/manifest.json"))
    assert len(found) == 1, f"expected one shipped bundle of {name}, found {found}"
    return found[0]


def request_json(name: str) -> dict:
    """A V2 request of three example rows of the vertical (predictors/examples/)."""
    return v2_request(name)


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: Path
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def ready(self, path: str = "/v2/health/ready") -> bool:
        return is_ready(self.http + path, timeout=2)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(repository: Path, workdir: Path, expect: list[str], extra_settings: dict | None = None,
                 env: dict | None = None, timeout: float = 90.0) -> Server:
    """Start `mlserver start repository` on free ports; wait until every path in `expect` answers 200."""
    settings = local_settings(**(extra_settings or {}))
    ports = [settings[k] for k in ("http_port", "grpc_port", "metrics_port")]
    log = workdir / f"mlserver-{ports[0]}.log"
    process = start_mlserver(repository, settings=settings, cwd=workdir, log=log, env=env)
    server = Server(process, *ports, repository=repository, log=log)
    try:
        wait_ready(process, [server.http + path for path in expect], timeout, interval=0.25)
    except NotReady as e:
        stop_server(server)
        raise RuntimeError(f"mlserver {e}:\n{server.log_text()[-4000:]}") from e
    return server


def stop_process(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, wait `grace` seconds, then SIGKILL: every server a test starts ends this way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def stop_server(server: Server) -> None:
    stop_process(server.process)


def copy_repository(dest: Path, verticals) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in verticals:
        bundle = shipped_bundle(name)
        shutil.copytree(bundle, dest / name / bundle.name)
    return dest


def start_fast_and_plain(tmp: Path, models) -> tuple[Server, Server]:
    """The same bundles served twice: the runtime's own request path, and MLServer's (fast_path off)."""
    expect = [f"/v2/models/{m}/ready" for m in models]
    fast = start_server(copy_repository(tmp / "fast", models), tmp, expect)
    try:
        plain = start_server(copy_repository(tmp / "plain", models), tmp, expect, env={"INSURANCE_FAST_PATH": "false"})
    except Exception:
        stop_server(fast)
        raise
    return fast, plain


SECOND_AUTO_VERSION = "1.1.0"


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory, verticals) -> Path:
    """The shipped bundles, plus auto 1.1.0 trained on a smaller sample (two versions to route)."""
    repo = copy_repository(tmp_path_factory.mktemp("repository"), verticals)
    from training.__main__ import main as train

    assert train(["--vertical", "auto", "--version", SECOND_AUTO_VERSION, "--rows", "3000",
                  "--out", str(repo)]) == 0
    return repo


@pytest.fixture(scope="session")
def server(model_repository, tmp_path_factory, verticals):
    expect = [f"/v2/models/{name}/ready" for name in verticals]
    expect.append(f"/v2/models/auto/versions/{SECOND_AUTO_VERSION}/ready")
    srv = start_server(model_repository, tmp_path_factory.mktemp("server"), expect)
    yield srv
    stop_server(srv)
