"""Helpers of the Kubernetes tests: the real helm / kubectl / hadolint binaries and
rendering of the chart.

There is no Kubernetes API server in these tests. Everything runs offline: `helm template`
and `helm lint` (client-side rendering and schema checks), `kubectl kustomize` and
`kubectl ... --local` (no discovery), and schema validation of every rendered object against
the real CRDs (tests/k8s/crds) and the Kubernetes OpenAPI schemas of `kubernetes-validate`.
What needs a cluster (admission webhooks of KServe and Knative, the API server's defaulting)
is out of reach here; docs/kubernetes.md says how to check it on a cluster (`helm test`).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "insurance-serving"
VALUES_DIR = Path(__file__).resolve().parent / "values"
CRD_DIR = Path(__file__).resolve().parent / "crds"
# The verticals of predictors/verticals.yaml (the one config of the verticals), in its order.
VERTICALS = tuple(yaml.safe_load((REPO / "predictors" / "verticals.yaml").read_text(encoding="utf-8"))["verticals"])
RELEASE = "insurance-serving"
NAMESPACE = "insurance-serving"


def _tools_bin() -> Path:
    return (REPO / os.environ.get("TOOLS_DIR", ".tools")).resolve() / "bin"


def tool(name: str) -> str:
    """Path of a project-local tool (make tools installs them). Never /usr/bin/kubectl:
    on these machines that is a dispatcher stub, not kubectl."""
    candidates = [_tools_bin() / name]
    if name == "hadolint":
        candidates.append(REPO / ".venv" / "bin" / "hadolint")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.fail(f"{name} not found in {_tools_bin()}: run `make tools` (scripts/install-k8s-tools.sh)", pytrace=False)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": os.devnull, "HELM_CACHE_HOME": str(Path(os.environ.get("TMPDIR", "/tmp")) / "helm-cache-k8s-tests")}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, **kw)


@functools.lru_cache(maxsize=None)
def _template(values: tuple[str, ...], sets: tuple[str, ...], extra: tuple[str, ...]) -> tuple[int, str, str]:
    cmd = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    for v in values:
        cmd += ["-f", str(v)]
    for s in sets:
        cmd += ["--set", s]
    p = run(cmd)
    return p.returncode, p.stdout, p.stderr


def helm_template(*values: str | Path, sets: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[dict]:
    """Render the chart; return the objects (documents that are not empty)."""
    code, out, err = _template(tuple(str(v) for v in values), tuple(sets), tuple(extra))
    assert code == 0, f"helm template failed:\n{err}"
    return [d for d in yaml.safe_load_all(out) if d]


def helm_template_error(*values: str | Path, sets: tuple[str, ...] = ()) -> str:
    code, _, err = _template(tuple(str(v) for v in values), tuple(sets), ())
    assert code != 0, "helm template succeeded but was expected to fail"
    return err


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def isvcs(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in by_kind(objs, "InferenceService")}


def verticals_config() -> dict:
    return yaml.safe_load((REPO / "predictors" / "verticals.yaml").read_text(encoding="utf-8"))["verticals"]
