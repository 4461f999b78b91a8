"""Hostile input against a real server: hypothesis generates V2 requests (REST JSON, raw
bodies, gRPC protobuf), MLServer's own OpenAPI document (/v2/docs/dataplane.json) supplies
the REST paths, and a fixed list adds the named attacks (10 MB bodies, deep nesting, shape
[2147483648], NaN/Infinity, invalid UTF-8 in BYTES, unknown models and versions, header
injection through the request id).

Every answer must be a success or a 4xx with a message (gRPC: OK or a client-error code),
never a 5xx, a dropped connection, INTERNAL or UNKNOWN; the server stays ready and its
resident memory stays under a bound. The counts are reported at the end of the run.
Longer runs: SECURITY_FUZZ_EXAMPLES=10 (a multiplier) or `make fuzz`.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections import Counter
from urllib.parse import quote

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import copy_repository, request_json, start_server, stop_server
from .conftest import REPORT, Http, fuzz_multiplier, rss_mib

pytestmark = pytest.mark.slow

MODELS = ("auto", "claims")
FEATURES = {
    "auto": ["age", "driving_years", "vehicle_age", "annual_mileage", "vehicle_make", "vehicle_model", "usage_type",
             "occupation", "location"],
    "claims": ["claim_amount", "policy_tenure_months", "days_to_report", "prior_claims_count", "claimant_age",
               "claim_type", "incident_type", "submission_channel", "incident_description"],
}
V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                "FP64", "BYTES"]
#: RSS the server may gain over the whole run (it parses 10 MB bodies; the chart's limit is 1 GiB).
RSS_GROWTH_MIB = 250
CASES: Counter = Counter()
ECHO = [0.0]  # largest answer/request size ratio among answers over 4 KiB
STATUSES: Counter = Counter()


def _examples(n: int) -> int:
    return max(1, int(n * fuzz_multiplier()))


def _fuzz_settings(n: int):
    return settings(max_examples=_examples(n), deadline=None, database=None, derandomize=True, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    repo = copy_repository(tmp / "repository", MODELS)
    srv = start_server(repo, tmp, [f"/v2/models/{m}/ready" for m in MODELS])
    http = Http(srv.http_port, timeout=120)
    for m in MODELS:  # warm up every code path once before the memory baseline
        assert http.post(f"/v2/models/{m}/infer", request_json(m)).status == 200
    channel = grpc.insecure_channel(srv.grpc, options=[("grpc.max_send_message_length", 64 << 20)])
    srv.rss_start = rss_mib(srv.process.pid)
    srv.http_client, srv.channel = http, channel
    yield srv
    channel.close()
    http.close()
    stop_server(srv)


# ---- checking one answer ----------------------------------------------------------------------

def check_http(srv, method: str, path: str, body, kind: str, headers: dict | None = None):
    """Send without retry: a dropped connection is a failure."""
    http = srv.http_client
    if not isinstance(body, (bytes, str, type(None))):
        body = json.dumps(body, allow_nan=True)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if time.monotonic() - getattr(http, "last_used", 0.0) > 2.0:
        http.conn.close()  # uvicorn closes keep-alive connections idle for 5 s: start a fresh one (auto-opened)
    http.last_used = time.monotonic()
    try:
        http.conn.request(method, path, body=body, headers=hdrs)
        r = http.conn.getresponse()
        status, data = r.status, r.read()
    except Exception as e:  # the server closed the connection or died
        http.conn.close()
        pytest.fail(f"{kind}: {method} {path[:80]} ({len(body or b'')} bytes): no answer: {e!r}; "
                    f"server alive: {srv.process.poll() is None}")
    CASES[f"http {kind}"] += 1
    STATUSES[f"HTTP {status}"] += 1
    assert status < 500, f"{kind}: {method} {path[:80]} -> {status} {data[:300]!r} for {(body or b'')[:300]!r}"
    if status >= 400:
        # Open Inference Protocol errors: {"error": "<message>"}, 400 for what FastAPI answered 422 (issue 12)
        assert status in (400, 401, 404, 405, 409, 413, 415), (status, data[:200])
        doc = json.loads(data)
        message = doc.get("error")
        assert message and "detail" not in doc, f"{status} without an OIP error object: {data[:200]!r}"
        # Our errors are short and never echo the input (FastAPI's 422 did): no amplification.
        limit = 64 * 1024
        assert len(data) <= limit, f"{kind}: a {len(data)}-byte {status} answer to a {len(body or b'')}-byte request"
        ECHO[0] = max(ECHO[0], len(data) / max(1, len(body or b"")) if len(data) > 4096 else 0)
    return status, data


OK_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
           grpc.StatusCode.OUT_OF_RANGE}


def check_grpc(srv, request, kind: str):
    try:
        _stub(srv.channel).ModelInfer(request, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    CASES[f"grpc {kind}"] += 1
    STATUSES[f"gRPC {code.name}"] += 1
    assert code in OK_GRPC, f"{kind}: {code.name} {details[:300]!r} for {str(request)[:300]!r}"
    if code != grpc.StatusCode.OK:
        assert details, f"{code.name} without a message"


# ---- REST strategies --------------------------------------------------------------------------

def _openapi_paths(srv) -> list[tuple[str, str]]:
    doc = srv.http_client.get("/v2/docs/dataplane.json").json()
    return [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in ("get", "post")]


model_names = st.one_of(st.sampled_from(MODELS), st.sampled_from(["nope", "AUTO", "auto ", "..", "%2e%2e", "%00", "a" * 300]),
                        st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=12))
versions = st.one_of(st.just("1.0.0"), st.sampled_from(["9.9.9", "0", "1.0.0-rc.1", "-1", "%20"]),
                     st.from_regex(r"\A[0-9a-z.\-]{1,12}\Z"))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
huge_strings = st.integers(min_value=16_000, max_value=400_000).map(lambda n: "é" * (n // 2))
values = st.one_of(json_scalars, st.lists(json_scalars, max_size=4), st.dictionaries(st.text(max_size=4), json_scalars, max_size=3))
shapes = st.one_of(
    st.lists(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1), max_size=4),
    st.lists(st.sampled_from([0, 1, 2, 3, 10_000, 10_001, 2 ** 31, 2 ** 32 + 1, -1]), max_size=3),
    st.just([2 ** 64]), json_scalars)
datatypes = st.one_of(st.sampled_from(V2_DATATYPES), st.sampled_from(["FOO", "", "bytes", "int64"]), st.integers(), st.none())


@st.composite
def tensors(draw, model: str):
    name = draw(st.one_of(st.sampled_from(FEATURES[model]), st.sampled_from(["colour", "", "AGE", "a" * 500, "\u0000"])))
    data = draw(st.one_of(st.lists(values, max_size=12), values, st.lists(huge_strings, min_size=1, max_size=1)))
    tensor = {"name": name, "shape": draw(shapes), "datatype": draw(datatypes), "data": data}
    for key in draw(st.lists(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=1, unique=True)):
        del tensor[key]  # a missing required field
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(st.sampled_from(["content_type", "headers", "x"]), values, max_size=2))
    return tensor


@st.composite
def random_requests(draw):
    model = draw(st.sampled_from(MODELS))
    body = {}
    if draw(st.integers(0, 9)):
        body["inputs"] = draw(st.one_of(st.lists(tensors(model), max_size=5), json_scalars))
    if draw(st.booleans()):
        body["id"] = draw(st.one_of(st.text(max_size=300), st.sampled_from(["a\r\nX-Injected: 1", "中", "\x00"]), json_scalars))
    if draw(st.booleans()):
        body["parameters"] = draw(st.one_of(
            st.fixed_dictionaries({"quote_time": st.one_of(st.text(max_size=40), json_scalars, st.sampled_from(
                ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-02-30T00:00:00", "2026-01-01T25:00"]))}),
            st.dictionaries(st.text(max_size=8), values, max_size=3)))
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(st.lists(st.fixed_dictionaries({"name": st.text(max_size=20)}), max_size=3),
                                         json_scalars))
    return model, body


@st.composite
def mutated_requests(draw):
    """A valid request with one thing broken: reaches the runtime's own checks."""
    model = draw(st.sampled_from(MODELS))
    body = request_json(model)
    inputs = body["inputs"]
    i = draw(st.integers(0, len(inputs) - 1))
    n = inputs[i]["shape"][0]
    how = draw(st.sampled_from(["shape", "datatype", "value", "length", "nested", "nan", "huge", "name", "dup", "bytes"]))
    t = inputs[i]
    if how == "shape":
        t["shape"] = draw(st.one_of(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=3),
                                    st.sampled_from([[2147483648], [n, 2], [n, 1, 1], [0], [-n]])))
    elif how == "datatype":
        t["datatype"] = draw(st.sampled_from(V2_DATATYPES))
    elif how == "value":
        t["data"][draw(st.integers(0, n - 1))] = draw(values)
    elif how == "length":
        t["data"] = t["data"] + draw(st.lists(json_scalars, min_size=1, max_size=3)) if draw(st.booleans()) else t["data"][:-1]
    elif how == "nested":
        t["data"] = [[v] for v in t["data"]] if draw(st.booleans()) else [[[v]] for v in t["data"]]
        if draw(st.booleans()):
            t["shape"] = [n, 1]
    elif how == "nan":
        t["data"][0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))  # json.dumps writes NaN / Infinity
    elif how == "huge":
        t["data"][0] = draw(st.one_of(huge_strings, st.just(10 ** 400), st.just(-(2 ** 64))))
    elif how == "name":
        t["name"] = draw(st.text(max_size=30))
    elif how == "dup":
        inputs.append(dict(t))
    elif how == "bytes":
        t["data"][0] = draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=50))
    return model, body


