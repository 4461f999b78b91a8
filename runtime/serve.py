"""`python -m runtime.serve [REPOSITORY]`: start MLServer on a model repository, wait until
every bundle in it is ready, print example requests, and stay in the foreground.

MLServer reads the server settings from REPOSITORY/settings.json and MLSERVER_* variables.
``start_mlserver`` and ``wait_ready`` are also how the tests (tests/conftest.py) and the benchmark
(bench/servers.py) start a server and wait for it: one implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

from predictors import examples

#: This project's entry point (runtime/main.py): `mlserver start` with the start-up seams first.
SERVER = Path(sys.executable).with_name("insurance-mlserver")
#: MLServer's own CLI (the benchmark's stock peers start with it).
MLSERVER = Path(sys.executable).with_name("mlserver")

def bundles(repository: Path) -> list[tuple[str, str | None]]:
    """(name, version) of every model-settings.json under the repository."""
    out = []
    for path in sorted(repository.rglob("model-settings.json")):
        settings = json.loads(path.read_text(encoding="utf-8"))
        out.append((settings["name"], (settings.get("parameters") or {}).get("version")))
    return out


def server_address(repository: Path) -> tuple[str, int, int, int]:
    settings_file = repository / "settings.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else {}

    def pick(key: str, default):  # settings.json wins over MLSERVER_* (as in MLServer itself)
        return settings.get(key, os.environ.get(f"MLSERVER_{key.upper()}", default))

    return (str(pick("host", "0.0.0.0")), int(pick("http_port", 8080)), int(pick("grpc_port", 8081)),
            int(pick("metrics_port", 8082)))


def example_request(vertical: str = "auto") -> str:
    """The vertical's one-row example request (predictors/examples), as JSON text."""
    return json.dumps(examples.v2_request(vertical, rows=1))


def is_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_settings(**overrides) -> dict:
    """settings.json of a server on free loopback ports, models loaded at start-up, no workers."""
    return {"host": "127.0.0.1", "http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False, "load_models_at_startup": True, **overrides}


def start_mlserver(repository: Path, *, settings: Optional[dict] = None, cwd: Optional[Path] = None,
                   log: Optional[Path] = None, env: Optional[dict] = None,
                   new_session: bool = False, command: Path = SERVER) -> subprocess.Popen:
    """`insurance-mlserver start REPOSITORY` (or `command`, e.g. MLSERVER) with one OpenMP thread;
    `settings`, if given, written to REPOSITORY/settings.json first; output to `log` (else inherited)."""
    if settings is not None:
        (repository / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    out = log.open("w") if log is not None else None
    return subprocess.Popen([str(command), "start", str(repository)], cwd=cwd,
                            env={"OMP_NUM_THREADS": "1", **os.environ, **(env or {})},
                            stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                            start_new_session=new_session)


class NotReady(RuntimeError):
    """The server exited (``returncode`` set) or was not ready by the deadline (``pending`` URLs)."""

    def __init__(self, message: str, returncode: Optional[int] = None, pending: Sequence[str] = ()):
        super().__init__(message)
        self.returncode, self.pending = returncode, list(pending)


def wait_ready(process: subprocess.Popen, urls: Sequence[str], timeout: float, *, interval: float = 0.2,
               also: Optional[Callable[[], bool]] = None) -> float:
    """Poll until every URL answers 200 (and `also()` holds); return the seconds it took. Raise
    NotReady if the process exits first or at the deadline (the process is left to the caller)."""
    started = time.monotonic()
    pending = list(urls)
    while True:
        if process.poll() is not None:
            raise NotReady(f"exited with {process.returncode}", process.returncode, pending)
        pending = [u for u in pending if not is_ready(u)]
        if not pending and (also is None or also()):
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise NotReady(f"not ready in {timeout:.0f} s: {', '.join(pending) or 'extra check'}", None, pending)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("repository", nargs="?", default="models", type=Path, help="model repository (default: models)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every model to be ready")
    args = p.parse_args(argv)
    repository = args.repository.resolve()
    models = bundles(repository)
    if not models:
        print(f"error: no model-settings.json under {repository}", file=sys.stderr)
        return 2
    host, http_port, grpc_port, metrics_port = server_address(repository)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{local}:{http_port}"
    # Own process group, so Ctrl-C reaches MLServer only as the SIGTERM below (a clean shutdown;
    # MLServer 1.7.1 prints a CancelledError traceback on SIGINT).
    child = start_mlserver(repository, new_session=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: child.terminate())

    urls = [f"{base}/v2/models/{n}/versions/{v}/ready" if v else f"{base}/v2/models/{n}/ready" for n, v in models]
    try:
        seconds = wait_ready(child, urls, args.timeout)
    except NotReady as e:
        if e.returncode is not None:
            print(f"error: MLServer exited with code {e.returncode} (see its log above)", file=sys.stderr)
            return e.returncode or 1
        print(f"warning: not ready after {args.timeout:.0f} s: {', '.join(e.pending)}", file=sys.stderr)
    else:
        print(f"\nReady in {seconds:.1f} s: "
              f"{', '.join(f'{n} {v}' for n, v in models)}\n"
              f"  HTTP    {base}/v2/models/<name>/infer   (and /versions/<semver>/infer)\n"
              f"  gRPC    {local}:{grpc_port}\n"
              f"  metrics http://{local}:{metrics_port}/metrics\n\n"
              "Try:\n"
              f"  curl -s -H 'Content-Type: application/json' {base}/v2/models/auto/infer \\\n"
              f"    -d '{example_request()}'\n", flush=True)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
