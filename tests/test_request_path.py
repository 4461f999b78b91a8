"""The runtime's own request path (runtime/fastpath.py) against MLServer's, on real servers.

Two MLServer processes serve the same bundles: one as shipped (the runtime's path answers V2
infer) and one with ``INSURANCE_FAST_PATH=false`` (every request takes MLServer's path). The same
requests (the examples, error cases, and the hostile-input strategies of tests/security) go to
both; status, body and headers must be the same, byte for byte where no server-made id is
involved. ``ml_fast_path_requests_total`` shows which path answered.
"""

from __future__ import annotations

import copy
import gzip
import json
import re

import grpc
import pytest
from hypothesis import given

from .conftest import copy_repository, request_json, start_fast_and_plain, start_server, stop_server
from .security.conftest import Http
from .security.test_hostile_input import _fuzz_settings, _pb, _stub, grpc_requests, mutated_requests, random_requests

pytestmark = pytest.mark.slow

MODELS = ("auto", "claims", "home")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Pair:
    def __init__(self, fast, plain):
        self.fast, self.plain = fast, plain
        self.http = {s: Http(srv.http_port, timeout=60) for s, srv in (("fast", fast), ("plain", plain))}
        self.channel = {s: grpc.insecure_channel(srv.grpc, options=[("grpc.max_send_message_length", 64 << 20)])
                        for s, srv in (("fast", fast), ("plain", plain))}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    fast, plain = start_fast_and_plain(tmp_path_factory.mktemp("paths"), MODELS)
    p = Pair(fast, plain)
    yield p
    for c in p.channel.values():
        c.close()
    for h in p.http.values():
        h.close()
    stop_server(plain)
    stop_server(fast)


def fast_path_count(srv, model: str) -> float:
    text = Http(srv.metrics_port).get("/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ml_fast_path_requests_total{") and f'model_name="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def post(pair: Pair, side: str, path: str, body, headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    r = pair.http[side].post(path, data, headers=headers)
    return r.status, r.body, {k.lower(): v for k, v in r.headers.items()}


def same_rest(pair: Pair, path: str, body, headers: dict | None = None) -> int:
    """Send to both servers; assert the same answer; return the status."""
    fs, fb, fh = post(pair, "fast", path, body, headers)
    ps, pb_, ph = post(pair, "plain", path, body, headers)
    assert fs == ps, (path, str(body)[:300], fb[:300], pb_[:300])
    if fs == 200 and isinstance(body, dict) and body.get("id") is None:
        # no id sent: each server made a UUID; the rest must agree
        fj, pj = json.loads(fb), json.loads(pb_)
        assert UUID.match(fj.pop("id")) and UUID.match(pj.pop("id"))
        assert fj == pj
        for h in (fh, ph):
            assert h.pop("ce-id") == h.pop("ce-requestid")
    else:
        assert fb == pb_, (path, str(body)[:300])
    keep = lambda h: {k: v for k, v in h.items() if k.startswith("ce-") or k in ("content-type", "vary")}  # noqa: E731
    assert keep(fh) == keep(ph)
    return fs


def test_examples_answer_identically_and_take_the_fast_path(pair):
    before = {m: fast_path_count(pair.fast, m) for m in MODELS}
    for m in MODELS:
        body = request_json(m)
        assert same_rest(pair, f"/v2/models/{m}/infer", body) == 200
        assert same_rest(pair, f"/v2/models/{m}/versions/1.0.0/infer", body) == 200
        no_id = {k: v for k, v in body.items() if k != "id"}
        assert same_rest(pair, f"/v2/models/{m}/infer", no_id) == 200
        some = {**body, "outputs": [{"name": "decision"}, {"name": "score"}]}
        assert same_rest(pair, f"/v2/models/{m}/infer", some) == 200
    for m in MODELS:
        assert fast_path_count(pair.fast, m) == before[m] + 4
        assert fast_path_count(pair.plain, m) == 0


def _rows(body: dict, n: int) -> dict:
    """The example request repeated to n rows (one input as [N, 1], as MLServer allows)."""
    inputs = []
    for k, inp in enumerate(body["inputs"]):
        data = [inp["data"][i % len(inp["data"])] for i in range(n)]
        inputs.append({**inp, "shape": [n, 1] if k == 0 else [n], "data": [[v] for v in data] if k == 0 else data})
    return {**body, "inputs": inputs}