def _path(method: str, template: str, model: str, version: str) -> str:
    q = lambda part: quote(part, safe="%")  # noqa: E731 - keep the drawn %-escapes, escape the rest
    return template.replace("{model_name}", q(model)).replace("{model_version}", q(version))


def test_openapi_paths_are_the_fuzzed_surface(target):
    paths = _openapi_paths(target)
    posts = sorted(p for m, p in paths if m == "POST")
    assert posts == sorted(["/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer",
                            "/v2/models/{model_name}/infer_stream",
                            "/v2/models/{model_name}/versions/{model_version}/infer_stream",
                            "/v2/models/{model_name}/generate", "/v2/models/{model_name}/versions/{model_version}/generate",
                            "/v2/models/{model_name}/generate_stream",
                            "/v2/models/{model_name}/versions/{model_version}/generate_stream"]), posts
    target.openapi = paths


def test_fuzz_rest_random_requests(target):
    posts = [p for m, p in target.openapi if m == "POST"]

    @_fuzz_settings(500)
    @given(req=random_requests(), template=st.sampled_from(posts), version=versions, other=st.booleans())
    def run(req, template, version, other):
        model, body = req
        check_http(target, "POST", _path("POST", template, model if not other else "nope", version), body, "random")

    run()


def test_fuzz_rest_mutated_valid_requests(target):
    posts = [p for m, p in target.openapi if m == "POST"]

    @_fuzz_settings(600)
    @given(req=mutated_requests(), template=st.sampled_from(posts))
    def run(req, template):
        model, body = req
        check_http(target, "POST", _path("POST", template, model, "1.0.0"), body, "mutated")

    run()


