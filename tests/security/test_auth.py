"""Authentication: API keys (rotation without restart, digests only, constant-time compare)
and JWT bearer tokens (JWKS, issuer, audience, asymmetric algorithms only); 401 over REST and
UNAUTHENTICATED over gRPC with no model output, a counter, and no credential in any answer,
log line or metric. Health, readiness, metadata and metrics stay open.

Roles and the edge (issue 12): the repository API needs `admin` (REST and gRPC), outcomes need
`outcomes` and match only the caller's (tenant's) predictions, a credential header sent twice is
refused, API docs are off, per-credential rate limits answer 429 / RESOURCE_EXHAUSTED, the
unversioned route goes to the semver-newest version, and the CLI's admin commands carry an
admin credential. With authentication off none of this changes anything."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import subprocess
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from runtime.serve import MLSERVER

from ..conftest import copy_repository, request_json, start_server, stop_server
from .conftest import Http

INFER = "/v2/models/auto/infer"

# Keys with roles, tenants and rates, added to the session's keys file (tests/security/conftest.py)
ADMIN_KEY = "sk-live-SENTINEL-admin-00000000001"
FEED_KEY = "sk-live-SENTINEL-feed-000000000001"  # outcomes only, tenant acme
APP_KEY = "sk-live-SENTINEL-app-0000000000001"  # inference, tenant acme
LIMITED = ["sk-live-SENTINEL-limited-000000001", "sk-live-SENTINEL-limited-000000002",
           "sk-live-SENTINEL-limited-000000003", "sk-live-SENTINEL-limited-000000004"]
ROLE_LINES = (f"{ADMIN_KEY} admin\n{FEED_KEY} outcomes tenant=acme\n{APP_KEY} inference tenant=acme\n"
              + "".join(f"{k} rate=0.1/2\n" for k in LIMITED))
SEMVERS = ("1.9.0", "1.10.0")  # string order would route to 1.9.0


def _add_version(repo, name: str, version: str) -> None:
    """Another version of a bundle: same files, its own version in the manifest and settings."""
    import shutil

    src = next((repo / name).iterdir())
    dest = repo / name / version
    shutil.copytree(src, dest)
    for f in ("manifest.json", "model-settings.json"):
        doc = json.loads((dest / f).read_text())
        (doc if f == "manifest.json" else doc["parameters"])["version"] = version
        (dest / f).write_text(json.dumps(doc))


# ---- a real server with API keys and JWT ------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory, credentials):
    tmp = tmp_path_factory.mktemp("secured")
    repo = copy_repository(tmp / "repository", ["auto", "claims"])
    for v in SEMVERS:
        _add_version(repo, "auto", v)
    original = credentials.keys_file.read_text()
    credentials.keys_file.write_text(original + ROLE_LINES)
    try:
        srv = start_server(repo, tmp, ["/v2/models/auto/ready", "/v2/models/claims/ready"]
                           + [f"/v2/models/auto/versions/{v}/ready" for v in SEMVERS], env=credentials.env())
        yield srv
        stop_server(srv)
    finally:
        credentials.keys_file.write_text(original)


def _metrics(srv) -> str:
    return Http(srv.metrics_port).get("/metrics").body.decode()


def _failures(srv, model: str, reason: str, family: str = "ml_auth_failures_total") -> float:
    for line in _metrics(srv).splitlines():
        if line.startswith(family + "{") and f'model_name="{model}"' in line and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rest_refuses_without_a_valid_credential(secured, credentials):
    http = Http(secured.http_port)
    body = request_json("auto")
    before = _failures(secured, "auto", "missing")
    for headers, reason in (({}, "no credential"), ({"X-API-Key": "sk-live-guess"}, "invalid API key"),
                            ({"Authorization": "Bearer sk-live-guess"}, "invalid API key"),
                            ({"Authorization": f"Bearer {credentials.token(exp_in=-300)}"}, "expired"),
                            ({"Authorization": f"Bearer {credentials.token(aud='other')}"}, "wrong audience")):
        for path in (INFER, "/v2/models/auto/versions/1.0.0/infer", "/v2/models/auto/infer_stream"):
            a = http.post(path, body, headers)
            assert a.status == 401, (path, headers, a.body)
            assert b"outputs" not in a.body and reason.encode() in a.body
    assert _failures(secured, "auto", "missing") == before + 3


def test_rest_accepts_every_credential_form(secured, credentials):
    http = Http(secured.http_port)
    body = request_json("claims")
    for headers in ({"X-API-Key": credentials.keys[0]}, {"Authorization": f"Bearer {credentials.keys[1]}"},
                    {"Authorization": f"Bearer {credentials.token()}"}):
        a = http.post("/v2/models/claims/infer", body, headers)
        assert a.status == 200, a.body
        assert {o["name"] for o in a.json()["outputs"]} >= {"score", "decision"}
    # a real client, with its own header handling
    client = httpclient.InferenceServerClient(f"127.0.0.1:{secured.http_port}")
    inp = httpclient.InferInput("age", [1], "INT64")
    inp.set_data_from_numpy(np.array([40], dtype=np.int64), binary_data=False)
    assert client.infer("auto", [inp], headers={"X-API-Key": credentials.keys[0]}).as_numpy("score").shape == (1,)
    with pytest.raises(InferenceServerException, match="unauthenticated"):
        client.infer("auto", [inp])


def test_grpc_unauthenticated_status(secured, credentials):
    client = grpcclient.InferenceServerClient(secured.grpc)
    inp = grpcclient.InferInput("claim_amount", [1], "FP64")
    inp.set_data_from_numpy(np.array([1200.0]))
    for headers, fragment in (({}, "no credential"), ({"x-api-key": "wrong"}, "invalid API key"),
                              ({"authorization": f"Bearer {credentials.token(iss='x')}"}, "wrong issuer")):
        with pytest.raises(InferenceServerException) as e:
            client.infer("claims", [inp], headers=headers)
        assert e.value.status() == "StatusCode.UNAUTHENTICATED", e.value
        assert fragment in e.value.message()
    ok = client.infer("claims", [inp], headers={"authorization": f"Bearer {credentials.token()}"})
    assert ok.as_numpy("decision").shape == (1,)
    assert client.infer("claims", [inp], headers={"x-api-key": credentials.keys[1]}).as_numpy("score").shape == (1,)


def test_health_readiness_metadata_and_metrics_stay_open(secured):
    http = Http(secured.http_port)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/auto/ready", "/v2/models/auto/versions/1.0.0/ready",
                 "/v2/models/auto", "/v2"):
        assert http.get(path).status == 200, path
    assert "ml_auth_failures_total" in _metrics(secured)
    client = grpcclient.InferenceServerClient(secured.grpc)
    assert client.is_server_ready() and client.is_model_ready("claims")


def test_keys_rotate_on_the_running_server(secured, credentials):
    http = Http(secured.http_port)
    body = request_json("auto")
    original = credentials.keys_file.read_text()
    try:
        credentials.keys_file.write_text(original + "sk-live-SENTINEL-rotated-000000\n")
        assert http.post(INFER, body, {"X-API-Key": "sk-live-SENTINEL-rotated-000000"}).status == 200
        credentials.keys_file.write_text("sk-live-SENTINEL-rotated-000000\n")
        assert http.post(INFER, body, {"X-API-Key": credentials.keys[0]}).status == 401
    finally:
        credentials.keys_file.write_text(original)
    assert http.post(INFER, body, {"X-API-Key": credentials.keys[0]}).status == 200


# ---- roles: the repository API needs admin (issue 12, finding 2) --------------------------------

REPOSITORY_CALLS = (("POST", "/v2/repository/index", b"{}"), ("POST", "/v2/repository/models/auto/unload", b""),
                    ("POST", "/v2/repository/models/auto/load", b""))


def test_rest_repository_api_needs_an_admin_credential(secured, credentials):
    http = Http(secured.http_port)
    missing, forbidden = _failures(secured, "_repository", "missing"), _failures(secured, "_repository", "forbidden")
    for method, path, body in REPOSITORY_CALLS:
        a = http.request(method, path, body)
        assert a.status == 401 and "no credential" in a.json()["error"], (path, a.body)
        assert a.headers.get("www-authenticate") == "Bearer"
        for headers in ({"X-API-Key": credentials.keys[0]}, {"Authorization": f"Bearer {credentials.token()}"},
                        {"X-API-Key": FEED_KEY}):
            a = http.request(method, path, body, headers)
            assert a.status == 403 and "'admin' role" in a.json()["error"], (path, headers, a.body)
        assert http.request(method, path, body, {"X-API-Key": "sk-live-guess"}).status == 401
    # the attack: an unload without (or with the wrong) credential leaves the model serving
    assert http.post(INFER, request_json("auto"), {"X-API-Key": credentials.keys[0]}).status == 200
    assert _failures(secured, "_repository", "missing") == missing + 3
    assert _failures(secured, "_repository", "forbidden") == forbidden + 9
    index = http.post("/v2/repository/index", {}, {"X-API-Key": ADMIN_KEY})
    assert index.status == 200 and {m["name"] for m in index.json()} == {"auto", "claims"}
    token = credentials.token(roles=["admin"])
    assert http.post("/v2/repository/index", {}, {"Authorization": f"Bearer {token}"}).status == 200


def test_an_admin_unloads_and_loads_again(secured, credentials):
    http = Http(secured.http_port)
    admin = {"X-API-Key": ADMIN_KEY}
    assert http.post("/v2/repository/models/claims/unload", b"", admin).status == 200
    assert http.post("/v2/models/claims/infer", request_json("claims"), {"X-API-Key": credentials.keys[0]}).status == 404
    assert http.post("/v2/repository/models/claims/load", b"", admin).status == 200
    assert http.post("/v2/models/claims/infer", request_json("claims"), {"X-API-Key": credentials.keys[0]}).status == 200


def test_grpc_repository_api_needs_an_admin_credential(secured, credentials):
    client = grpcclient.InferenceServerClient(secured.grpc)
    calls = (client.get_model_repository_index, lambda headers: client.unload_model("auto", headers=headers),
             lambda headers: client.load_model("auto", headers=headers))
    for call in calls:
        for headers, status in (({}, "UNAUTHENTICATED"), ({"x-api-key": "wrong"}, "UNAUTHENTICATED"),
                                ({"x-api-key": credentials.keys[0]}, "PERMISSION_DENIED"),
                                ({"authorization": f"Bearer {credentials.token()}"}, "PERMISSION_DENIED")):
            with pytest.raises(InferenceServerException) as e:
                call(headers=headers)
            assert e.value.status() == f"StatusCode.{status}", (headers, e.value)
    assert client.is_model_ready("auto"), "nothing was unloaded"
    index = client.get_model_repository_index(headers={"x-api-key": ADMIN_KEY})
    assert {m.name for m in index.models} == {"auto", "claims"}
    # MLServer's deprecated inference.model_repository.ModelRepositoryService takes the same guard
    with grpc.insecure_channel(secured.grpc) as channel:
        for method in ("RepositoryIndex", "RepositoryModelUnload", "RepositoryModelLoad"):
            raw = channel.unary_unary(f"/inference.model_repository.ModelRepositoryService/{method}",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
            body = b"" if method == "RepositoryIndex" else b"\x12\x04auto"  # field 2: model_name
            with pytest.raises(grpc.RpcError) as e:
                raw(body, metadata=(("x-api-key", credentials.keys[0]),))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
            with pytest.raises(grpc.RpcError) as e:
                raw(body)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        index = channel.unary_unary("/inference.model_repository.ModelRepositoryService/RepositoryIndex",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert b"claims" in index(b"", metadata=(("x-api-key", ADMIN_KEY),))
    assert client.is_model_ready("auto")


def test_admin_and_outcomes_credentials_are_not_inference_credentials(secured):
    http = Http(secured.http_port)
    before = _failures(secured, "auto", "forbidden")
    for key in (ADMIN_KEY, FEED_KEY):
        a = http.post(INFER, request_json("auto"), {"X-API-Key": key})
        assert a.status == 403 and "'inference' role" in a.json()["error"] and b"outputs" not in a.body
        a = http.post("/v2/models/auto/infer_stream", request_json("auto"), {"X-API-Key": key})  # MLServer's path
        assert a.status == 403, a.body
    client = grpcclient.InferenceServerClient(secured.grpc)
    inp = grpcclient.InferInput("age", [1], "INT64")
    inp.set_data_from_numpy(np.array([30], dtype=np.int64))
    with pytest.raises(InferenceServerException) as e:
        client.infer("auto", [inp], headers={"x-api-key": ADMIN_KEY})
    assert e.value.status() == "StatusCode.PERMISSION_DENIED"
    assert _failures(secured, "auto", "forbidden") == before + 5


# ---- outcomes: their own role, matched per owner (finding 9) -------------------------------------

def _score(http, key: str, rid: str) -> float:
    body = {**request_json("auto"), "id": rid}
    a = http.post(INFER, body, {"X-API-Key": key})
    assert a.status == 200, a.body
    return a.json()["outputs"][0]["data"][0]


def _outcome(http, key: str, rid: str, outcome: int = 1):
    return http.post("/v2/models/auto/outcomes", {"outcomes": [{"id": rid, "row": 0, "outcome": outcome}]},
                     {"X-API-Key": key})


def test_outcomes_need_the_outcomes_role(secured, credentials):
    http = Http(secured.http_port)
    rid = f"own-{uuid.uuid4()}"
    _score(http, credentials.keys[0], rid)
    for key in (credentials.keys[0], ADMIN_KEY):
        a = _outcome(http, key, rid)
        assert a.status == 403 and "'outcomes' role" in a.json()["error"], a.body
    assert _outcome(http, "sk-live-guess", rid).status == 401


def test_outcomes_match_only_the_same_tenants_predictions(secured, credentials):
    http = Http(secured.http_port)
    theirs, ours = f"victim-{uuid.uuid4()}", f"acme-{uuid.uuid4()}"
    _score(http, credentials.keys[0], theirs)  # another client's prediction
    _score(http, APP_KEY, ours)  # tenant acme's
    a = _outcome(http, FEED_KEY, theirs)
    assert a.status == 200 and a.json()["matched"] == 0 and a.json()["unknown"] == [{"id": theirs, "row": 0}]
    a = _outcome(http, FEED_KEY, ours)
    assert a.status == 200 and a.json()["matched"] == 1
    assert list(a.json()["live"]) == ["1.10.0"], "the newest version in semver order"
    # re-scoring the acme id under another credential overwrites nothing of acme's
    _score(http, credentials.keys[1], ours)
    assert _outcome(http, FEED_KEY, ours).json()["matched"] == 1


# ---- a credential header sent twice (finding 10) -------------------------------------------------

def _raw_post(port: int, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for k, v in [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers]:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_credential_header_sent_twice_is_refused(secured, credentials):
    body = json.dumps(request_json("auto")).encode()
    good, other = credentials.keys
    before = _failures(secured, "_edge", "duplicate_credential")
    cases = ([("X-API-Key", good), ("X-API-Key", other)], [("X-API-Key", good), ("x-api-key", "wrong")],
             [("Authorization", f"Bearer {good}"), ("Authorization", "Bearer wrong")])
    paths = (INFER, "/v2/models/auto/versions/1.0.0/infer", "/v2/models/auto/infer_stream",
             "/v2/models/auto/outcomes", "/v2/repository/index")
    for headers in cases:
        for path in paths:
            status, answer = _raw_post(secured.http_port, path, body, headers)
            assert status == 401 and b"more than once" in answer, (path, headers, answer)
    assert _failures(secured, "_edge", "duplicate_credential") == before + len(cases) * len(paths)
    with grpc.insecure_channel(secured.grpc) as channel:
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name="auto")
        t = request.inputs.add(name="age", datatype="INT64", shape=[1])
        t.contents.int64_contents.append(30)
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=service_pb2.ModelInferResponse.FromString)
        assert infer(request, metadata=(("x-api-key", good),)).model_name == "auto"
        with pytest.raises(grpc.RpcError) as e:
            infer(request, metadata=(("x-api-key", good), ("x-api-key", "wrong")))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "more than once" in e.value.details()


# ---- API documentation off; the packaged OIP schema stays (finding 10) ---------------------------

def test_api_docs_are_off_and_nothing_loads_from_a_cdn(secured):
    http = Http(secured.http_port)
    for path in ("/openapi.json", "/docs", "/v2/docs", "/v2/models/auto/docs", "/v2/models/auto/versions/1.0.0/docs"):
        a = http.get(path)
        assert a.status == 404 and "not served" in a.json()["error"], path
    a = http.get("/v2/docs/dataplane.json")
    assert a.status == 200 and "/v2/models/{model_name}/infer" in a.json()["paths"]
    assert b"cdn" not in a.body.lower()


# ---- rate limits (finding 3) --------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after_on_both_rest_paths(secured, credentials):
    http = Http(secured.http_port)
    before = _failures(secured, "auto", "key", "ml_rate_limited_total")
    fast_key, mlserver_key = LIMITED[0], LIMITED[1]
    body = json.dumps(request_json("auto")).encode()
    compressed = gzip.compress(body)  # MLServer's own path answers gzip bodies
    for key, payload, extra in ((fast_key, body, {}), (mlserver_key, compressed, {"Content-Encoding": "gzip"})):
        statuses = [http.post(INFER, payload, {"X-API-Key": key, **extra}) for _ in range(4)]
        assert [a.status for a in statuses[:2]] == [200, 200], "the burst of 2"
        for a in statuses[2:]:
            assert a.status == 429 and "rate limit" in a.json()["error"], a.body
            assert 1 <= int(a.headers["retry-after"]) <= 10
        assert b"outputs" not in statuses[3].body
    assert http.post(INFER, body, {"X-API-Key": credentials.keys[0]}).status == 200, "other credentials unaffected"
    assert _failures(secured, "auto", "key", "ml_rate_limited_total") == before + 4


def test_rate_limit_over_grpc_is_resource_exhausted(secured):
    client = grpcclient.InferenceServerClient(secured.grpc)
    inp = grpcclient.InferInput("age", [1], "INT64")
    inp.set_data_from_numpy(np.array([30], dtype=np.int64))
    headers = {"x-api-key": LIMITED[2]}
    assert client.infer("auto", [inp], headers=headers) and client.infer("auto", [inp], headers=headers)
    with pytest.raises(InferenceServerException) as e:
        client.infer("auto", [inp], headers=headers)
    assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and "retry after" in e.value.message()


# ---- the unversioned route: semver newest (issue 14) ---------------------------------------------

def test_the_unversioned_route_goes_to_the_semver_newest_version(secured, credentials):
    http = Http(secured.http_port)
    key = {"X-API-Key": credentials.keys[0]}
    assert http.post(INFER, request_json("auto"), key).json()["model_version"] == "1.10.0"
    body = gzip.compress(json.dumps(request_json("auto")).encode())  # MLServer's path, its registry
    a = http.post(INFER, body, {**key, "Content-Encoding": "gzip"})
    assert a.json()["model_version"] == "1.10.0"
    client = grpcclient.InferenceServerClient(secured.grpc)
    inp = grpcclient.InferInput("age", [1], "INT64")
    inp.set_data_from_numpy(np.array([30], dtype=np.int64))
    assert client.infer("auto", [inp], headers={"x-api-key": credentials.keys[0]}).get_response().model_version == "1.10.0"


# ---- the CLI's admin commands carry an admin credential -----------------------------------------

def _cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURANCE_ADMIN_")}
    return subprocess.run([str(MLSERVER.with_name("insurance")), "models", *args], capture_output=True, text=True,
                          timeout=120, env={**env, **(env_extra or {})})


def test_cli_load_and_unload_take_an_admin_credential(secured, credentials, tmp_path):
    url = secured.http
    refused = _cli("load", "claims", "--url", url)
    assert refused.returncode == 2 and "401" in refused.stderr, refused.stderr
    key_file = tmp_path / "inference-key"
    key_file.write_text(credentials.keys[0] + "\n")
    refused = _cli("load", "claims", "--url", url, "--api-key-file", str(key_file))
    assert refused.returncode == 2 and "403" in refused.stderr and "admin" in refused.stderr
    admin_file = tmp_path / "admin-key"
    admin_file.write_text(ADMIN_KEY + "\n")
    ok = _cli("load", "claims", "--url", url, "--api-key-file", str(admin_file))
    assert ok.returncode == 0, ok.stderr
    assert _cli("load", "claims", "--url", url, env_extra={"INSURANCE_ADMIN_API_KEY": ADMIN_KEY}).returncode == 0
    token = credentials.token(roles="admin")
    assert _cli("load", "claims", "--url", url, env_extra={"INSURANCE_ADMIN_TOKEN": token}).returncode == 0
    both = _cli("load", "claims", "--url", url, "--api-key-file", str(admin_file), "--header", f"X-API-Key: {ADMIN_KEY}")
    assert both.returncode == 2 and "already given" in both.stderr
    assert ADMIN_KEY not in refused.stderr + ok.stdout + ok.stderr


# ---- parallel workers: roles, rate limits and the guard hold across the worker boundary ----------

@pytest.fixture(scope="module")
def parallel_secured(secured, tmp_path_factory, credentials):
    """`secured` first: the keys file holds the role lines while this server runs."""
    tmp = tmp_path_factory.mktemp("parallel-secured")
    repo = copy_repository(tmp / "repository", ["claims"])
    srv = start_server(repo, tmp, ["/v2/models/claims/ready"], extra_settings={"parallel_workers": 1},
                       env=credentials.env())
    yield srv
    stop_server(srv)


def test_parallel_workers_enforce_roles_rate_limits_and_the_repository_guard(parallel_secured, credentials):
    http = Http(parallel_secured.http_port)
    body = request_json("claims")
    assert http.post("/v2/models/claims/infer", body, {"X-API-Key": credentials.keys[0]}).status == 200
    a = http.post("/v2/models/claims/infer", body, {"X-API-Key": ADMIN_KEY})  # refused in the worker
    assert a.status == 403 and "'inference' role" in a.json()["error"], a.body
    assert http.post("/v2/repository/index", {}).status == 401
    assert http.post("/v2/repository/index", {}, {"X-API-Key": credentials.keys[0]}).status == 403
    assert http.post("/v2/repository/index", {}, {"X-API-Key": ADMIN_KEY}).status == 200
    key = {"X-API-Key": "sk-live-SENTINEL-limited-000000004"}
    statuses = [http.post("/v2/models/claims/infer", body, key) for _ in range(3)]
    assert [a.status for a in statuses] == [200, 200, 429], [a.body for a in statuses]
    assert int(statuses[2].headers["retry-after"]) >= 1 and "rate limit" in statuses[2].json()["error"]
    a = http.post("/v2/models/claims/outcomes", {"outcomes": [{"id": "x", "row": 0, "outcome": 1}]},
                  {"X-API-Key": credentials.keys[0]})
    assert a.status == 403, a.body


# ---- with authentication off nothing changes ----------------------------------------------------

@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("open")
    repo = copy_repository(tmp / "repository", ["claims"])
    assert not [k for k in os.environ if k.startswith(("INSURANCE_API_KEYS", "INSURANCE_JWT_"))]
    srv = start_server(repo, tmp, ["/v2/models/claims/ready"], env={"INSURANCE_OUTCOMES_CAPACITY": "4"})
    yield srv
    stop_server(srv)


def test_with_authentication_off_nothing_changes(open_server):
    http = Http(open_server.http_port)
    assert http.post("/v2/repository/index", {}).status == 200, "no credential configured: the repository API is open"
    body = json.dumps(request_json("claims")).encode()
    status, _ = _raw_post(open_server.http_port, "/v2/models/claims/infer", body,
                          [("X-API-Key", "a"), ("X-API-Key", "b")])
    assert status == 200, "headers are not looked at with authentication off"
    assert "ml_auth_failures_total{" not in _metrics(open_server)


def test_outcome_store_evictions_are_counted(open_server):
    """outcomes_capacity 4 rows per version: of two 3-row requests only the second stays."""
    http = Http(open_server.http_port)

    def evicted() -> float:
        for line in _metrics(open_server).splitlines():
            if line.startswith('ml_outcome_store_evictions_total{') and 'model_name="claims"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = evicted()
    for rid in ("evict-a", "evict-b"):
        assert http.post("/v2/models/claims/infer", {**request_json("claims"), "id": rid}).status == 200
    assert evicted() >= before + 3  # evict-a, and whatever an earlier test scored
    a = http.post("/v2/models/claims/outcomes", {"outcomes": [{"id": "evict-a", "row": 0, "outcome": 1},
                                                             {"id": "evict-b", "row": 2, "outcome": 0}]})
    assert a.json()["matched"] == 1 and a.json()["unknown"] == [{"id": "evict-a", "row": 0}]


# ---- HTTP request smuggling: refused before routing (held up in the review; kept with a test) ------

SMUGGLED = b"POST /v2/repository/models/auto/unload HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Length: 0\r\n\r\n"


def _raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.parametrize("name, head", [
    ("conflicting Content-Length", b"Content-Length: 4\r\nContent-Length: 120\r\n"),
    ("Transfer-Encoding and Content-Length", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"),
    ("obfuscated Transfer-Encoding", b"Transfer-Encoding : chunked\r\n"),
    ("Transfer-Encoding not chunked", b"Transfer-Encoding: xchunked\r\n"),
    ("NUL in a header", b"X-Note: a\x00b\r\nContent-Length: 4\r\n"),
])
def test_http_smuggling_attempts_are_400(secured, name, head):
    smuggled = SMUGGLED % ADMIN_KEY.encode()
    data = (b"POST /v2/models/auto/infer HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n0\r\n\r\n" + smuggled)
    answer = _raw(secured.http_port, data)
    assert answer.startswith(b"HTTP/1.1 400"), (name, answer[:200])
    assert answer.count(b"HTTP/1.1 ") == 1, f"{name}: a second, smuggled request was answered"
    assert Http(secured.http_port).get("/v2/models/auto/ready").status == 200


def test_bare_lf_request_line_is_400(secured):
    answer = _raw(secured.http_port, b"POST /v2/models/auto/infer HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_no_credential_in_logs_metrics_or_answers(secured, credentials):
    """Runs after the tests above: every key and token they sent, right or wrong, is absent."""
    http = Http(secured.http_port)
    token = credentials.token()
    answers = [http.post(INFER, request_json("auto"), {"Authorization": f"Bearer {token}"}),
               http.post(INFER, request_json("auto"), {"X-API-Key": "sk-live-SENTINEL-wrong-key"}),
               http.post("/v2/models/auto/infer_stream", request_json("auto"), {"X-API-Key": credentials.keys[0]})]
    texts = [secured.log_text(), _metrics(secured)] + [a.body.decode() + json.dumps(a.headers) for a in answers]
    for text in texts:
        assert "SENTINEL" not in text
        assert token.split(".")[2] not in text
    assert "sk-live" not in _metrics(secured)