@pytest.mark.parametrize("model", ["auto", "claims"])
def test_big_requests_answer_identically_with_and_without_gzip(pair, model):
    body = _rows(request_json(model), 1000)
    assert same_rest(pair, f"/v2/models/{model}/infer", body) == 200
    fs, fb, fh = post(pair, "fast", f"/v2/models/{model}/infer", body, {"Accept-Encoding": "gzip"})
    ps, pb_, ph = post(pair, "plain", f"/v2/models/{model}/infer", body, {"Accept-Encoding": "gzip"})
    assert fs == ps == 200
    assert fh["content-encoding"] == ph["content-encoding"] == "gzip" and fh["vary"] == ph["vary"]
    assert gzip.decompress(fb) == gzip.decompress(pb_)
    # gzip's XFL byte: 4 = fastest (the runtime's gzip_level 1), 2 = best (MLServer's level 9)
    assert (fb[8], pb_[8]) == (4, 2)


def test_errors_answer_identically(pair):
    auto = request_json("auto")

    def broken(change):
        body = copy.deepcopy(auto)
        change(body)
        return body

    cases = [
        broken(lambda b: b["inputs"][0].update(data=[-5, 30, 40])),  # out of range: 400 from predictors
        broken(lambda b: b["inputs"][0].update(name="colour")),  # unknown input
        broken(lambda b: b["inputs"][0].update(datatype="BYTES")),  # datatype not allowed
        broken(lambda b: b["inputs"][0].update(shape=[2])),  # rows differ
        broken(lambda b: b.update(outputs=[{"name": "premium"}])),  # unknown output
        broken(lambda b: b.update(parameters={"quote_time": "yesterday"})),
        broken(lambda b: b.update(id="a" * 300)),
        broken(lambda b: b.update(inputs=[])),
        broken(lambda b: b["inputs"][0].update(shape=["3"])),  # pydantic would coerce: MLServer's path answers
        broken(lambda b: b["inputs"][0].update(datatype="FP128")),  # MLServer's schema: 400 {"error"}
        broken(lambda b: b.pop("inputs")),
    ]
    statuses = [same_rest(pair, "/v2/models/auto/infer", body) for body in cases]
    assert statuses[:8] == [400] * 8 and set(statuses[8:]) <= {200, 400}
    assert same_rest(pair, "/v2/models/auto/infer", b"{not json") == 400  # OIP {"error"}, not FastAPI's 422
    assert same_rest(pair, "/v2/models/auto/infer", auto, {"Content-Type": "text/plain"}) == 400
    assert same_rest(pair, "/v2/models/nope/infer", auto) == 404
    assert same_rest(pair, "/v2/models/auto/versions/9.9.9/infer", auto) == 404


def test_mlserver_request_metrics_count_fast_path_requests(pair):
    def counts(srv):
        text = Http(srv.metrics_port).get("/metrics").body.decode()
        out = {}
        for line in text.splitlines():
            for name in ("model_infer_request_success_total", "model_infer_request_failure_total",
                         "model_infer_request_duration_count"):
                if line.startswith(name + "{") and 'model="life"' not in line and 'model="home"' in line:
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            if line.startswith("rest_server_requests_total{") and 'path="/v2/models/{model_name}/infer"' in line:
                out[line[line.index("{") + 1:line.rindex("}")]] = float(line.rsplit(" ", 1)[1])
        return out

    before = {side: counts(srv) for side, srv in (("fast", pair.fast), ("plain", pair.plain))}
    good, bad = request_json("home"), copy.deepcopy(request_json("home"))
    bad["inputs"][0]["data"][0] = -1
    for body in (good, good, bad):
        same_rest(pair, "/v2/models/home/infer", body)
    for side, srv in (("fast", pair.fast), ("plain", pair.plain)):
        after = counts(srv)
        delta = {k: after[k] - before[side].get(k, 0.0) for k in after}
        assert delta["model_infer_request_success_total"] == 2
        assert delta["model_infer_request_failure_total"] == 1
        assert delta["model_infer_request_duration_count"] == 3
        assert sum(v for k, v in delta.items() if 'status_code="200"' in k and 'method="POST"' in k) == 2
        assert sum(v for k, v in delta.items() if 'status_code="400"' in k) == 1


def test_hostile_rest_requests_answer_identically(pair):
    @_fuzz_settings(150)
    @given(case=random_requests() | mutated_requests())
    def run(case):
        model, body = case
        same_rest(pair, f"/v2/models/{model}/infer", body)

    run()


# ---- gRPC ---------------------------------------------------------------------------------------

def call(pair: Pair, side: str, request):
    call_ = _stub(pair.channel[side]).ModelInfer.with_call
    try:
        response, rpc = call_(request, timeout=60)
        return grpc.StatusCode.OK, response.SerializeToString(deterministic=True), sorted(rpc.trailing_metadata())
    except grpc.RpcError as e:
        return e.code(), (e.details() or "").encode(), []