def test_fuzz_rest_raw_bodies_and_paths(target):
    gets = [p for m, p in target.openapi if m == "GET"]
    valid = json.dumps(request_json("auto"))

    @_fuzz_settings(300)
    @given(kind=st.sampled_from(["bytes", "truncated", "token", "nested", "get"]), blob=st.binary(max_size=2000),
           cut=st.integers(0, len(valid)), token=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                                                                   "9" * 400, "\"\\ud800\"", "'x'", "0x10", "nul"]),
           depth=st.integers(1, 200_000), model=model_names, version=versions, template=st.sampled_from(gets))
    def run(kind, blob, cut, token, depth, model, version, template):
        if kind == "bytes":
            check_http(target, "POST", "/v2/models/auto/infer", blob, "raw bytes")
        elif kind == "truncated":
            check_http(target, "POST", "/v2/models/auto/infer", valid[:cut], "truncated JSON")
        elif kind == "token":
            check_http(target, "POST", "/v2/models/auto/infer", re.sub(r"\b20\b", lambda _: token, valid, count=1), "non-JSON token")
        elif kind == "nested":
            body = '{"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": %s}]}' % ("[" * depth + "1" + "]" * depth)
            check_http(target, "POST", "/v2/models/auto/infer", body, "deep nesting")
        else:
            check_http(target, "GET", _path("GET", template, model, version), None, "GET paths")

    run()


# ---- gRPC -------------------------------------------------------------------------------------

def _pb():
    """The V2 gRPC messages (tritonclient's copy of the same `inference` protos as MLServer's)."""
    from tritonclient.grpc import service_pb2

    return service_pb2


def _stub(channel):
    from tritonclient.grpc import service_pb2_grpc

    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@st.composite
