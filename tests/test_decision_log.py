"""The decision record (predictors/decisions.py, runtime/decision_log.py) and its personal-data rules."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import grpc
import pytest
import requests
import yaml

from predictors import load_predictor
from predictors.bundle import MANIFEST, sha256_file
from predictors.decisions import UNSEEN, DecisionLogOptions, Recorder, inputs_digest
from predictors.spec import CONFIG_PATH, ConfigError, parse_config
from runtime import decision_log
from runtime.settings import RuntimeSettings

from .conftest import copy_repository, request_json, shipped_bundle, start_server, stop_server
from .security.test_hostile_input import _pb, _stub


def _columns(name):
    return {t["name"]: t["data"] for t in request_json(name)["inputs"]}


def _recorder(name, config, **options):
    p = load_predictor(shipped_bundle(name), config)
    opts = DecisionLogOptions.parse(p.vertical, {**p.vertical.decision_log, **options})
    return p, Recorder(name, "1.0.0", "ab" * 32, p.features, opts)


def test_a_record_per_row_with_the_decision_and_a_digest_not_the_inputs(config):
    p, rec = _recorder("home", config)
    raw = _columns("home")
    prediction = p.predict(raw, 3)
    records = rec.records("req-1", 3, raw, prediction.outputs)
    assert [r["row"] for r in records] == [0, 1, 2]
    r = records[1]
    assert (r["request_id"], r["model"], r["model_version"], r["bundle_sha256"]) == ("req-1", "home", "1.0.0", "ab" * 32)
    assert r["outputs"]["decision"] == prediction.outputs["decision"][1]
    assert r["outputs"]["score"] == prediction.outputs["score"][1]
    assert "inputs" not in r and "reasons" not in r
    assert raw["security_features"][1] not in json.dumps(records)
    # the documented recipe: sha256 of {feature: value} in bundle order, numbers as floats
    row = {f.name: (float(raw[f.name][1]) if f.kind == "numeric" else raw[f.name][1]) if f.name in raw else None
           for f in p.features}
    assert r["inputs_sha256"] == hashlib.sha256(json.dumps(row, separators=(",", ":")).encode()).hexdigest()


def test_the_inputs_digest_tells_rows_apart_but_not_ints_from_floats(config):
    p, _ = _recorder("auto", config)
    raw = _columns("auto")
    base = inputs_digest(p.features, raw, 0)
    assert inputs_digest(p.features, {**raw, "age": [float(raw["age"][0])] + raw["age"][1:]}, 0) == base
    assert inputs_digest(p.features, {**raw, "age": [raw["age"][0] + 1] + raw["age"][1:]}, 0) != base


def test_personal_data_policies(config):
    data = yaml.safe_load(CONFIG_PATH.read_text())
    feats = {f["name"]: f for f in data["verticals"]["auto"]["features"]}
    feats["occupation"]["personal"] = "hashed"
    feats["age"]["personal"] = "dropped"
    vertical = parse_config(data).vertical("auto")
    opts = DecisionLogOptions.parse(vertical, {"inputs": True})
    p = load_predictor(shipped_bundle("auto"), config)
    raw = {**_columns("auto"), "vehicle_make": ["Toyota", "Mrs Jane Sentinel", None],
           "occupation": ["nurse", "senior engineer", ""], "location": ["12 Sentinel Road", "urban", ""]}
    prediction = p.predict(raw, 3)
    for key in (None, b"k3y"):
        rec = Recorder("auto", "1.0.0", "00" * 32, p.features, opts, hash_key=key)
        inputs = [r["inputs"] for r in rec.records("r", 3, raw, prediction.outputs)]
        assert "age" not in inputs[0]  # dropped
        assert "location" not in inputs[0]  # text: dropped by default
        digest = (hmac.new(key, raw["occupation"][0].encode(), hashlib.sha256).hexdigest() if key
                  else hashlib.sha256(raw["occupation"][0].encode()).hexdigest())
        assert inputs[0]["occupation"] == ("hmac-sha256:" if key else "sha256:") + digest
        assert inputs[0]["vehicle_make"] == "Toyota" and inputs[0]["driving_years"] == float(raw["driving_years"][0])
        assert inputs[1]["vehicle_make"] == UNSEEN  # a value outside the categories may be anything
        assert inputs[2]["vehicle_make"] is None


def test_reasons_in_a_record_follow_the_policy(config):
    from predictors.reasons import Reasons, ReasonsOptions

    p, rec = _recorder("home", config)
    raw = {**_columns("home"), "address": ["1 Sentinel Court", "2 Gated Lane", "3 Coastal Road"]}
    prediction = p.predict(raw, 3)
    texts = Reasons(p, ReasonsOptions(top_k=20)).compute(prediction, raw, 20)  # every feature listed
    records = rec.records("r", 3, raw, prediction.outputs, texts)
    for r, text in zip(records, texts):
        listed = {x["feature"]: x for x in r["reasons"]["up"] + r["reasons"]["down"]}
        assert "value" not in listed.get("address", {}) and "value" not in listed.get("security_features", {})
        full = json.loads(text)
        for x in full["up"] + full["down"]:  # the contributions themselves are kept
            assert listed[x["feature"]]["contribution"] == x["contribution"]
            if x["feature"] == "property_age":
                assert listed["property_age"]["value"] == x["value"]


def test_cloudevents_format(config):
    p, rec = _recorder("claims", config, format="cloudevents")
    raw = _columns("claims")
    event = rec.records("abc", 3, raw, p.predict(raw, 3).outputs)[2]
    assert event["specversion"] == "1.0" and event["id"] == "abc/2" and event["source"] == "/v2/models/claims"
    assert event["data"]["row"] == 2 and event["data"]["outputs"]["decision"] in ("ML_APPROVED", "ML_REJECTED", "ML_REVIEW")


def test_config_refuses_an_unknown_policy():
    data = yaml.safe_load(CONFIG_PATH.read_text())
    data["verticals"]["home"]["features"][0]["personal"] = "encrypted"
    with pytest.raises(ConfigError, match="personal 'encrypted'; allowed: clear, hashed, dropped"):
        parse_config(data)


def test_off_unless_switched_on(config, tmp_path):
    p = load_predictor(shipped_bundle("auto"), config)
    folder = shipped_bundle("auto")
    assert decision_log.open_for("auto", "1.0.0", folder, p, RuntimeSettings()) is None  # verticals.yaml: off
    log = decision_log.open_for("auto", "1.0.0", folder, p, RuntimeSettings(decision_log=True,
                                                                            decision_log_file=tmp_path / "d.jsonl"))
    assert log is not None and log.recorder.bundle_sha256 == sha256_file(folder / MANIFEST)


# ---- on a real server: sentinel values go nowhere they should not --------------------------------------

SENTINEL = "zqxsentinel"  # lower case: text is tokenised lower-cased, so it reaches the model as sent


@pytest.fixture(scope="module", params=["runtime path", "mlserver path"])
def logged(tmp_path_factory, request):
    """auto, home and claims with the decision log on (into a file), occupation `hashed`, inputs recorded;
    requests answered by the runtime's own request path, or all by MLServer's (fast_path false)."""
    tmp = tmp_path_factory.mktemp("decisions")
    data = yaml.safe_load(CONFIG_PATH.read_text())
    for f in data["verticals"]["auto"]["features"]:
        if f["name"] == "occupation":
            f["personal"] = "hashed"
    data["decision_log"]["inputs"] = True
    cfg = tmp / "verticals.yaml"
    cfg.write_text(yaml.safe_dump(data))
    models = ("auto", "home", "claims")
    srv = start_server(copy_repository(tmp / "repo", models), tmp, [f"/v2/models/{m}/ready" for m in models],
                       env={"INSURANCE_DECISION_LOG": "true", "INSURANCE_DECISION_LOG_FILE": str(tmp / "decisions.jsonl"),
                            "INSURANCE_CONFIG_PATH": str(cfg), "INSURANCE_DECISION_LOG_HASH_KEY": "test-key",
                            "INSURANCE_FAST_PATH": "true" if request.param == "runtime path" else "false"})
    yield srv, tmp / "decisions.jsonl"
    stop_server(srv)


TEXT = {"auto": ("occupation", "location"), "home": ("address", "security_features"),
        "claims": ("incident_description",)}


def _sentinel_body(model, i):
    """The example request with a sentinel in every text feature and in one categorical (unseen)."""
    body = request_json(model)
    body["id"] = f"{model}-sentinel-{i}"
    body["inputs"] = [t for t in body["inputs"] if t["name"] not in TEXT[model]]
    body["inputs"] += [{"name": n, "datatype": "BYTES", "shape": [3], "data": [f"{SENTINEL}{i} lane"] * 3}
                       for n in TEXT[model]]
    for t in body["inputs"]:
        if t["name"] in ("vehicle_make", "roof_type", "submission_channel"):
            t["data"][0] = f"{SENTINEL}{i}"  # an unseen category carrying personal data
    return body


@pytest.mark.slow
def test_sentinels_appear_in_no_log_metric_or_record(logged):
    srv, path = logged
    sent = 0
    for i, model in enumerate(("auto", "home", "claims")):
        body = _sentinel_body(model, i)
        body.setdefault("parameters", {})["reasons"] = 20  # every feature quoted in the reasons
        r = requests.post(f"{srv.http}/v2/models/{model}/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert SENTINEL in r.text  # the caller gets its own values back in the reasons
        plain = {**_sentinel_body(model, i), "id": f"{model}-plain-{i}"}  # no reasons asked
        assert requests.post(f"{srv.http}/v2/models/{model}/infer", json=plain, timeout=30).status_code == 200
        sent += 6
    # refused requests: a value in the wrong place is named in the 400 to its sender, not logged
    bad = _sentinel_body("auto", 7)
    bad["inputs"][0] = {"name": "age", "shape": [3], "datatype": "FP64", "data": [f"{SENTINEL}7", 1, 2]}
    r = requests.post(f"{srv.http}/v2/models/auto/infer", json=bad, timeout=30)
    assert r.status_code in (400, 422), r.text
    # gRPC (the runtime's path too)
    pb = _pb()
    req = pb.ModelInferRequest(model_name="home", id="home-grpc")
    for t in _sentinel_body("home", 9)["inputs"]:
        tensor = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if t["datatype"] == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in t["data"])
        else:
            tensor.contents.fp64_contents.extend(float(v) for v in t["data"])
    req.parameters["reasons"].string_param = "true"
    with grpc.insecure_channel(srv.grpc) as channel:
        _stub(channel).ModelInfer(req, timeout=30)
    sent += 3

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == sent
    by_id = {(r["request_id"], r["row"]): r for r in records}
    for model in ("auto", "home", "claims"):
        manifest = sha256_file(Path(srv.repository) / model / "1.0.0" / MANIFEST)
        rec = by_id[(f"{model}-sentinel-{['auto', 'home', 'claims'].index(model)}", 0)]
        assert rec["bundle_sha256"] == manifest and rec["model"] == model and rec["model_version"] == "1.0.0"
        assert "reasons" in rec and "reasons" not in by_id[(rec["request_id"].replace("sentinel", "plain"), 0)]
    assert by_id[("home-grpc", 2)]["reasons"]["up"] is not None
    # occupation is `hashed` (keyed): the record proves what was sent without showing it
    occupation = f"{SENTINEL}0 lane"
    keyed = "hmac-sha256:" + hmac.new(b"test-key", occupation.encode(), hashlib.sha256).hexdigest()
    assert by_id[("auto-sentinel-0", 0)]["inputs"]["occupation"] == keyed
    assert by_id[("auto-sentinel-0", 0)]["inputs"]["vehicle_make"] == UNSEEN

    metrics = requests.get(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).text
    assert "ml_rows_total" in metrics
    for where, text in (("decision records", path.read_text()), ("server log", srv.log_text()), ("metrics", metrics)):
        assert SENTINEL not in text, where