def same_grpc(pair: Pair, request) -> grpc.StatusCode:
    fast, plain = call(pair, "fast", request), call(pair, "plain", request)
    assert fast == plain, (str(request)[:400], fast[:2], plain[:2])
    return fast[0]


def grpc_request(model: str, raw: bool, rows: int | None = None, **kw):
    pb = _pb()
    body = request_json(model)
    if rows:  # the example's rows repeated to `rows`
        body["inputs"] = [{**spec, "shape": [rows], "data": [spec["data"][i % len(spec["data"])] for i in range(rows)]}
                          for spec in body["inputs"]]
    req = pb.ModelInferRequest(model_name=model, id=body["id"], **kw)
    req.parameters["quote_time"].string_param = body["parameters"]["quote_time"]
    for spec in body["inputs"]:
        t = req.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        if spec["datatype"] == "BYTES":
            values = [v.encode() for v in spec["data"]]
            if raw:
                req.raw_input_contents.append(b"".join(len(v).to_bytes(4, "little") + v for v in values))
            else:
                t.contents.bytes_contents.extend(values)
        elif raw:
            import numpy as np

            req.raw_input_contents.append(np.asarray(spec["data"], dtype="<f8" if spec["datatype"] == "FP64"
                                                     else "<i8").tobytes())
        else:
            getattr(t.contents, "fp64_contents" if spec["datatype"] == "FP64" else "int64_contents").extend(spec["data"])
    return req


def test_grpc_answers_identically_and_takes_the_fast_path(pair):
    before = fast_path_count(pair.fast, "claims") + fast_path_count(pair.fast, "auto")
    sent = 0
    for model in ("auto", "claims"):
        for raw in (False, True):
            assert same_grpc(pair, grpc_request(model, raw)) == grpc.StatusCode.OK
            assert same_grpc(pair, grpc_request(model, raw, model_version="1.0.0")) == grpc.StatusCode.OK
            req = grpc_request(model, raw)
            req.outputs.add(name="decision")
            assert same_grpc(pair, req) == grpc.StatusCode.OK
            req.ClearField("id")
            assert same_grpc(pair, req) == grpc.StatusCode.OK
            sent += 4
            bad = grpc_request(model, raw)
            bad.inputs[0].name = "colour"
            assert same_grpc(pair, bad) == grpc.StatusCode.INVALID_ARGUMENT
            sent += 1
    assert fast_path_count(pair.fast, "claims") + fast_path_count(pair.fast, "auto") == before + sent
    assert same_grpc(pair, grpc_request("auto", False, model_version="9.9.9")) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("model", ["auto", "claims"])
@pytest.mark.parametrize("raw", [False, True])
def test_big_grpc_requests_answer_identically(pair, model, raw):
    assert same_grpc(pair, grpc_request(model, raw, rows=1000)) == grpc.StatusCode.OK


def test_hostile_grpc_requests_answer_identically(pair):
    @_fuzz_settings(150)
    @given(req=grpc_requests())
    def run(req):
        same_grpc(pair, req)

    run()


# ---- prediction cache ---------------------------------------------------------------------------

def test_prediction_cache_hits_are_counted_and_answer_the_same(pair, tmp_path):
    cached = start_server(copy_repository(tmp_path / "repo", ["auto"]), tmp_path, ["/v2/models/auto/ready"],
                          env={"INSURANCE_PREDICTION_CACHE_TTL": "60"})
    try:
        http = Http(cached.http_port)
        body = request_json("auto")
        other = copy.deepcopy(body)
        other["inputs"][0]["data"][0] += 1
        answers = [http.post("/v2/models/auto/infer", b) for b in (body, body, body, other)]
        assert [a.status for a in answers] == [200] * 4
        assert answers[0].body == answers[1].body == answers[2].body
        reference = pair.http["plain"].post("/v2/models/auto/infer", body)
        assert answers[0].body == reference.body  # a cached answer is the computed one
        lookups = {}
        for line in Http(cached.metrics_port).get("/metrics").body.decode().splitlines():
            if line.startswith("ml_prediction_cache_lookups_total{"):
                lookups[re.search(r'result="(\w+)"', line).group(1)] = float(line.rsplit(" ", 1)[1])
        assert lookups == {"hit": 2.0, "miss": 2.0}
        http.close()
    finally:
        stop_server(cached)


# ---- body size limit ----------------------------------------------------------------------------