def grpc_requests(draw):
    pb = _pb()
    model = draw(st.sampled_from(MODELS))
    tensors_, raws = [], []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(FEATURES[model]), st.text(max_size=10)))
        datatype = draw(st.one_of(st.sampled_from(V2_DATATYPES + ["BF16", "WAT", ""])))
        shape = draw(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1) | st.sampled_from([1, 2, 3, 2 ** 31]), max_size=3))
        t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
        how = draw(st.sampled_from(["int64", "fp64", "fp32", "bytes", "bool", "uint64", "raw", "none"]))
        if how == "int64":
            t.contents.int64_contents.extend(draw(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=5)))
        elif how == "fp64":
            t.contents.fp64_contents.extend(draw(st.lists(st.floats(), max_size=5)))
        elif how == "fp32":
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=5)))
        elif how == "bytes":  # arbitrary bytes: invalid UTF-8 included
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=5)))
        elif how == "bool":
            t.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=5)))
        elif how == "uint64":
            t.contents.uint64_contents.extend(draw(st.lists(st.integers(0, 2 ** 64 - 1), max_size=5)))
        elif how == "raw":
            if draw(st.booleans()):  # length-prefixed BYTES elements, prefixes possibly lying
                elems = draw(st.lists(st.binary(max_size=20), max_size=4))
                raw = b"".join(struct.pack("<I", len(e) + draw(st.sampled_from([0, 0, 0, 1, 2 ** 31]))
                                           % 2 ** 32) + e for e in elems)
            else:
                raw = draw(st.binary(max_size=64))
            raws.append(raw)
        tensors_.append(t)
    req = pb.ModelInferRequest(model_name=draw(st.one_of(st.just(model), model_names)),
                               model_version=draw(st.one_of(st.just(""), versions)), inputs=tensors_)
    if raws and len(raws) == len(tensors_) or draw(st.booleans()) and raws:
        req.raw_input_contents.extend(raws)
    if draw(st.booleans()):
        req.id = draw(st.text(max_size=300))
    if draw(st.booleans()):
        req.parameters["quote_time"].CopyFrom(pb.InferParameter(string_param=draw(st.text(max_size=40))))
    if draw(st.booleans()):
        req.outputs.add(name=draw(st.text(max_size=10)))
    return req


def test_fuzz_grpc_requests(target):
    @_fuzz_settings(500)
    @given(req=grpc_requests())
    def run(req):
        check_grpc(target, req, "random")

    run()


# ---- named attacks ----------------------------------------------------------------------------

def _infer(name, shape, datatype, data, **extra):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


NAMED = {
    "10 MB string": _infer("occupation", [1], "BYTES", ["x" * 10_000_000]),
    "10 MB of numbers": _infer("age", [1], "INT64", [30] * 3_300_000),
    "10 MB of rows": _infer("occupation", [1_100_000], "BYTES", ["abcdefg"] * 1_100_000),
    "10 MB of inputs": {"inputs": [_infer("age", [1], "INT64", [30])["inputs"][0]] * 150_000},
    "10 MB id": {**_infer("age", [1], "INT64", [30]), "id": "i" * 10_000_000},
    "shape [2147483648]": _infer("age", [2147483648], "INT64", [30]),
    "shape [2**63-1]": _infer("age", [2 ** 63 - 1], "INT64", [30]),
    "shape [2**64]": _infer("age", [2 ** 64], "INT64", [30]),
    "shape [-1]": _infer("age", [-1], "INT64", [30]),
    "shape [2147483648, 1]": _infer("age", [2147483648, 1], "INT64", [[30]]),
    "shape [1, 2147483648]": _infer("age", [1, 2147483648], "INT64", [[30]]),
    "shape/data mismatch": _infer("age", [3], "INT64", [30, 31]),
    "long string": _infer("incident_description", [1], "BYTES", ["ö" * 100_000]),
    "id with CRLF": {**_infer("age", [1], "INT64", [30]), "id": "x\r\nSet-Cookie: a=b"},
    "id beyond Latin-1": {**_infer("age", [1], "INT64", [30]), "id": "請求"},
    "invalid datatype with a 64 KiB value (FastAPI's 422 echoed it)": {"inputs": [{"shape": [], "datatype": "FOO", "data": ["é" * 40_000]}] * 4},
    "quote_time overflow": {**_infer("age", [1], "INT64", [30]), "parameters": {"quote_time": "9999-12-31T23:59:59-23:59"}},
}


