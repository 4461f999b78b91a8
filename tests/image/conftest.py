"""The image built and run by a real container engine: docker where its daemon answers, else
podman (daemonless; Debian's podman + runc with scripts/containers.conf on these machines).

The image is built once per test session by `scripts/image-build.sh` (what `make image` runs,
with the engine's layer cache, so a rerun after a code edit rebuilds only the last layers),
under a test tag so that a user's `make image` tags are left alone. A missing engine is a
failure, never a skip: `make test` installs podman (`make tools`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/insurance-serving:pytest"
# Ports of the image (EXPOSE) and of the chart's runtime container.
HTTP, GRPC, METRICS = 8080, 8081, 8082


@functools.lru_cache(maxsize=1)
def find_engine() -> str | None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


def engine() -> str:
    if found := find_engine():
        return found
    pytest.fail("no container engine: no Docker daemon answers and podman is not installed "
                "(`make tools` installs podman, runc and debootstrap on Debian as root)", pytrace=False)


def engine_env() -> dict:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
    return env


def run_engine(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout, env=engine_env())
    if check:
        assert p.returncode == 0, f"{engine()} {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}"
    return p


@dataclass
class Images:
    plain: str
    baked: str
    build_seconds: dict[str, float]
    engine: str


class Build:
    """`scripts/image-build.sh TAG` (what `make image` runs) in the background: started as soon
    as collection shows that image tests will run, so that the build (mostly downloads on a fresh
    machine) overlaps the tests that run before them; the image tests run last."""

    process: subprocess.Popen | None = None
    out: Path | None = None
    err: Path | None = None

    @classmethod
    def start(cls) -> None:
        if cls.process is None and (eng := find_engine()):
            tmpdir = Path(tempfile.mkdtemp(prefix="image-build-"))
            cls.out, cls.err = tmpdir / "image-build.out", tmpdir / "image-build.err"
            cls.process = subprocess.Popen(["bash", str(ROOT / "scripts" / "image-build.sh"), TAG], cwd=ROOT,
                                           env={**engine_env(), "ENGINE": eng}, stdout=cls.out.open("w"),
                                           stderr=cls.err.open("w"), start_new_session=True)

    @classmethod
    def stop(cls) -> None:  # an interrupted session leaves no build behind
        if cls.process is not None and cls.process.poll() is None:
            os.killpg(cls.process.pid, 15)
            cls.process.wait(30)


def _uses_images(item) -> bool:
    return "images" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    items.sort(key=_uses_images)  # stable: image tests last, each group in its own order


def pytest_collection_finish(session):
    if not session.config.option.collectonly and any(_uses_images(i) for i in session.items):
        Build.start()


def pytest_sessionfinish(session):
    Build.stop()


@pytest.fixture(scope="session")
def images() -> Images:
    """`make image` under the test tag: the plain image and the BAKE_MODELS=true variant."""
    eng = engine()
    Build.start()  # when collection did not start it
    try:
        code = Build.process.wait(timeout=1500)
    except subprocess.TimeoutExpired:
        Build.stop()
        pytest.fail("image build not done after 1500 s", pytrace=False)
    out, err = Build.out.read_text(), Build.err.read_text()
    assert code == 0, f"image build failed ({code}):\n{err[-5000:]}"
    seconds = {line.split()[1]: float(line.split()[2]) for line in out.splitlines() if line.startswith("image: ")}
    assert set(seconds) == {TAG, f"{TAG}-models"}, out
    return Images(plain=TAG, baked=f"{TAG}-models", build_seconds=seconds, engine=eng)


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
                pytest.fail(f"container {self.name} exited:\n{self.logs()}", pytrace=False)
            try:
                pending = [p for p in pending if http_get(f"http://{self.http}{p}") != 200]
            except OSError:
                pass
            if not pending:
                return time.monotonic() - self.started
            time.sleep(0.1)
        pytest.fail(f"{pending} not ready after {timeout} s:\n{self.logs()}", pytrace=False)

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

    def remove(self) -> None:
        wait = ["--time", "5"] if engine() == "podman" else []  # docker rm --force kills at once
        run_engine("rm", "--force", *wait, self.name, check=False, timeout=60)


def start_container(image: str, *, user: str | None = None, models: Path | None = None,
                    env: dict | None = None) -> Container:
    """`run` as Kubernetes would with readOnlyRootFilesystem: read-only root, tmpfs /tmp, the
    bundle (if given) mounted read-only at /mnt/models, ports published on 127.0.0.1."""
    name = f"insurance-pytest-{uuid.uuid4().hex[:10]}"
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


@pytest.fixture
def container_factory():
    """Start containers with `start_container(...)`; every one is removed after the test."""
    started: list[Container] = []

    def start(*args, **kw) -> Container:
        c = start_container(*args, **kw)
        started.append(c)
        return c

    yield start
    for c in started:
        c.remove()


FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def figures(images) -> dict[str, str]:
    """Measured figures of the image, printed in the session's summary (README "Container image")."""
    FIGURES["engine"] = images.engine
    FIGURES.update({f"build {t.rsplit(':', 1)[1]} (s)": f"{s:.0f}" for t, s in images.build_seconds.items()})
    return FIGURES


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("image figures")
        for k, v in FIGURES.items():
            terminalreporter.write_line(f"{k}: {v}")
