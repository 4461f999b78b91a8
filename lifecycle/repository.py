"""Model repositories: ``<root>/<vertical>/<semver>/`` bundle folders, semver order, next versions.

A repository is a local folder, given as a path or as a ``file://`` URI (the form of a
KServe ``storageUri``). Other storage URIs (``pvc://``, ``s3://``, ``gs://``) are not read
directly: mount or sync them to a folder first; the error says so.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictors.bundle import BundleError, read_manifest
from predictors.versions import SEMVER, semver_key  # noqa: F401  (re-exported: one key for every version order)

BUMPS = ("major", "minor", "patch")
DEFAULT_REPOSITORY = "models"
REPOSITORY_ENV = "INSURANCE_MODEL_REPOSITORY"


class RepositoryError(Exception):
    """A repository or bundle path cannot be used: the message says why."""


def bump(version: str, part: str) -> str:
    m = SEMVER.match(version)
    if not m:
        raise RepositoryError(f"{version!r} is not a semantic version")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    if part == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise RepositoryError(f"bump must be one of {', '.join(BUMPS)}, not {part!r}")


def resolve(location: str | Path | None) -> Path:
    """A repository given as a path or file:// URI -> a local folder that exists."""
    if location is None:
        location = os.environ.get(REPOSITORY_ENV, DEFAULT_REPOSITORY)
    text = str(location)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RepositoryError(f"{text}: file:// URIs must name a local path (file:///path)")
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise RepositoryError(
            f"{text}: {parsed.scheme}:// storage is not read directly; mount it or copy it to a local folder "
            f"(e.g. `gsutil -m rsync -r` / `aws s3 sync` / `kubectl cp`) and pass that folder or file:// URI")
    else:
        path = Path(text)
    if not path.is_dir():
        raise RepositoryError(f"{text}: no such folder")
    return path


@dataclass
class BundleInfo:
    vertical: str
    version: str
    path: Path
    manifest: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def framework(self) -> str:
        return (self.manifest or {}).get("framework", "?")

    @property
    def created(self) -> str:
        return (self.manifest or {}).get("created", "?")

    def metric(self, *path: str) -> float | None:
        node: Any = (self.manifest or {}).get("metrics", {})
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, (int, float)) else None

    def key_metrics(self) -> dict[str, float | None]:
        return {"holdout_roc_auc": self.metric("holdout", "roc_auc"),
                "cv_roc_auc": self.metric("cv", "roc_auc_mean"),
                "baseline_roc_auc": self.metric("baseline", "roc_auc"),
                "f1": self.metric("holdout", "f1")}


def list_bundles(root: Path, vertical: str | None = None) -> list[BundleInfo]:
    """Every ``<vertical>/<version>/`` folder holding a manifest (hidden folders are skipped,
    as MLServer skips them), in vertical then semver order. Unreadable manifests are listed
    with their error."""
    out = []
    for vdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if vertical is not None and vdir.name != vertical:
            continue
        for bdir in sorted((p for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                           key=lambda p: semver_key(p.name)):
            if not (bdir / "manifest.json").exists() and not (bdir / "model-settings.json").exists():
                continue
            info = BundleInfo(vertical=vdir.name, version=bdir.name, path=bdir)
            try:
                info.manifest = read_manifest(bdir)
            except BundleError as e:
                info.error = str(e)
            out.append(info)
    return out


def versions(root: Path, vertical: str) -> list[str]:
    return [b.version for b in list_bundles(root, vertical)]


def latest(root: Path, vertical: str, exclude: str | None = None) -> BundleInfo | None:
    found = [b for b in list_bundles(root, vertical) if b.version != exclude and b.manifest is not None
             and SEMVER.match(b.version)]
    return max(found, key=lambda b: semver_key(b.version)) if found else None


def next_version(root: Path | None, vertical: str, part: str = "minor") -> str:
    """The next free semver of a vertical: the highest version in the repository bumped by `part`
    (1.0.0 when the repository has none)."""
    existing = [v for v in (versions(root, vertical) if root and (root / vertical).is_dir() else [])
                if SEMVER.match(v)]
    if not existing:
        return "1.0.0"
    return bump(max(existing, key=semver_key).split("-")[0].split("+")[0], part)


def find_bundle(path: Path) -> Path:
    """A bundle folder, or a training output holding exactly one bundle (``<out>/<vertical>/<version>``)."""
    if (path / "manifest.json").is_file():
        return path
    if not path.is_dir():
        raise RepositoryError(f"{path}: no such folder")
    found = sorted(p.parent for p in path.glob("*/manifest.json")) + \
        sorted(p.parent for p in path.glob("*/*/manifest.json"))
    found = [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise RepositoryError(f"{path}: neither a bundle (no manifest.json) nor a training output holding one")
    raise RepositoryError(f"{path}: holds {len(found)} bundles ({', '.join(str(p.relative_to(path)) for p in found)}); "
                          "name one")