def test_named_attacks_over_rest(target):
    # a fresh connection: uvicorn closes a keep-alive connection idle for 5 s (the gRPC fuzz before this
    # may take longer on a loaded machine), and check_http does not reconnect
    target.http_client.conn.close()
    for kind, body in NAMED.items():
        text = json.dumps(body)
        status, data = check_http(target, "POST", "/v2/models/auto/infer", text, f"named: {kind}")
        assert 400 <= status < 500, (kind, status, data[:200])
    for kind, text in {"NaN": '{"inputs":[{"name":"age","shape":[1],"datatype":"FP64","data":[NaN]}]}',
                       "Infinity": '{"inputs":[{"name":"age","shape":[1],"datatype":"FP64","data":[-Infinity]}]}',
                       "deep nesting x 100000": '{"inputs":[{"name":"age","shape":[1],"datatype":"INT64","data":%s}]}'
                                                % ("[" * 100_000 + "]" * 100_000),
                       "deep objects": '{"parameters":%s,"inputs":[]}' % ('{"a":' * 5000 + "1" + "}" * 5000)}.items():
        status, _ = check_http(target, "POST", "/v2/models/auto/infer", text, f"named: {kind}")
        assert 400 <= status < 500
    for path in ("/v2/models/nope/infer", "/v2/models/auto/versions/9.9.9/infer", "/v2/models/claims/versions/1.0/infer",
                 "/v2/models/auto/versions/1.0.0/../infer", "/v2/models/%00/infer"):
        status, _ = check_http(target, "POST", path, request_json("auto"), "named: unknown model or version")
        assert status == 404, path


def test_named_attacks_over_grpc(target):
    pb = _pb()
    T = pb.ModelInferRequest.InferInputTensor

    def req(**kw):
        return pb.ModelInferRequest(model_name=kw.pop("model", "auto"), **kw)

    cases = {
        "invalid UTF-8 in BYTES": req(inputs=[T(name="occupation", datatype="BYTES", shape=[2],
                                               contents=pb.InferTensorContents(bytes_contents=[b"ok", b"\xff\xfe\xc3"]))]),
        "invalid UTF-8 in raw BYTES": req(inputs=[T(name="location", datatype="BYTES", shape=[1])],
                                          raw_input_contents=[struct.pack("<I", 3) + b"\xed\xa0\x80"]),
        "raw buffer shorter than the shape": req(inputs=[T(name="age", datatype="INT64", shape=[4])],
                                                 raw_input_contents=[b"\x01" * 9]),
        "raw shape [2147483648]": req(inputs=[T(name="age", datatype="INT64", shape=[2147483648])],
                                      raw_input_contents=[b"\x01" * 8]),
        "BYTES length prefix past the end": req(inputs=[T(name="occupation", datatype="BYTES", shape=[1])],
                                                raw_input_contents=[b"\xff\xff\xff\x7fabc"]),
        "10 MB message": req(inputs=[T(name="occupation", datatype="BYTES", shape=[1],
                                       contents=pb.InferTensorContents(bytes_contents=[b"x" * 10_000_000]))]),
        "NaN": req(inputs=[T(name="age", datatype="FP64", shape=[1], contents=pb.InferTensorContents(fp64_contents=[math.nan]))]),
        "unknown datatype BF16": req(inputs=[T(name="age", datatype="BF16", shape=[1])], raw_input_contents=[b"\x00\x00"]),
        "unknown model": req(model="nope"),
        "unknown version": req(model_version="9.9.9"),
        "id with CRLF": req(id="a\r\nb", inputs=[T(name="age", datatype="INT64", shape=[1],
                                                  contents=pb.InferTensorContents(int64_contents=[30]))]),
    }
    for kind, r in cases.items():
        check_grpc(target, r, f"named: {kind}")
    ok = req(inputs=[T(name="age", datatype="INT64", shape=[1], contents=pb.InferTensorContents(int64_contents=[30]))])
    answer = _stub(target.channel).ModelInfer(ok, timeout=30)  # typed contents answered (not only raw)
    assert {o.name for o in answer.outputs} >= {"score", "decision"}


def test_server_stays_ready_and_memory_is_bounded(target):
    """Last in this module: after everything above."""
    http = target.http_client
    assert target.process.poll() is None
    assert http.get("/v2/health/ready").status == 200
    for m in MODELS:
        assert http.get(f"/v2/models/{m}/ready").status == 200
        assert http.post(f"/v2/models/{m}/infer", request_json(m)).status == 200
    rss = rss_mib(target.process.pid)
    total = sum(CASES.values())
    groups = Counter()
    for k, v in CASES.items():
        groups[k.split(":")[0]] += v
    REPORT["fuzz cases"] = (f"{total} requests ({', '.join(f'{k} {v}' for k, v in sorted(groups.items()))}); "
                            f"answers: {', '.join(f'{k} {v}' for k, v in sorted(STATUSES.items()))}; "
                            f"server RSS {target.rss_start:.0f} -> {rss:.0f} MiB; largest answer/request ratio "
                            f"over 4 KiB answers {ECHO[0]:.2f}")
    assert total >= 30
    assert rss - target.rss_start < RSS_GROWTH_MIB, f"RSS grew {target.rss_start:.0f} -> {rss:.0f} MiB"
