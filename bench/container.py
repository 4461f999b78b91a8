"""Run the image with a real container engine: docker where its daemon answers, else podman
(Debian's podman + runc with scripts/containers.conf on machines whose cgroups crun refuses).

Shared by the benchmark (one-vertical memory and cold start in the container, bench/bulk.py) and
the image tests (tests/image/conftest.py, which turn EngineError into a test failure).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Ports of the image (EXPOSE) and of the chart's runtime container.
HTTP, GRPC, METRICS = 8080, 8081, 8082


class EngineError(RuntimeError):
    """The engine failed, or a container exited or was not ready in time."""


@functools.lru_cache(maxsize=1)
def find_engine() -> str | None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


def engine() -> str:
    if found := find_engine():
        return found
    raise EngineError("no container engine: no Docker daemon answers and podman is not installed "
                      "(`make tools` installs podman, runc and debootstrap on Debian as root)")


def engine_env() -> dict:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
    return env


def run_engine(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout, env=engine_env())
    if check and p.returncode != 0:
        raise EngineError(f"{engine()} {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def http_get(url: str, timeout: float = 3) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class Container:
    """One running container with the image's three ports published on loopback."""

    name: str
    started: float
    ports: dict[int, int] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports[HTTP]}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports[GRPC]}"

    def state(self) -> dict:
        return json.loads(run_engine("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        p = run_engine("logs", self.name, check=False)
        return (p.stdout + p.stderr)[-4000:]

    def wait_ready(self, paths: list[str], timeout: float = 120) -> float:
        """Seconds from `run` until every path answers 200 (polled like a kubelet's probe)."""
        deadline = time.monotonic() + timeout
        pending = list(paths)
        while time.monotonic() < deadline:
            if not self.state().get("Running"):
                raise EngineError(f"container {self.name} exited:\n{self.logs()}")
            try:
                pending = [p for p in pending if http_get(f"http://{self.http}{p}") != 200]
            except OSError:
                pass
            if not pending:
                return time.monotonic() - self.started
            time.sleep(0.1)
        raise EngineError(f"{pending} not ready after {timeout} s:\n{self.logs()}")

    def exec(self, *argv: str) -> str:
        return run_engine("exec", self.name, *argv).stdout

    def rss_mib(self) -> float:
        """Resident memory of the serving processes inside the container (all but this probe)."""
        code = ("import os, pathlib; me = os.getpid(); t = 0\n"
                "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
                "    if int(p.name) == me: continue\n"
                "    try: s = (p / 'status').read_text()\n"
                "    except OSError: continue\n"
                "    t += sum(int(l.split()[1]) for l in s.splitlines() if l.startswith('VmRSS:'))\n"
                "print(t)")
        return int(self.exec("python", "-c", code).strip()) / 1024

    def processes(self) -> list[str]:
        """Command lines of the container's processes (this probe excluded)."""
        code = ("import os, pathlib; me = os.getpid()\n"
                "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
                "    if int(p.name) == me: continue\n"
                "    try: print((p / 'cmdline').read_bytes().replace(b'\\0', b' ').decode().strip())\n"
                "    except OSError: pass")
        return [line for line in self.exec("python", "-c", code).splitlines() if line]

    def wait_children(self, marker: str = "predictors.", timeout: float = 120) -> None:
        """Until no process of the runtime's children (compiled trees, claims translation) runs."""
        deadline = time.monotonic() + timeout
        while any(marker in p and "insurance-mlserver" not in p for p in self.processes()):
            if time.monotonic() > deadline:
                raise EngineError(f"a child process ({marker}) still runs after {timeout} s:\n{self.logs()}")
            time.sleep(0.5)

    def wait_log(self, *texts: str, timeout: float = 10) -> str:
        """The log once one of `texts` is in it (EngineError naming them after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            logs = self.logs()
            if any(t in logs for t in texts):
                return logs
            if time.monotonic() > deadline:
                raise EngineError(f"none of {texts} in the log after {timeout} s:\n{logs}")
            time.sleep(0.25)

    def remove(self) -> None:
        wait = ["--time", "5"] if engine() == "podman" else []  # docker rm --force kills at once
        run_engine("rm", "--force", *wait, self.name, check=False, timeout=60)


def start_container(image: str, *, user: str | None = None, models: Path | None = None,
                    env: dict | None = None, prefix: str = "insurance-bench") -> Container:
    """`run` as Kubernetes would with readOnlyRootFilesystem: read-only root, tmpfs /tmp, the
    bundle (if given) mounted read-only at /mnt/models, ports published on 127.0.0.1."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    argv = ["run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp:rw,size=256m,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for port in (HTTP, GRPC, METRICS):
        argv += ["--publish", f"127.0.0.1::{port}"]
    if user:
        argv += ["--user", user]
    if models:
        argv += ["--volume", f"{models}:/mnt/models:ro"]
    for k, v in (env or {}).items():
        argv += ["--env", f"{k}={v}"]
    started = time.monotonic()
    run_engine(*argv, image)
    c = Container(name=name, started=started)
    for port in (HTTP, GRPC, METRICS):
        mapped = run_engine("port", name, f"{port}/tcp").stdout.split()[0]
        c.ports[port] = int(mapped.rsplit(":", 1)[1])
    return c
