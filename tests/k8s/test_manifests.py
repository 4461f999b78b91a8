"""manifests/: the chart rendered with default values for kubectl users.

`kubectl apply` needs an API server (even --dry-run=client asks it for discovery), so these
tests check offline what kubectl does with the directory: `kubectl kustomize manifests/`
(what `apply -k` sends) and `kubectl annotate --local -f manifests/` (which files `apply -f`
reads and that every document parses). Staleness: re-rendering must reproduce the files.
"""

from __future__ import annotations

import filecmp

import yaml

from .kube import REPO, helm_template, run, tool

MANIFESTS = REPO / "manifests"


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_manifests_are_not_stale(tmp_path):
    out = tmp_path / "manifests"
    p = run(["bash", str(REPO / "scripts" / "render-manifests.sh"), str(out), tool("helm")])
    assert p.returncode == 0, p.stderr
    expected = sorted(f.name for f in out.iterdir())
    assert sorted(f.name for f in MANIFESTS.iterdir()) == expected, "run `make manifests`"
    _, mismatch, errors = filecmp.cmpfiles(MANIFESTS, out, expected, shallow=False)
    assert not mismatch and not errors, f"manifests/ is stale ({mismatch or errors}): run `make manifests`"


def test_manifests_are_the_default_render_without_test_hooks():
    rendered = _docs((MANIFESTS / "10-insurance-serving.yaml").read_text(encoding="utf-8"))
    assert rendered == [o for o in helm_template() if "helm.sh/hook" not in o["metadata"].get("annotations", {})]
    assert not [o for o in rendered if o["kind"] == "Pod"]
    for name in ("00-namespace.yaml", "10-insurance-serving.yaml", "Kustomization"):
        assert (MANIFESTS / name).read_text(encoding="utf-8").startswith("# GENERATED FILE, DO NOT EDIT: make manifests")


def test_kubectl_kustomize_builds_the_same_objects():
    p = run([tool("kubectl"), "kustomize", str(MANIFESTS)])
    assert p.returncode == 0, p.stderr
    built = _docs(p.stdout)
    files = _docs((MANIFESTS / "00-namespace.yaml").read_text(encoding="utf-8")) + \
        _docs((MANIFESTS / "10-insurance-serving.yaml").read_text(encoding="utf-8"))
    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, files))
    assert {key(o): o for o in built} == {key(o): o for o in files}, "kustomize must not rewrite objects"
    csr = next(o for o in built if o["kind"] == "ClusterServingRuntime")
    assert "namespace" not in csr["metadata"], "a cluster-scoped object must stay without namespace"


def test_kubectl_apply_f_reads_every_object_and_skips_the_kustomization():
    p = run([tool("kubectl"), "annotate", "--local", "--dry-run=client", "-o", "name",
             "-f", str(MANIFESTS), "insurance-serving.io/check=1"])
    assert p.returncode == 0, p.stderr
    names = p.stdout.split()
    files = _docs((MANIFESTS / "00-namespace.yaml").read_text(encoding="utf-8")) + \
        _docs((MANIFESTS / "10-insurance-serving.yaml").read_text(encoding="utf-8"))
    assert len(names) == len(files)
    assert names[0] == "namespace/insurance-serving", "the namespace is applied first (file order)"
    assert not any("kustomization" in n.lower() for n in names)
