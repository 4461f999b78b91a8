"""insurance_client against the real MLServer (session server of tests/conftest.py), over HTTP and
gRPC, sync and asyncio; retries and timeouts against a loopback stub that answers 503 or stalls."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from insurance_client import (AsyncInsuranceClient, ClaimTriage, InsuranceClient, InvalidRequest, LeadScore,
                              ModelNotFound, Retry, Timeout, Unavailable)

from predictors import examples

from ..conftest import free_port

QUOTE_TIME = "2026-11-23T10:00:00Z"
pytestmark = pytest.mark.slow


def rows(vertical: str) -> list[dict]:
    return examples.load(vertical)["rows"]


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    url = server.http if request.param == "http" else server.grpc
    with InsuranceClient(url, protocol=request.param, timeout=10) as c:
        yield c


@pytest.mark.parametrize("vertical", ["auto", "home", "health", "life"])
def test_score_one_and_many(client, vertical):
    leads = rows(vertical)
    many = client.score_many(vertical, leads, quote_time=QUOTE_TIME)
    assert len(many) == len(leads) and all(isinstance(s, LeadScore) for s in many)
    for s in many:
        assert 0 <= s.score <= 1 and 0 <= s.confidence <= 1 and s.price > 0 and s.decision in ("accept", "reject")
        assert set(s.market_factors) == {"peak_hours", "low_intent_discount"} and s.model_version
    one = client.score(vertical, leads[0], quote_time=QUOTE_TIME)
    assert one.score == pytest.approx(many[0].score, abs=1e-12) and one.price == many[0].price


def test_http_and_grpc_give_the_same_answers_with_missing_values(server):
    leads = rows("health")  # holds rows missing different numeric fields: gRPC sends those apart
    with InsuranceClient(server.http) as h, InsuranceClient(server.grpc, protocol="grpc") as g:
        a = h.score_many("health", leads, quote_time=QUOTE_TIME)
        b = g.score_many("health", leads, quote_time=QUOTE_TIME)
        assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-12)
        assert [x.decision for x in a] == [x.decision for x in b] and [x.price for x in a] == [x.price for x in b]
        ta, tb = h.triage_many(rows("claims")), g.triage_many(rows("claims"))
        assert [t.decision for t in ta] == [t.decision for t in tb]


def test_triage(client):
    claims = rows("claims")
    result = client.triage(claims[0])
    assert isinstance(result, ClaimTriage) and result.decision in ("ML_APPROVED", "ML_REJECTED", "ML_REVIEW")
    assert 0 <= result.anomaly_score <= 1 and result.settlement_estimate >= 0
    assert len(client.triage_many(claims)) == len(claims)


def test_the_old_score_request_shape(server):
    with InsuranceClient(server.http) as c:
        body = {"vertical": "auto", "lead_data": {"age": 34, "vehicle_make": "toyota", "usage_type": "commute"}}
        old = c.score_request(body, quote_time=QUOTE_TIME)
        new = c.score("auto", body["lead_data"], quote_time=QUOTE_TIME)
        assert (old.score, old.price, old.decision) == (new.score, new.price, new.decision)
        assert isinstance(c.score_request({"vertical": "claims", "lead_data": {"claim_amount": 900.0}}), ClaimTriage)
        with pytest.raises(InvalidRequest, match='"vertical" is missing'):
            c.score_request({"lead_data": {}})


def test_versions_and_batches(server):
    leads = rows("auto") * 5
    with InsuranceClient(server.http, batch_size=7) as c:
        pinned = c.score_many("auto", leads, version="1.0.0", quote_time=QUOTE_TIME)
        assert {s.model_version for s in pinned} == {"1.0.0"}
        assert len({s.request_id for s in pinned}) == -(-len(leads) // 7)  # one request per batch of 7
        newest = c.score("auto", leads[0], quote_time=QUOTE_TIME)
        assert newest.model_version == "1.1.0"  # the unversioned path: newest loaded version


def test_errors_name_the_problem(client):
    with pytest.raises(InvalidRequest) as e:
        client.score("auto", {"age": 5})
    assert e.value.input == "age" and "outside the allowed range [16, 110]" in str(e.value)
    with pytest.raises(InvalidRequest) as e:
        client.score("auto", {"colour": "red"})
    assert e.value.input == "colour" and "unknown input" in str(e.value)
    with pytest.raises(InvalidRequest, match="claim_amount': is required"):
        client.triage({"claim_type": "theft"})
    with pytest.raises(InvalidRequest, match="mixes numbers and strings"):
        client.score_many("auto", [{"age": 30}, {"age": "thirty"}])
    with pytest.raises(ModelNotFound):
        client.score("auto", {"age": 30}, version="9.9.9")
    with pytest.raises(ValueError, match="claims is a claims-triage model: claims are triaged, not scored"):
        client.score("claims", {"claim_amount": 1.0})
    with pytest.raises(ValueError, match="auto is a lead-scoring model"):
        client.triage({"age": 30}, model="auto")


def test_asyncio_client(server):
    async def run():
        async with AsyncInsuranceClient(server.http, batch_size=4, concurrency=3) as h, \
                AsyncInsuranceClient(server.grpc, protocol="grpc") as g:
            leads = rows("life")
            a, b = await asyncio.gather(h.score_many("life", leads, quote_time=QUOTE_TIME),
                                        g.score_many("life", leads, quote_time=QUOTE_TIME))
            t = await h.triage(rows("claims")[1])
            legacy = await g.score_request({"vertical": "home", "lead_data": {"property_age": 12}})
            with pytest.raises(InvalidRequest):
                await h.score("life", {"age": 200})
            return a, b, t, legacy
    a, b, t, legacy = asyncio.run(run())
    assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-12)
    assert isinstance(t, ClaimTriage) and legacy.vertical == "home"


def test_connection_errors_are_retried_then_reported():
    port = free_port()  # nothing listens there
    with InsuranceClient(f"http://127.0.0.1:{port}", retry=Retry(attempts=2, backoff=0.01)) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="cannot reach the server"):
            c.score("auto", {"age": 30})
        assert c.retries_made == 2 and time.monotonic() - start < 5
    with InsuranceClient(f"127.0.0.1:{port}", protocol="grpc", timeout=2,
                         retry=Retry(attempts=1, backoff=0.01)) as g:
        with pytest.raises(Unavailable):
            g.score("auto", {"age": 30})
        assert g.retries_made == 1


class _Stub(BaseHTTPRequestHandler):
    """503 (with Retry-After) for the first `fail` calls, then a canned V2 answer; or a stall."""

    plan: dict = {}

    def do_GET(self):  # noqa: N802 - the model's metadata, which the client reads once per model
        body = json.dumps({"name": "auto", "outputs": [{"name": n, "datatype": "FP64", "shape": [-1]} for n in (
            "score", "confidence", "price", "market_factors", "decision")]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        p = self.plan
        p["calls"] += 1
        if p.get("stall"):
            time.sleep(p["stall"])
        if p["calls"] <= p["fail"]:
            body, status = b'{"error": "overloaded"}', 503
        else:
            body, status = json.dumps({"model_name": "auto", "model_version": "1.0.0", "id": "x", "outputs": [
                {"name": "score", "datatype": "FP64", "shape": [1], "data": [0.7]},
                {"name": "confidence", "datatype": "FP64", "shape": [1], "data": [0.1]},
                {"name": "price", "datatype": "FP64", "shape": [1], "data": [1200.0]},
                {"name": "market_factors", "datatype": "BYTES", "shape": [1], "data": ['{"peak_hours": 1.0}']},
                {"name": "decision", "datatype": "BYTES", "shape": [1], "data": ["accept"]}]}).encode(), 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if status == 503:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, _Stub.plan
    httpd.shutdown()
    httpd.server_close()


def test_503_is_retried_with_backoff(stub):
    httpd, plan = stub
    plan.update(calls=0, fail=2, stall=0)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    with InsuranceClient(url, retry=Retry(attempts=3, backoff=0.01)) as c:
        assert c.score("auto", {"age": 30}).decision == "accept"
        assert plan["calls"] == 3 and c.retries_made == 2
    plan.update(calls=0, fail=10)
    with InsuranceClient(url, retry=Retry(attempts=1, backoff=0.01)) as c:
        with pytest.raises(Unavailable, match="503.*overloaded"):
            c.score("auto", {"age": 30})
        assert plan["calls"] == 2


def test_timeout(stub):
    httpd, plan = stub
    plan.update(calls=0, fail=0, stall=1.0)
    with InsuranceClient(f"http://127.0.0.1:{httpd.server_address[1]}", timeout=0.2) as c:
        with pytest.raises(Timeout, match="no answer within 0.2 s"):
            c.score("auto", {"age": 30})
        assert c.retries_made == 0  # a timed-out request is not sent again
