"""Canary, promote and rollback of one vertical as a values change of the Helm release.

Each action reads the release's current values (``helm get values --all``, or a values file
offline), checks the request against them, and builds ONE
``helm upgrade --reset-then-reuse-values --set ...``, so the rollout history lives in Helm
(``helm history``, ``helm rollback``). ``insurance rollout`` (and ``make canary|promote|rollback``,
which call it with the validation gate in front of a canary) runs it.

What each action sets (``verticals.<V>.`` prefix omitted):
  canary    canary.enabled=true, canary.version, canary.storageUri (default: the stable
            storageUri with its trailing /<stable version> replaced by /<VERSION>),
            canary.trafficPercent. Run it again with another PERCENT to shift traffic. An s3://
            URI always ends in / (KServe downloads every key with the prefix).
  promote   version and storageUri := the canary's, canary.enabled=false.
            Knative: the canary revision already serves that spec and takes 100 %.
            Standard: the stable Deployment rolls to the canary bundle (maxUnavailable 0,
            gated by the per-version readiness probe), then KServe deletes the canary one.
  rollback  Knative, first run: canary.trafficPercent=0 (KServe routes everything to the last
            revision rolled out at 100 %, at once; the chart puts the stable bundle back in the
            spec, so the canary revision leaves the route and Knative scales it away).
            Knative, second run (trafficPercent already 0, once `kubectl get isvc` shows the new
            stable revision ready): canary.enabled=false (that revision takes 100 %, the
            previous one leaves). Standard: canary.enabled=false (KServe deletes the canary
            Deployment; the stable one kept serving its share all along).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictors.spec import load_config

from .repository import SEMVER

#: The verticals of predictors/verticals.yaml (the one config of the verticals).
VERTICALS = tuple(load_config().verticals)
ACTIONS = ("canary", "promote", "rollback")
DEFAULT_RELEASE = "insurance-serving"
DEFAULT_NAMESPACE = "insurance-serving"
DEFAULT_CHART = "helm/insurance-serving"


class RolloutError(Exception):
    """The request does not fit the release's values: the message says why."""


