"""A real MLServer process with the runtime, called by V2 clients this project did not write:
tritonclient (HTTP and gRPC) and the kserve SDK's REST client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from predictors import OUTPUTS, load_predictor
from predictors.spec import NUMERIC

from .conftest import SECOND_AUTO_VERSION, request_json, shipped_bundle

pytestmark = pytest.mark.slow

NP_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BYTES": np.object_}


def triton_inputs(module, request: dict):
    inputs = []
    for spec in request["inputs"]:
        inp = module.InferInput(spec["name"], spec["shape"], spec["datatype"])
        data = np.array(spec["data"], dtype=NP_TYPES[spec["datatype"]])
        if module is httpclient:
            inp.set_data_from_numpy(data, binary_data=False)  # MLServer has no binary-tensor extension
        else:
            inp.set_data_from_numpy(data)
        inputs.append(inp)
    return inputs


def local_outputs(name: str, request: dict, version_dir=None) -> dict:
    """What the predictors/ code gives in-process for the same rows (the server must agree)."""
    predictor = load_predictor(version_dir or shipped_bundle(name))
    raw = {i["name"]: i["data"] for i in request["inputs"]}
    from datetime import datetime

    return predictor.predict(raw, now=datetime.fromisoformat(request["parameters"]["quote_time"])).outputs


def check_outputs(name: str, request: dict, got: dict, bundle=None) -> None:
    task = "claims_triage" if name == "claims" else "lead_scoring"
    assert set(got) == set(OUTPUTS[task])
    expected = local_outputs(name, request, bundle)
    n = request["inputs"][0]["shape"][0]
    for out, dtype in OUTPUTS[task].items():
        assert len(got[out]) == n
        if dtype == "FP64":
            np.testing.assert_allclose(np.asarray(got[out], dtype=np.float64), expected[out], rtol=1e-12)
        else:
            assert [v.decode() if isinstance(v, bytes) else v for v in got[out]] == list(expected[out])


@pytest.mark.parametrize("name", ["auto", "home", "health", "life", "claims"])
def test_tritonclient_http_every_vertical(server, name):
    client = httpclient.InferenceServerClient(url=server.http.removeprefix("http://"))
    request = request_json(name)
    result = client.infer(name, triton_inputs(httpclient, request), parameters=request["parameters"])
    response = result.get_response()
    newest = SECOND_AUTO_VERSION if name == "auto" else shipped_bundle(name).name
    assert response["model_name"] == name
    assert response["model_version"] == newest
    check_outputs(name, request, {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]},
                  bundle=server.repository / name / newest)


@pytest.mark.parametrize("name", ["auto", "home", "health", "life", "claims"])
def test_tritonclient_grpc_every_vertical_versioned(server, name):
    client = grpcclient.InferenceServerClient(url=server.grpc)
    request = request_json(name)
    version = shipped_bundle(name).name
    result = client.infer(name, triton_inputs(grpcclient, request), model_version=version,
                          parameters=request["parameters"])
    response = result.get_response(as_json=True)
    assert response["model_version"] == version
    check_outputs(name, request, {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]})


def test_kserve_sdk_rest_client(server, tmp_path):
    script = Path(__file__).with_name("kserve_client.py")
    body = tmp_path / "claims.json"
    body.write_text(json.dumps(request_json("claims")))
    done = subprocess.run([sys.executable, str(script), server.http, "claims", str(body)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["ready"] is True
    assert response["model_name"] == "claims"  # (kserve 0.16 InferResponse does not keep model_version)
    check_outputs("claims", request_json("claims"), response["outputs"])


def test_unversioned_path_serves_newest_version(server):
    request = request_json("auto")
    body = requests.post(f"{server.http}/v2/models/auto/infer", json=request, timeout=10).json()
    assert body["model_version"] == SECOND_AUTO_VERSION
    old = requests.post(f"{server.http}/v2/models/auto/versions/1.0.0/infer", json=request, timeout=10).json()
    assert old["model_version"] == "1.0.0"
    new_scores = [o for o in body["outputs"] if o["name"] == "score"][0]["data"]
    old_scores = [o for o in old["outputs"] if o["name"] == "score"][0]["data"]
    assert new_scores != old_scores  # two different models really answered


def test_batch_equals_rows_one_by_one(server):
    request = request_json("home")
    batch = requests.post(f"{server.http}/v2/models/home/infer", json=request, timeout=10).json()
    n = request["inputs"][0]["shape"][0]
    for i in range(n):
        single = {**request, "inputs": [{**inp, "shape": [1], "data": [inp["data"][i]]} for inp in request["inputs"]]}
        one = requests.post(f"{server.http}/v2/models/home/infer", json=single, timeout=10).json()
        for out_b, out_1 in zip(batch["outputs"], one["outputs"]):
            assert out_b["name"] == out_1["name"]
            if out_b["datatype"] == "FP64":
                assert out_1["data"][0] == pytest.approx(out_b["data"][i], rel=1e-12)
            elif out_b["name"] != "confidence":
                assert out_1["data"][0] == out_b["data"][i]


def test_shape_n_by_1_and_requested_outputs(server):
    request = request_json("life")
    request["inputs"] = [{**i, "shape": [i["shape"][0], 1], "data": [[v] for v in i["data"]]}
                         for i in request["inputs"]]
    request["outputs"] = [{"name": "price"}, {"name": "decision"}]
    body = requests.post(f"{server.http}/v2/models/life/infer", json=request, timeout=10).json()
    assert [o["name"] for o in body["outputs"]] == ["price", "decision"]
    assert body["outputs"][0]["shape"] == [3]


def test_peak_hours_raise_the_quoted_price(server):
    request = request_json("auto")
    off = requests.post(f"{server.http}/v2/models/auto/versions/1.0.0/infer", json=request, timeout=10).json()
    request["parameters"] = {"quote_time": "2026-11-23T18:00:00+00:00"}
    peak = requests.post(f"{server.http}/v2/models/auto/versions/1.0.0/infer", json=request, timeout=10).json()
    by = lambda body, name: [o for o in body["outputs"] if o["name"] == name][0]["data"]  # noqa: E731
    assert by(peak, "price") == pytest.approx([p * 1.2 for p in by(off, "price")], abs=0.011)
    assert all(json.loads(m)["peak_hours"] == 1.2 for m in by(peak, "market_factors"))
    assert all(json.loads(m)["peak_hours"] == 1.0 for m in by(off, "market_factors"))


def test_metadata_lists_the_contract(server, config):
    body = requests.get(f"{server.http}/v2/models/health/versions/1.0.0", timeout=10).json()
    vertical = config.vertical("health")
    assert [i["name"] for i in body["inputs"]] == list(vertical.feature_names)
    assert [i["datatype"] for i in body["inputs"]] == ["FP64" if f.kind == NUMERIC else "BYTES"
                                                      for f in vertical.features]
    # the task's outputs, then the optional `reasons` (answered only when asked: predictors/reasons.py)
    assert [o["name"] for o in body["outputs"]] == [*OUTPUTS["lead_scoring"], "reasons"]


def test_repository_unload_and_load_without_restart(server):
    index = requests.post(f"{server.http}/v2/repository/index", json={}, timeout=10).json()
    assert {m["name"] for m in index} >= {"auto", "home", "health", "life", "claims"}
    assert requests.post(f"{server.http}/v2/repository/models/life/unload", timeout=30).status_code == 200
    gone = requests.post(f"{server.http}/v2/models/life/infer", json=request_json("life"), timeout=10)
    assert gone.status_code == 404
    assert server.ready("/v2/models/home/ready")  # other models unaffected
    assert requests.post(f"{server.http}/v2/repository/models/life/load", timeout=60).status_code == 200
    back = requests.post(f"{server.http}/v2/models/life/infer", json=request_json("life"), timeout=10)
    assert back.status_code == 200
    assert server.process.poll() is None


def _mutate(name: str, target: str, **changes) -> dict:
    request = request_json(name)
    for inp in request["inputs"]:
        if inp["name"] == target:
            inp.update(changes)
    return request


BAD_REQUESTS = {
    "unknown input": ("auto", lambda: {**request_json("auto"), "inputs": request_json("auto")["inputs"]
                                       + [{"name": "favourite_colour", "shape": [3], "datatype": "BYTES",
                                           "data": ["red", "blue", "green"]}]}, "favourite_colour"),
    "wrong datatype": ("home", lambda: _mutate("home", "square_footage", datatype="BYTES",
                                               data=["big", "small", "huge"]), "square_footage"),
    "shape mismatch": ("health", lambda: _mutate("health", "bmi", shape=[4]), "bmi"),
    "rows differ between inputs": ("life", lambda: _mutate("life", "hobbies", shape=[2], data=["golf", "chess"]),
                                   "hobbies"),
    "non-finite number": ("claims", lambda: _mutate("claims", "claim_amount", data=[1.0, float("inf"), 2.0]),
                          "claim_amount"),
    "empty batch": ("auto", lambda: {"inputs": [{"name": "age", "shape": [0], "datatype": "INT64", "data": []}]},
                    "age"),
    "out of range": ("auto", lambda: _mutate("auto", "age", data=[30, -4, 40]), "age"),
    "huge declared shape": ("auto", lambda: _mutate("auto", "age", shape=[2147483648]), "age"),
    "bad shape rank": ("auto", lambda: _mutate("auto", "age", shape=[3, 2]), "age"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_400_naming_the_input_over_http(server, case):
    name, make, offending = BAD_REQUESTS[case]
    body = json.dumps(make(), allow_nan=True)
    r = requests.post(f"{server.http}/v2/models/{name}/infer", data=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    if case == "non-finite number":
        # Infinity/NaN are not JSON: MLServer's parser refuses the body (400 {"error": "...invalid JSON..."})
        # before the runtime sees it. Over gRPC the runtime names the input (see the gRPC test).
        assert r.status_code == 400 and "JSON" in r.json()["error"]
    else:
        assert r.status_code == 400, r.text
        assert f"'{offending}'" in r.json()["error"]
    assert server.ready(f"/v2/models/{name}/ready")


@pytest.mark.parametrize("case", ["wrong datatype", "rows differ between inputs", "non-finite number",
                                  "unknown input", "out of range"])
def test_bad_input_is_invalid_argument_over_grpc(server, case):
    name, make, offending = BAD_REQUESTS[case]
    client = grpcclient.InferenceServerClient(url=server.grpc)
    request = make()
    with pytest.raises(InferenceServerException) as err:
        client.infer(name, triton_inputs(grpcclient, request))
    assert "INVALID_ARGUMENT" in str(err.value.status())
    assert offending in err.value.message()
    assert client.is_model_ready(name)


def test_invalid_utf8_in_bytes_is_400_over_grpc(server):
    client = grpcclient.InferenceServerClient(url=server.grpc)
    inp = grpcclient.InferInput("occupation", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"\xff\xfe teacher"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        client.infer("auto", [inp])
    assert "occupation" in err.value.message() and "UTF-8" in err.value.message()


def test_missing_optional_features_are_scored(server):
    body = {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [40]}]}
    r = requests.post(f"{server.http}/v2/models/auto/infer", json=body, timeout=10)
    assert r.status_code == 200
    conf = [o for o in r.json()["outputs"] if o["name"] == "confidence"][0]["data"][0]
    assert 0.0 <= conf <= 1.0 / 9 + 1e-12  # one feature of nine: completeness caps confidence


def test_health_endpoints(server):
    assert server.ready("/v2/health/live")
    assert server.ready("/v2/health/ready")