def test_bodies_over_max_request_bytes_get_413_and_others_still_pass(tmp_path):
    import http.client

    limit = 4000
    srv = start_server(copy_repository(tmp_path / "repo", ["auto"]), tmp_path, ["/v2/models/auto/ready"],
                       env={"INSURANCE_MAX_REQUEST_BYTES": str(limit)})
    try:
        body = request_json("auto")
        small = json.dumps(body).encode()
        assert len(small) < limit
        big = copy.deepcopy(body)
        big["inputs"][-1]["data"] = ["x" * 1500] * 3  # location: 4.5 KB of text
        big = json.dumps(big).encode()
        assert len(big) > limit

        def send(data: bytes, chunked: bool = False):
            conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
            headers = {"Content-Type": "application/json"}
            if chunked:
                conn.request("POST", "/v2/models/auto/infer", body=iter([data[:1000], data[1000:]]),
                             headers=headers, encode_chunked=True)
            else:
                conn.request("POST", "/v2/models/auto/infer", body=data, headers=headers)
            r = conn.getresponse()
            out = r.status, json.loads(r.read())
            conn.close()
            return out

        status, answer = send(big)
        assert status == 413 and f"limit of {limit} bytes (max_request_bytes)" in answer["error"]
        status, answer = send(big, chunked=True)  # no Content-Length: counted while it arrives
        assert status == 413 and "max_request_bytes" in answer["error"]
        huge = json.dumps({**body, "id": "h" * (20 * limit)}).encode()  # over 16x the limit: not even read
        status, answer = send(huge)
        assert status == 413 and "max_request_bytes" in answer["error"]
        assert send(small)[0] == 200
        assert send(small, chunked=True)[0] == 200
    finally:
        stop_server(srv)


# ---- fallback to MLServer's path (issue 12 item 5) ----------------------------------------------
# Faults are injected into a real server process through a sitecustomize module on its PYTHONPATH
# (run by Python at start-up, before MLServer imports anything of the runtime).

INJECTED = {
    # a newer MLServer: the request path is written for the pinned one
    "mlserver-version": "import mlserver\nmlserver.__version__ = '1.8.0'\n",
    # MLServer's gRPC ModelInfer no longer the handle_mlserver_error wrapper whose closure the path re-points
    "grpc-wrapper-shape": (
        "from mlserver.grpc.servicers import InferenceServicer\n"
        "_original = InferenceServicer.ModelInfer\n"
        "async def ModelInfer(self, request, context):\n"
        "    return await _original(self, request, context)\n"
        "InferenceServicer.ModelInfer = ModelInfer\n"),
    # a private name the path reads, gone (an attribute DataPlane.__init__ no longer sets)
    "private-name-removed": (
        "from mlserver.handlers import dataplane\n"
        "_init = dataplane.DataPlane.__init__\n"
        "def __init__(self, *args, **kwargs):\n"
        "    _init(self, *args, **kwargs)\n"
        "    self._cache_of_responses = self.__dict__.pop('_response_cache')\n"
        "dataplane.DataPlane.__init__ = __init__\n"
        "_infer = dataplane.DataPlane.infer\n"
        "async def infer(self, *args, **kwargs):\n"
        "    self._response_cache = self._cache_of_responses\n"
        "    try:\n"
        "        return await _infer(self, *args, **kwargs)\n"
        "    finally:\n"
        "        del self._response_cache\n"
        "dataplane.DataPlane.infer = infer\n"),
}


