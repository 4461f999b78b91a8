"""Registering bundles: a training output becomes a versioned bundle of a repository, only if
it passes the validation gate."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from predictors.bundle import MANIFEST, BundleError, read_manifest

from .repository import SEMVER, RepositoryError, find_bundle, latest, next_version
from .rollout import routes
from .validate import Report, validate


@dataclass
class Registration:
    vertical: str | None
    version: str | None
    path: Path | None
    report: Report

    @property
    def ok(self) -> bool:
        return self.path is not None and self.report.ok

    def to_dict(self) -> dict[str, Any]:
        return {"registered": self.ok, "vertical": self.vertical, "version": self.version,
                "path": str(self.path) if self.path else None, "validation": self.report.to_dict()}


def stable_bundle(repository: Path | None, vertical: str, values: dict | None = None,
                  exclude: Path | None = None) -> Path | None:
    """The bundle the candidate is compared with: the version the chart routes as stable when
    values are given and that version is in the repository, else the repository's newest
    version (semver) other than the candidate itself."""
    if repository is None or not (repository / vertical).is_dir():
        return None
    if values:
        route = routes(values).get(vertical)
        if route and route.stable and (repository / vertical / route.stable / MANIFEST).is_file():
            return repository / vertical / route.stable
    candidates = [b for b in _bundles(repository, vertical)
                  if exclude is None or b.resolve() != exclude.resolve()]
    return candidates[-1] if candidates else None


def _bundles(repository: Path, vertical: str) -> list[Path]:
    from .repository import list_bundles

    return [b.path for b in list_bundles(repository, vertical) if b.manifest is not None and SEMVER.match(b.version)]


def _rewrite_version(folder: Path, version: str, source: Path) -> None:
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    trained_as = manifest.get("version")
    manifest["version"] = version
    manifest["registration"] = {"source": str(source), "trained_as_version": trained_as,
                                "registered": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    settings_path = folder / "model-settings.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    settings.setdefault("parameters", {})["version"] = version
    settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def register(training_output: str | Path, repository: str | Path, *, version: str | None = None,
             bump: str = "minor", values: dict | None = None, **gate: Any) -> Registration:
    """Copy a training output into `repository` as <vertical>/<version> if it validates.

    The version is `version`, or the repository's highest version of the vertical bumped by
    `bump` (1.0.0 for the first). The copy is validated in a hidden staging folder of the
    repository and renamed into place only when every check passed; `gate` takes the keyword
    arguments of lifecycle.validate.validate (tolerance, latency_budget_ms, ...)."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    src = find_bundle(Path(training_output))
    try:
        manifest = read_manifest(src)
    except BundleError:
        report = validate(src, **gate)  # the report says what is wrong with it
        return Registration(None, None, None, report)
    vertical = manifest["vertical"]
    if version is None:
        version = next_version(repository, vertical, bump)
    elif not SEMVER.match(version):
        raise RepositoryError(f"version {version!r} is not semver (MAJOR.MINOR.PATCH)")
    dest = repository / vertical / version
    if dest.exists():
        raise RepositoryError(f"{dest} exists already: bundles are immutable; choose another version")
    stable = stable_bundle(repository, vertical, values)
    staging = Path(tempfile.mkdtemp(prefix=".register-", dir=repository))
    try:
        work = staging / version
        shutil.copytree(src, work)
        if str(manifest["version"]) != version:
            _rewrite_version(work, version, src)
        report = validate(work, stable=stable, **gate)
        report.bundle = str(src)
        if not report.ok:
            return Registration(vertical, version, None, report)
        dest.parent.mkdir(parents=True, exist_ok=True)
        work.rename(dest)
        return Registration(vertical, version, dest, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def newest(repository: Path, vertical: str) -> str | None:
    b = latest(repository, vertical)
    return b.version if b else None