@dataclass(frozen=True)
class Route:
    """What the chart values route for one vertical."""

    vertical: str
    enabled: bool
    stable: str
    stable_uri: str
    canary: str | None = None
    canary_uri: str | None = None
    canary_percent: int | None = None
    mode: str = "Standard"

    @property
    def canary_active(self) -> bool:
        return self.canary is not None and bool(self.canary_percent)

    def describe(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.canary is None:
            return f"stable {self.stable} (100%)"
        pct = self.canary_percent or 0
        return f"stable {self.stable} ({100 - pct}%), canary {self.canary} ({pct}%)"


def load_values_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


def release_values(release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE, helm: str = "helm",
                   values_file: str | Path | None = None) -> dict[str, Any]:
    """The release's computed values: from `helm get values --all`, or a file (offline, tests)."""
    if values_file:
        return load_values_file(values_file)
    cmd = [helm, "get", "values", release, "--namespace", namespace, "--all", "--output", "json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RolloutError(f"`{helm}` not found: install helm (`make tools`) or pass --helm PATH") from e
    if proc.returncode != 0:
        raise RolloutError(f"`{shlex.join(cmd)}` failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def routes(values: dict[str, Any]) -> dict[str, Route]:
    """vertical -> Route, from the chart's values (the `verticals` map)."""
    mode = str(values.get("deploymentMode", "Standard"))
    out = {}
    for name, node in (values.get("verticals") or {}).items():
        node = node or {}
        canary = node.get("canary") or {}
        on = bool(canary.get("enabled")) and bool(canary.get("version"))
        out[name] = Route(
            vertical=name, enabled=bool(node.get("enabled", False)), stable=str(node.get("version", "")),
            stable_uri=str(node.get("storageUri", "")), mode=mode,
            canary=str(canary["version"]) if on else None,
            canary_uri=str(canary.get("storageUri", "")) if on else None,
            canary_percent=int(canary.get("trafficPercent", 0)) if on else None,
        )
    return out


def plan(action: str, values: dict[str, Any], vertical: str, version: str | None = None,
         percent: int | None = None, storage_uri: str | None = None) -> list[str]:
    """The `--set key=value` list of one action; raises RolloutError when the request does not fit."""
    v = vertical
    node = (values.get("verticals") or {}).get(v)
    if not node:
        raise RolloutError(f"vertical {v!r} is not in the release's values")
    if not node.get("enabled", False):
        raise RolloutError(f"vertical {v!r} is disabled in this release")
    mode = values.get("deploymentMode", "Standard")
    knative = mode in ("Knative", "Serverless")
    canary = node.get("canary") or {}
    p = f"verticals.{v}"
    stable_version = str(node.get("version", ""))

    if action == "canary":
        if version is None or percent is None:
            raise RolloutError("canary needs VERSION and PERCENT")
        if not SEMVER.match(version):
            raise RolloutError(f"VERSION {version!r} is not a semantic version (e.g. 1.1.0)")
        if not 0 <= percent <= 100:
            raise RolloutError(f"PERCENT {percent} is not within 0-100")
        if version == stable_version:
            raise RolloutError(f"{version} is already the stable version of {v}")
        uri = storage_uri or derive_uri(str(node.get("storageUri", "")), stable_version, version)
        check_uri(uri)
        return [f"{p}.canary.enabled=true", f"{p}.canary.version={version}",
                f"{p}.canary.storageUri={uri}", f"{p}.canary.trafficPercent={percent}"]

    if action not in ACTIONS:
        raise RolloutError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if not canary.get("enabled"):
        raise RolloutError(f"{v} has no canary in this release (nothing to {action})")
    canary_version = str(canary.get("version", ""))
    if version is not None and version != canary_version:
        raise RolloutError(f"VERSION {version} is not the canary of {v} (the canary is {canary_version})")

    if action == "promote":
        check_uri(str(canary.get("storageUri", "")))
        return [f"{p}.version={canary_version}", f"{p}.storageUri={canary['storageUri']}",
                f"{p}.canary.enabled=false"]
    # rollback
    if knative and int(canary.get("trafficPercent", 0)) != 0:
        return [f"{p}.canary.trafficPercent=0"]
    return [f"{p}.canary.enabled=false"]


def check_uri(uri: str) -> None:
    """Refuse an s3:// URI without the trailing / (KServe would download every key with that prefix)."""
    if uri.startswith("s3://") and not uri.endswith("/"):
        raise RolloutError(f"storageUri {uri!r} must end in /: KServe downloads every S3 key that starts with the "
                           f"path, so it would also fetch {uri}-rc.1/ and MLServer would find two bundles")


def derive_uri(stable_uri: str, stable_version: str, version: str) -> str:
    """The canary bundle's URI: the stable one with its last segment /<stable version> -> /<version>."""
    suffix = f"/{stable_version}"
    if not stable_uri.rstrip("/").endswith(suffix):
        raise RolloutError(f"cannot derive the canary storageUri from {stable_uri!r} (it does not end in "
                           f"{suffix}); pass STORAGE_URI=")
    uri = stable_uri.rstrip("/")[: -len(suffix)] + f"/{version}"
    return uri + "/" if stable_uri.endswith("/") or uri.startswith("s3://") else uri


def helm_upgrade_command(sets: list[str], release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE,
                         chart: str = DEFAULT_CHART, helm: str = "helm") -> list[str]:
    cmd = [helm, "upgrade", release, chart, "--namespace", namespace, "--reset-then-reuse-values"]
    for s in sets:  # strings stay strings (a version like 1.10.0 must not become a number)
        key = s.split("=", 1)[0]
        cmd += ["--set-string" if key.endswith((".version", ".storageUri")) else "--set", s]
    return cmd
