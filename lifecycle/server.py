"""Hot swap on a running MLServer through its repository API (no restart).

MLServer 1.7.1's repository API works on model *names*, not versions:

- ``POST /v2/repository/models/<name>/load`` loads every version of <name> found in the
  repository folder the server was started with (reloading loaded ones: the new instance
  loads before the old one is dropped) and unloads loaded versions whose folder is gone.
- ``POST /v2/repository/models/<name>/unload`` unloads every version.
- ``/v2/models/<name>/infer`` goes to the newest loaded version, compared as *strings*
  (1.10.0 sorts before 1.9.0).

So loading one new version = put its folder into the repository, then ``load``; unloading
one version = move its folder out (to ``<repository>/.retired/``; MLServer does not look
into hidden folders), then ``load``. New bundles come in through lifecycle/registry.py's
``register`` (validated in a hidden staging folder, then renamed into place), so the server never
sees a half-copied bundle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .repository import RepositoryError, semver_key

RETIRED = ".retired"


class ServerError(Exception):
    """The server refused or could not be reached: the message says what it answered."""


@dataclass
class ServerAPI:
    url: str
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)

    def _post(self, path: str, json: Any = None) -> httpx.Response:
        try:
            r = httpx.post(self.url.rstrip("/") + path, json=json if json is not None else {},
                           headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise ServerError(f"POST {self.url}{path}: {type(e).__name__}: {e}") from e
        if r.status_code >= 400:
            raise ServerError(f"POST {path} answered {r.status_code}: {_error_text(r)}")
        return r

    def _get_status(self, path: str) -> int:
        try:
            return httpx.get(self.url.rstrip("/") + path, headers=self.headers, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def index(self) -> list[dict[str, Any]]:
        """Every model-settings.json the server's repository holds: name, version, state, reason."""
        return self._post("/v2/repository/index", {}).json()

    def load(self, name: str) -> None:
        self._post(f"/v2/repository/models/{name}/load")

    def unload(self, name: str) -> None:
        self._post(f"/v2/repository/models/{name}/unload")

    def ready(self, name: str, version: str | None = None) -> bool:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
        return self._get_status(path) == 200

    def wait_ready(self, name: str, version: str | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready(name, version):
                return
            time.sleep(0.1)
        raise ServerError(f"{name} {version or ''} not ready after {timeout:g} s")

    def loaded_versions(self, name: str) -> list[str]:
        return sorted((str(i.get("version")) for i in self.index()
                       if i.get("name") == name and i.get("state") == "READY"), key=semver_key)


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        if isinstance(body, dict):
            return str(body.get("error") or body.get("detail") or body)
    except ValueError:
        pass
    return r.text.strip()[:500]


def default_version(versions: list[str]) -> str | None:
    """The version the unversioned path goes to: the newest in semver order (the runtime replaces
    MLServer 1.7.1's string order, runtime/versions.py)."""
    return max(versions, key=semver_key) if versions else None


def retire(repository: Path, vertical: str, version: str) -> Path:
    """Move <repository>/<vertical>/<version> to <repository>/.retired/<vertical>/<version>[.N]."""
    src = repository / vertical / version
    if not src.is_dir():
        raise RepositoryError(f"{src}: no such version in the repository")
    target = repository / RETIRED / vertical / version
    n = 1
    while target.exists():
        target = repository / RETIRED / vertical / f"{version}.{n}"
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    src.rename(target)
    return target


def repository_versions(repository: Path, vertical: str) -> list[str]:
    folder = repository / vertical
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (p / "model-settings.json").is_file()), key=semver_key)


def unload_version(api: ServerAPI, repository: Path, vertical: str, version: str,
                   timeout: float = 60.0) -> list[str]:
    """Stop serving one version: retire its folder, then let `load` drop it. Returns the versions left."""
    retire(repository, vertical, version)
    left = repository_versions(repository, vertical)
    if left:
        api.load(vertical)
        deadline = time.monotonic() + timeout
        while api.ready(vertical, version):
            if time.monotonic() > deadline:
                raise ServerError(f"{vertical} {version} still served after {timeout:g} s")
            time.sleep(0.1)
    else:
        api.unload(vertical)
    return left