def _metric(srv, name: str, model: str | None = None) -> float:
    total = 0.0
    for line in Http(srv.metrics_port).get("/metrics").body.decode().splitlines():
        if (line.startswith(name + " ") or line.startswith(name + "{")) and (model is None or f'model_name="{model}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _server_with(tmp_path, code: str):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(code)
    import os

    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return start_server(copy_repository(tmp_path / "repo", ["auto"]), tmp_path, ["/v2/models/auto/ready"],
                        env={"PYTHONPATH": pythonpath})


def _serves_both_protocols(srv, pair) -> None:
    body = request_json("auto")
    r = Http(srv.http_port).post("/v2/models/auto/infer", body)
    reference = pair.http["plain"].post("/v2/models/auto/infer", body)
    assert r.status == 200 and r.body == reference.body
    with grpc.insecure_channel(srv.grpc) as channel:
        response = _stub(channel).ModelInfer(grpc_request("auto", True), timeout=30)
    expected = _stub(pair.channel["plain"]).ModelInfer(grpc_request("auto", True), timeout=30)
    assert response.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("fault", sorted(INJECTED))
def test_a_mismatching_mlserver_turns_the_request_path_off_with_one_warning(pair, tmp_path, fault):
    if fault == "private-name-removed":  # the injection must be one the check sees
        assert ("mlserver.handlers.dataplane", "DataPlane", "_response_cache", "__init__") in _private_names()
    srv = _server_with(tmp_path, INJECTED[fault])
    try:
        _serves_both_protocols(srv, pair)
        assert _metric(srv, "ml_fast_path_enabled") == 0
        assert _metric(srv, "ml_fast_path_requests_total", "auto") == 0  # everything took MLServer's path
        warnings = [line for line in srv.log_text().splitlines() if "request path is OFF" in line]
        assert len(warnings) == 1, warnings
    finally:
        stop_server(srv)


def _private_names():
    """runtime.fastpath.PRIVATE_NAMES, read in a child interpreter (MLServer's protos and tritonclient's
    cannot share this one)."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import runtime.fastpath as f; print(repr(f.PRIVATE_NAMES))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return ast.literal_eval(out.stdout.strip())


def test_an_unexpected_error_in_the_request_path_falls_back_to_mlservers_per_request(pair, tmp_path):
    srv = _server_with(tmp_path, "import runtime.fastpath as f\n"
                                 "def broken(*args, **kwargs):\n"
                                 "    raise RuntimeError('injected fault')\n"
                                 "f.from_json = f.from_proto = broken\n")
    try:
        for _ in range(3):
            _serves_both_protocols(srv, pair)
        assert _metric(srv, "ml_fast_path_enabled") == 1
        assert _metric(srv, "ml_fast_path_fallbacks_total", "auto") == 6  # 3 REST + 3 gRPC
        logged = [line for line in srv.log_text().splitlines() if "request path failed (RuntimeError)" in line]
        assert len(logged) == 1, logged  # once per error type, not per request
    finally:
        stop_server(srv)


# ---- in front of MLServer's middleware (runtime/fastpath.py Front) -----------------------------

def test_with_cors_configured_the_answers_keep_mlservers_cors_headers(tmp_path):
    """The runtime's path answers in front of MLServer's middleware only when that middleware is the
    known stack; with CORS configured it answers inside it, so the CORS headers stay."""
    origin = "https://quotes.example"
    settings = {"cors_settings": {"allow_origins": [origin]}}
    expect = ["/v2/models/auto/ready"]
    fast = start_server(copy_repository(tmp_path / "fast", ["auto"]), tmp_path, expect, extra_settings=settings)
    try:
        plain = start_server(copy_repository(tmp_path / "plain", ["auto"]), tmp_path, expect, extra_settings=settings,
                             env={"INSURANCE_FAST_PATH": "false"})
        try:
            p = Pair(fast, plain)
            before = fast_path_count(fast, "auto")
            answers = [post(p, side, "/v2/models/auto/infer", request_json("auto"), {"Origin": origin})
                       for side in ("fast", "plain")]
            assert [a[0] for a in answers] == [200, 200]
            assert [a[2].get("access-control-allow-origin") for a in answers] == [origin, origin]
            assert answers[0][1] == answers[1][1]
            assert fast_path_count(fast, "auto") == before + 1  # still the runtime's path, inside the middleware
        finally:
            stop_server(plain)
    finally:
        stop_server(fast)


def test_gzip_level_0_compresses_as_mlservers_middleware(tmp_path):
    """gzip_level 0 leaves compression to MLServer's GZip middleware (level 9); answered in front
    of it, the runtime's path does what the middleware would."""
    body = _rows(request_json("auto"), 200)
    env = {"INSURANCE_GZIP_LEVEL": "0"}
    fast = start_server(copy_repository(tmp_path / "fast", ["auto"]), tmp_path, ["/v2/models/auto/ready"], env=env)
    try:
        plain = start_server(copy_repository(tmp_path / "plain", ["auto"]), tmp_path, ["/v2/models/auto/ready"],
                             env={**env, "INSURANCE_FAST_PATH": "false"})
        try:
            p = Pair(fast, plain)
            (fs, fb, fh), (ps, pb_, ph) = [post(p, side, "/v2/models/auto/infer", body, {"Accept-Encoding": "gzip"})
                                           for side in ("fast", "plain")]
            assert fs == ps == 200
            assert fh["content-encoding"] == ph["content-encoding"] == "gzip" and fh["vary"] == ph["vary"]
            assert gzip.decompress(fb) == gzip.decompress(pb_) and fb[8] == pb_[8] == 2  # XFL 2: level 9
        finally:
            stop_server(plain)
    finally:
        stop_server(fast)
