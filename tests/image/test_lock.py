"""constraints.txt, the lock that `make install`, CI and the Dockerfile install with: it agrees
with pyproject.toml's pins and ranges, covers every distribution the project needs, and the
venv of this run holds exactly the locked versions (what `make install -c` guarantees)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..conftest import ROOT

LOCK = ROOT / "constraints.txt"
# What `python -m venv` seeds and `pip freeze` leaves out: not locked (a setuptools pin would also
# clash with the project's build requirement `setuptools>=77` in pip's isolated build).
VENV_SEEDED = {"pip", "setuptools", "wheel"}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;@]+", line), f"not an exact pin of a released version: {line!r}"
        name, version = line.split("==")
        assert canonicalize_name(name) not in pins, f"{name} pinned twice"
        pins[canonicalize_name(name)] = version
    return pins


def installed_from_path(name: str) -> bool:
    """A distribution of this repository installed from its folder (e.g. `pip install -e .`):
    never in the lock, which holds released versions only."""
    try:
        direct = metadata.distribution(name).read_text("direct_url.json") or ""
    except metadata.PackageNotFoundError:
        return False
    return '"file:' in direct


def project_requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_lock_holds_exact_pins_and_not_the_project():
    pins = locked()
    assert canonicalize_name(PROJECT["name"]) not in pins
    assert len(pins) > 50


def test_lock_agrees_with_pyproject():
    """Every pin and range of pyproject.toml (mlserver==1.7.1, uvloop<0.22, ...) holds in the lock."""
    pins = locked()
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if installed_from_path(name):
            continue
        assert name in pins, f"{req.name} (pyproject.toml) is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, pyproject.toml asks {req}: run `make lock`"
    assert pins["mlserver"] == "1.7.1"


def _closure(roots: list[Requirement], extras_env: dict) -> set[str]:
    """Names of every installed distribution the roots need, following requirements transitively."""
    seen: set[str] = set()
    todo = [(r, ()) for r in roots]
    while todo:
        req, extras = todo.pop()
        env = {**extras_env, "extra": ""}
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or ("",))):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for sub in metadata.distribution(req.name).requires or ():
            todo.append((Requirement(sub), tuple(req.extras)))
    return {k.split("[")[0] for k in seen}


def test_venv_holds_the_locked_versions():
    """The run's venv was installed with the lock: each distribution the project needs (with
    its dev extra) is pinned, at the version that is installed."""
    pins = locked()
    roots = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]]
    needed = {n for n in _closure(roots, default_environment()) - VENV_SEEDED if not installed_from_path(n)}
    missing = sorted(n for n in needed if n not in pins)
    assert not missing, f"installed but not locked: {missing} (run `make lock`)"
    differ = {n: (metadata.version(n), pins[n]) for n in needed if metadata.version(n) != pins[n]}
    assert not differ, f"installed != locked (installed, locked): {differ}; run `make install` or `make lock`"


def test_every_install_uses_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    pip_runs = re.findall(r"pip install[^\n]*", dockerfile)
    assert pip_runs and all("-c constraints.txt" in r for r in pip_runs), pip_runs
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-c \$\(CONSTRAINTS\) .*-e '\.\[dev\]'", makefile)
    assert re.search(r"^\$\(INSTALLED\): .*\$\(CONSTRAINTS\)", makefile, re.M), "a new lock reinstalls the venv"
    assert 'PIP_CONSTRAINT="$PWD/constraints.txt"' in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
