"""The image built and run by a real container engine: docker where its daemon answers, else
podman (daemonless; Debian's podman + runc with scripts/containers.conf on these machines).

The image is built once per test session by `scripts/image-build.sh` (what `make image` runs,
with the engine's layer cache, so a rerun after a code edit rebuilds only the last layers),
under a test tag so that a user's `make image` tags are left alone. A missing engine is a
failure, never a skip: `make test` installs podman (`make tools`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# The engine and the container runner are shared with the benchmark; an EngineError fails the test.
from bench.container import (GRPC, HTTP, METRICS, ROOT, Container, engine, engine_env, find_engine,  # noqa: F401
                             http_get, run_engine, start_container)

TAG = "localhost/insurance-serving:pytest"


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


@pytest.fixture
def container_factory():
    """Start containers with `start_container(...)`; every one is removed after the test."""
    started: list[Container] = []

    def start(*args, **kw) -> Container:
        c = start_container(*args, prefix="insurance-pytest", **kw)
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
