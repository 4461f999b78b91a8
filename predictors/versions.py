"""Semantic-version order of model versions (framework-free).

One key for every place that orders versions: the newest version of a model for outcomes
(runtime/outcomes.py), the version MLServer routes the unversioned path to
(runtime/versions.py) and the lifecycle tools (lifecycle/repository.py). Plain string order
puts 1.9.0 after 1.10.0.
"""

from __future__ import annotations

import re

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def semver_key(version: str) -> tuple:
    """Sort key of semantic versions (1.10.0 after 1.9.0; a pre-release before its release)."""
    m = SEMVER.match(version)
    if not m:
        return (-1, -1, -1, 0, version)  # non-semver versions sort first
    major, minor, patch, pre = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre[1:].split("."))
    return (major, minor, patch, 0, parts)


def newest(versions) -> str | None:
    """The highest of some versions in semver order (None for none)."""
    versions = list(versions)
    return max(versions, key=semver_key) if versions else None
