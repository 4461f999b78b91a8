"""The built image run as Kubernetes runs it: read-only root filesystem, a tmpfs /tmp, no
capabilities, uid 1000 or an arbitrary uid with gid 0 (OpenShift's restricted SCC), the models
either baked in (BAKE_MODELS=true) or one bundle mounted read-only at /mnt/models the way
KServe's storage initializer lays it out (the bundle's files directly under /mnt/models).
Every model must be ready at its versioned path and answer tritonclient over V2 REST and gRPC
through the published ports with what predictors/ computes in-process."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ..conftest import request_json, shipped_bundle
from ..test_server import check_outputs, triton_inputs
from .conftest import METRICS, http_get, run_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

VERTICALS = ("auto", "home", "health", "life", "claims")
# OpenShift's restricted SCC runs a namespace's pods under an arbitrary uid from its range, gid 0.
ARBITRARY_UID = "1000770000:0"


def ready_path(name: str) -> str:
    return f"/v2/models/{name}/versions/{shipped_bundle(name).name}/ready"


def assert_answers_v2(container, name: str) -> None:
    """tritonclient over REST (the unversioned route) and gRPC (the bundle's version)."""
    request = request_json(name)
    http = httpclient.InferenceServerClient(url=container.http)
    assert http.is_model_ready(name, shipped_bundle(name).name)
    result = http.infer(name, triton_inputs(httpclient, request), parameters=request["parameters"])
    response = result.get_response()
    assert response["model_name"] == name and response["model_version"] == shipped_bundle(name).name
    check_outputs(name, request, {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]})

    grpc = grpcclient.InferenceServerClient(url=container.grpc)
    try:
        assert grpc.is_server_live() and grpc.is_model_ready(name, shipped_bundle(name).name)
        result = grpc.infer(name, triton_inputs(grpcclient, request), model_version=shipped_bundle(name).name,
                            parameters=request["parameters"])
        outputs = result.get_response(as_json=True)["outputs"]
        check_outputs(name, request, {o["name"]: result.as_numpy(o["name"]) for o in outputs})
    finally:
        grpc.close()


def mounted_bundle(tmp_path, name: str):
    """A copy of the shipped bundle, laid out as KServe's storage initializer leaves it."""
    dst = tmp_path / "mnt-models"
    shutil.copytree(shipped_bundle(name), dst)
    assert (dst / "model-settings.json").is_file()
    return dst


@pytest.mark.parametrize("user", ["1000", ARBITRARY_UID])
def test_baked_image_serves_every_model_read_only(images, container_factory, figures, user):
    c = container_factory(images.baked, user=user)
    seconds = c.wait_ready([ready_path(v) for v in VERTICALS])
    assert c.exec("id", "-u").strip() == user.split(":")[0]
    for v in VERTICALS:
        assert_answers_v2(c, v)
    assert http_get(f"http://127.0.0.1:{c.ports[METRICS]}/metrics") == 200
    figures[f"five baked models ready, uid {user} (s)"] = f"{seconds:.1f}"
    figures[f"RSS five baked models while the trees compile, uid {user} (MiB)"] = f"{c.rss_mib():.0f}"
    c.wait_children()
    figures[f"RSS five baked models, uid {user} (MiB)"] = f"{c.rss_mib():.0f}"


@pytest.mark.parametrize(("name", "user"), [("auto", ARBITRARY_UID), ("claims", "1000")])
def test_one_bundle_mounted_read_only(images, container_factory, figures, tmp_path, name, user):
    """KServe's layout: one model, named after the vertical, with the bundle's version."""
    c = container_factory(images.plain, user=user, models=mounted_bundle(tmp_path, name))
    seconds = c.wait_ready([ready_path(name)])
    assert c.exec("id", "-u").strip() == user.split(":")[0]
    # the root filesystem and the model mount are read-only; /tmp (tmpfs) is writable
    probe = ("import pathlib, sys\n"
             "for d in ('/', '/mnt/models', '/opt/venv'):\n"
             "    try: (pathlib.Path(d) / 'probe').write_text('x'); sys.exit(d + ' is writable')\n"
             "    except OSError: pass\n"
             "pathlib.Path('/tmp/probe').write_text('x')")
    c.exec("python", "-c", probe)
    index = urllib.request.Request(f"http://{c.http}/v2/repository/index", data=b"{}", method="POST",
                                   headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(index, timeout=5) as r:
        assert [(m["name"], m["state"]) for m in json.loads(r.read())] == [(name, "READY")]
    assert_answers_v2(c, name)
    c.wait_children()
    if name == "auto":  # the image's default: compiled on this machine into /tmp, verified, then used
        logs = c.wait_log("scoring with compiled trees", "compiled trees unavailable")
        assert "scoring with compiled trees" in logs, logs[-3000:]
        assert_answers_v2(c, name)
    figures[f"{name}: cold start to ready (s)"] = f"{seconds:.1f}"
    figures[f"{name}: RSS serving (MiB)"] = f"{c.rss_mib():.0f}"


def test_server_and_child_modules_load_from_bytecode_built_into_the_image(images, tmp_path):
    """Python cannot cache bytecode on the read-only root: everything `insurance-mlserver start`
    imports, and what its children import (compiled trees, the claims translation: done here in
    one process on the shipped bundles), must come compiled in the image (runtime/precompile.py)."""
    repo = tmp_path / "repo"
    for name in ("auto", "claims"):
        shutil.copytree(shipped_bundle(name), repo / name / shipped_bundle(name).name)
    code = ("import os, sys, pathlib\n"
            "from runtime.main import import_server\n"
            "from runtime.precompile import exercise_children\n"
            "import_server()\n"
            "done = exercise_children(pathlib.Path('/mnt/models'))\n"
            "mods = [m for m in list(sys.modules.values()) if (getattr(m, '__file__', None) or '').endswith('.py')\n"
            "        and '/site-packages/' in m.__file__]\n"
            "missing = sorted(m.__name__ for m in mods if not os.path.exists(m.__cached__ or ''))\n"
            "print(','.join(done), len(mods), ' '.join(missing))\n")
    out = run_engine("run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,size=256m,mode=1777", "--user", "1000",
                     "--volume", f"{repo}:/mnt/models:ro", "--entrypoint", "python", images.plain, "-c", code,
                     timeout=300).stdout.split(maxsplit=2)
    assert out[0] == "lightgbm,sklearn", out
    assert int(out[1]) > 1000, "the server's and children's imports were not found: nothing to check"
    assert out[2:] == [], f"imported without bytecode in the image: {out[2][:2000]}"
