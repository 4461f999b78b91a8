"""`python -m runtime.serve [REPOSITORY]`: start MLServer on a model repository, wait until
every bundle in it is ready, print example requests, and stay in the foreground.

MLServer reads the server settings from REPOSITORY/settings.json and MLSERVER_* variables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

EXAMPLE_ROW = {
    "age": ("INT64", 34), "driving_years": ("INT64", 15), "vehicle_age": ("INT64", 3),
    "annual_mileage": ("INT64", 12000), "vehicle_make": ("BYTES", "toyota"),
    "vehicle_model": ("BYTES", "sedan"), "usage_type": ("BYTES", "commute"),
    "occupation": ("BYTES", "senior teacher"), "location": ("BYTES", "suburban springfield"),
}


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


def example_request() -> str:
    inputs = [{"name": k, "shape": [1], "datatype": dt, "data": [v]} for k, (dt, v) in EXAMPLE_ROW.items()]
    return json.dumps({"inputs": inputs})


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


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
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    mlserver = Path(sys.executable).with_name("mlserver")
    start = time.monotonic()
    # Own process group, so Ctrl-C reaches MLServer only as the SIGTERM below (a clean shutdown;
    # MLServer 1.7.1 prints a CancelledError traceback on SIGINT).
    child = subprocess.Popen([str(mlserver), "start", str(repository)], env=env, start_new_session=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: child.terminate())

    pending = list(models)
    while pending and child.poll() is None and time.monotonic() - start < args.timeout:
        pending = [(n, v) for n, v in pending
                   if not is_ready(f"{base}/v2/models/{n}/versions/{v}/ready" if v else f"{base}/v2/models/{n}/ready")]
        if pending:
            time.sleep(0.2)
    if child.poll() is not None:
        print(f"error: MLServer exited with code {child.returncode} (see its log above)", file=sys.stderr)
        return child.returncode or 1
    if pending:
        print(f"warning: not ready after {args.timeout:.0f} s: {', '.join(f'{n} {v}' for n, v in pending)}",
              file=sys.stderr)
    else:
        print(f"\nReady in {time.monotonic() - start:.1f} s: "
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
