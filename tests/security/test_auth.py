"""Authentication: API keys (rotation without restart, digests only, constant-time compare)
and JWT bearer tokens (JWKS, issuer, audience, asymmetric algorithms only); 401 over REST and
UNAUTHENTICATED over gRPC with no model output, a counter, and no credential in any answer,
log line or metric. Health, readiness, metadata and metrics stay open."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ..conftest import copy_repository, request_json, start_server, stop_server
from .conftest import Http

INFER = "/v2/models/auto/infer"


# ---- a real server with API keys and JWT ------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory, credentials):
    tmp = tmp_path_factory.mktemp("secured")
    repo = copy_repository(tmp / "repository", ["auto", "claims"])
    srv = start_server(repo, tmp, ["/v2/models/auto/ready", "/v2/models/claims/ready"], env=credentials.env())
    yield srv
    stop_server(srv)


def _metrics(srv) -> str:
    return Http(srv.metrics_port).get("/metrics").body.decode()


def _failures(srv, model: str, reason: str) -> float:
    for line in _metrics(srv).splitlines():
        if line.startswith("ml_auth_failures_total{") and f'model_name="{model}"' in line and f'reason="{reason}"' in line:
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
