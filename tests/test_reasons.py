"""Reason codes (predictors/reasons.py): exact contributions per raw feature, the `reasons` output
over both request paths, and requests without reasons answering as before."""

from __future__ import annotations

import itertools
import json
import math

import grpc
import numpy as np
import orjson
import pytest
import requests
import tritonclient.grpc as grpcclient  # before anything imports mlserver's protos (runtime/__init__.py)
from datetime import datetime, timezone

from predictors import load_predictor
from predictors.encoding import InputError
from predictors.predictor import OUTPUTS
from predictors.reasons import (Reasons, ReasonsOptions, ReasonsUnavailable, hgb_to_lightgbm,
                                requested_k)
from predictors.spec import ConfigError, parse_config

from .conftest import request_json, shipped_bundle, start_fast_and_plain, stop_server
from .test_predictors_vs_reference import PEAK, columns, raw_rows

VERTICALS = ("auto", "claims", "health", "home", "life")


@pytest.fixture(scope="module")
def explained(config):
    """vertical -> (predictor, Reasons) of the shipped bundles."""
    out = {}
    for name in VERTICALS:
        p = load_predictor(shipped_bundle(name), config)
        out[name] = (p, Reasons(p, ReasonsOptions.parse(name, p.vertical.reasons)))
    return out


def _rows(p, n=300, seed=11):
    raw = columns(raw_rows(p.vertical, rows=n, seed=seed), p.features)
    return raw, p.predict(raw, n, now=PEAK)


@pytest.mark.parametrize("name", VERTICALS)
def test_contributions_sum_to_the_models_raw_score(explained, name):
    p, reasons = explained[name]
    raw, prediction = _rows(p)
    contrib, base = reasons.explainer.contributions(prediction.batch)
    assert contrib.shape == (prediction.batch.n, len(p.features))  # one column per raw feature
    total = base + contrib.sum(axis=1)
    # the model's own raw score, computed without the explainer (LightGBM raw_score, sklearn decision_function)
    np.testing.assert_allclose(total, reasons.explainer.raw_score(prediction.batch), rtol=0, atol=1e-6)
    # ... and the served score is its sigmoid
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-total)), prediction.outputs["score"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", VERTICALS)
def test_reasons_json_parts_add_up_and_name_raw_features(explained, name):
    p, reasons = explained[name]
    raw, prediction = _rows(p, n=100)
    texts = reasons.compute(prediction, raw, 3)
    names = set(p.feature_names)
    for i, text in enumerate(texts):
        doc = json.loads(text)
        listed = doc["up"] + doc["down"]
        assert len(doc["up"]) <= 3 and len(doc["down"]) <= 3
        assert all(x["contribution"] > 0 for x in doc["up"]) and all(x["contribution"] < 0 for x in doc["down"])
        assert {x["feature"] for x in listed} <= names  # never an encoded column or hash bucket
        parts = doc["base"] + sum(x["contribution"] for x in listed) + doc["other"]
        assert abs(parts - doc["raw_score"]) <= 1e-6
        assert abs(1 / (1 + math.exp(-doc["raw_score"])) - prediction.outputs["score"][i]) <= 1e-9
        for x in listed:  # the value as sent
            assert x["value"] == raw[x["feature"]][i]


def _changed(p, raw, feature, value):
    row = {k: [v[0]] for k, v in raw.items()}
    other = {**row, feature: [value]}
    return row, other


@pytest.mark.parametrize("name,feature,a,b", [
    ("auto", "age", 20, 45), ("home", "construction_type", "log", "concrete"),
    ("health", "annual_income", 15000, 120000), ("life", "hobbies", "skydiving scuba", "reading chess"),
    ("claims", "days_to_report", 1, 120),
])
def test_a_row_changed_in_one_feature_moves_that_features_contribution(explained, name, feature, a, b):
    p, reasons = explained[name]
    raw, _ = _rows(p, n=1, seed=3)
    j = p.feature_names.index(feature)
    got = []
    for value in (a, b):
        row = {**raw, feature: [value]}
        contrib, _ = reasons.explainer.contributions(p.normalize(row, 1))
        got.append(contrib[0])
    delta = np.abs(got[1] - got[0])
    assert delta[j] > 0.05, (feature, got)
    assert int(np.argmax(delta)) == j  # the changed feature moved most


def _brute_force_shapley(model, x):
    """Path-dependent Tree SHAP by its definition: E[f(x) | x_S] over each tree, following the
    split when its feature is in S and both children weighted by training counts otherwise; Shapley
    values by enumerating every subset."""
    m = x.shape[0]

    def expect(nodes, i, S):
        node = nodes[i]
        if node["is_leaf"]:
            return node["value"]
        left, right = int(node["left"]), int(node["right"])
        f = int(node["feature_idx"])
        if f in S:
            v = x[f]
            go_left = node["missing_go_to_left"] if np.isnan(v) else v <= node["num_threshold"]
            return expect(nodes, left if go_left else right, S)
        nl, nr = nodes[left]["count"], nodes[right]["count"]
        return (nl * expect(nodes, left, S) + nr * expect(nodes, right, S)) / (nl + nr)

    def value(S):
        return sum(expect(t[0].nodes, 0, S) for t in model._predictors)

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for r in range(m):
            for S in itertools.combinations(others, r):
                w = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
                phi[i] += w * (value(set(S) | {i}) - value(set(S)))
    return phi, value(set())


def test_claims_translation_gives_exact_tree_shap_values():
    """The HistGradientBoosting -> LightGBM translation explains with true Shapley values of the
    path-dependent game (not only values that add up)."""
    import lightgbm
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    x[rng.random(400) < 0.1, 2] = np.nan
    y = ((x[:, 0] + np.nan_to_num(x[:, 2]) * x[:, 1] + rng.normal(scale=0.5, size=400)) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=6, max_leaf_nodes=6, random_state=0).fit(x, y)
    booster = lightgbm.Booster(model_str=hgb_to_lightgbm(model, 4))
    rows = np.vstack([x[:5], [[0.3, -1.2, np.nan, 2.0]]])
    contrib = booster.predict(rows, pred_contrib=True)
    for row, c in zip(rows, contrib):
        phi, expected = _brute_force_shapley(model, row)
        np.testing.assert_allclose(c[:-1], phi, atol=1e-9)
        assert abs(c[-1] - expected) < 1e-9
        assert abs(c.sum() + model._baseline_prediction.ravel()[0] - model.decision_function(row[None])[0]) < 1e-9


def test_native_categorical_splits_are_refused_with_the_reason():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x = np.c_[rng.integers(0, 4, 300), rng.normal(size=300)]
    y = (x[:, 0] >= 2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(x, y)
    with pytest.raises(ReasonsUnavailable, match="categorical"):
        hgb_to_lightgbm(model, 2)


def test_a_model_without_reasons_still_serves_and_says_why(explained, caplog):
    p, _ = explained["claims"]

    class Foreign:  # a pipeline whose last step is not a HistGradientBoosting model
        def __getitem__(self, item):
            return [object()] if isinstance(item, slice) else object()

    model, native = p.model, p.native
    p.model, p.native = Foreign(), None  # the pipeline path (the native one was translated at export)
    try:
        reasons = Reasons(p, ReasonsOptions())
    finally:
        p.model, p.native = model, native
    assert reasons.explainer is None and "no reasons" in caplog.text
    assert reasons.requested(None, ["score"]) is None  # requests without reasons are unaffected
    with pytest.raises(InputError, match="this model cannot compute reasons: cannot read the claims pipeline"):
        reasons.requested({"reasons": True}, None)


def test_claims_anomaly_reason_names_the_extreme_feature(explained):
    p, reasons = explained["claims"]
    raw = {k: list(v) for k, v in request_json_columns("claims").items()}
    raw["claim_amount"][0] = 9_000_000.0  # far in the tail of the training amounts
    raw["submission_channel"][1] = "carrier pigeon"  # a channel the model never saw
    prediction = p.predict(raw, len(raw["claim_amount"]))
    docs = [json.loads(t) for t in reasons.compute(prediction, raw, 3)]
    assert docs[0]["anomaly"]["feature"] == "claim_amount" and docs[0]["anomaly"]["value"] == 9_000_000.0
    assert docs[0]["anomaly"]["percentile"] == 1.0
    assert docs[0]["anomaly"]["score"] == prediction.outputs["anomaly_score"][0]
    assert docs[1]["anomaly"] == {"feature": "submission_channel", "value": "carrier pigeon", "unseen_category": True,
                                  "score": 1.0}


def request_json_columns(name):
    return {t["name"]: t["data"] for t in request_json(name)["inputs"]}


def test_ranked_format_and_k(explained):
    p, _ = explained["auto"]
    reasons = Reasons(p, ReasonsOptions(top_k=2, format="ranked"))
    raw = request_json_columns("auto")
    prediction = p.predict(raw, 3, now=PEAK)
    for text in reasons.compute(prediction, raw, 2):
        doc = json.loads(text)
        assert set(doc) == {"raw_score", "base", "top", "other"} and len(doc["top"]) == 2
        mags = [abs(x["contribution"]) for x in doc["top"]]
        assert mags == sorted(mags, reverse=True)
        contrib_all = doc["base"] + sum(x["contribution"] for x in doc["top"]) + doc["other"]
        assert abs(contrib_all - doc["raw_score"]) < 1e-6


@pytest.mark.parametrize("parameters,wanted,k", [
    (None, None, None), ({}, ["score"], None), (None, ["reasons"], 3), ({"reasons": True}, None, 3),
    ({"reasons": "true"}, None, 3), ({"reasons": 5}, None, 5), ({"reasons": "7"}, None, 7),
    ({"reasons": False}, None, None), ({"reasons": "false"}, ["reasons"], 3), ({"quote_time": "x"}, None, None),
])
def test_when_a_request_asks_for_reasons(parameters, wanted, k):
    assert requested_k(parameters, wanted, ReasonsOptions()) == k


@pytest.mark.parametrize("value", [0, 21, "lots", 2.5, [3]])
def test_a_bad_reasons_parameter_is_a_400_naming_what_is_allowed(explained, value):
    _, reasons = explained["auto"]
    with pytest.raises(InputError, match=r"parameter 'reasons' .*allowed: true, false or a number of features 1\.\.20"):
        reasons.requested({"reasons": value}, None)


def test_reasons_for_more_rows_than_max_rows_is_a_400_naming_the_limit(explained):
    p, _ = explained["auto"]
    reasons = Reasons(p, ReasonsOptions(max_rows=5))
    assert reasons.requested({"reasons": True}, None, 5) == 3
    with pytest.raises(InputError, match=r"reasons were asked for 6 rows; at most 5 rows per request"):
        reasons.requested({"reasons": True}, None, 6)
    assert reasons.requested(None, None, 6) is None  # not asking: any number of rows


def test_config_refuses_bad_reasons_settings():
    from predictors.spec import load_config
    import yaml
    from predictors.spec import CONFIG_PATH

    data = yaml.safe_load(CONFIG_PATH.read_text())
    data["verticals"]["auto"]["reasons"] = {"top_k": 50}
    with pytest.raises(ConfigError, match="reasons.top_k 50"):
        parse_config(data)
    data["verticals"]["auto"]["reasons"] = {"format": "prose"}
    with pytest.raises(ConfigError, match="allowed: split, ranked"):
        parse_config(data)
    assert load_config().vertical("auto").reasons["top_k"] == 3


# ---- over real servers -----------------------------------------------------------------------------

MODELS = ("auto", "claims")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same bundles served twice: the runtime's own request path, and MLServer's (fast_path off)."""
    fast, plain = start_fast_and_plain(tmp_path_factory.mktemp("reasons"), MODELS)
    yield {"fast": fast, "plain": plain}
    stop_server(plain)
    stop_server(fast)


def _post(srv, model, body):
    r = requests.post(f"{srv.http}/v2/models/{model}/infer", data=json.dumps(body), timeout=30,
                      headers={"content-type": "application/json"})
    return r


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_requests_without_reasons_answer_as_before_on_both_paths(pair, model, config):
    """Byte for byte the V2 answer of the predictors' outputs, in the task's output order (what the
    runtime answered before reasons existed); no `reasons` output unless asked."""
    body = request_json(model)
    p = load_predictor(shipped_bundle(model), config)
    raw = request_json_columns(model)
    now = datetime.fromisoformat(body["parameters"]["quote_time"]).astimezone(timezone.utc)
    outputs = p.predict(raw, 3, now=now).outputs
    for names in (list(OUTPUTS[p.task]), ["decision", "score"]):
        expected = orjson.dumps({"model_name": model, "model_version": "1.0.0", "id": body["id"], "parameters": {},
                                 "outputs": [{"name": o, "shape": [3], "datatype": p.outputs[o],
                                              "data": outputs[o].tolist() if hasattr(outputs[o], "tolist")
                                              else list(outputs[o])}
                                             for o in OUTPUTS[p.task] if o in names]})
        sent = body if names == list(OUTPUTS[p.task]) else {**body, "outputs": [{"name": n} for n in names]}
        for side in ("fast", "plain"):
            r = _post(pair[side], model, sent)
            assert r.status_code == 200, r.text
            assert r.content == expected, side


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_reasons_over_rest_on_both_paths(pair, model):
    body = request_json(model)
    for sent in ({**body, "outputs": [{"name": "score"}, {"name": "reasons"}]},
                 {**body, "parameters": {**body.get("parameters", {}), "reasons": 2}}):
        answers = {}
        for side in ("fast", "plain"):
            r = _post(pair[side], model, sent)
            assert r.status_code == 200, r.text
            answers[side] = r.json()
        assert answers["fast"] == answers["plain"]
        outs = {o["name"]: o for o in answers["fast"]["outputs"]}
        assert outs["reasons"]["datatype"] == "BYTES" and outs["reasons"]["shape"] == [3]
        assert list(outs)[-1] == "reasons"
        k = 2 if "reasons" in sent.get("parameters", {}) else 3
        for score, text in zip(outs["score"]["data"], outs["reasons"]["data"]):
            doc = json.loads(text)
            assert len(doc["up"]) <= k and len(doc["down"]) <= k
            parts = doc["base"] + sum(x["contribution"] for x in doc["up"] + doc["down"]) + doc["other"]
            assert abs(parts - doc["raw_score"]) <= 1e-6
            assert abs(1 / (1 + math.exp(-parts)) - score) <= 1e-6
    bad = {**body, "parameters": {"reasons": "lots"}}
    for side in ("fast", "plain"):
        r = _post(pair[side], model, bad)
        assert r.status_code == 400 and "parameter 'reasons'" in r.text


@pytest.mark.slow
def test_metadata_lists_reasons(pair):
    for side in ("fast", "plain"):
        meta = requests.get(f"{pair[side].http}/v2/models/claims", timeout=10).json()
        assert {"name": "reasons", "datatype": "BYTES", "shape": [-1]} in meta["outputs"]


@pytest.mark.slow
def test_tritonclient_asks_for_reasons_over_grpc(pair):
    body = request_json("auto")
    for side in ("fast", "plain"):
        client = grpcclient.InferenceServerClient(pair[side].grpc)
        inputs = []
        for t in body["inputs"]:
            datatype = "BYTES" if t["datatype"] == "BYTES" else "FP64"
            inp = grpcclient.InferInput(t["name"], t["shape"], datatype)
            inp.set_data_from_numpy(np.array(t["data"], dtype=object if datatype == "BYTES" else np.float64))
            inputs.append(inp)
        result = client.infer("auto", inputs, outputs=[grpcclient.InferRequestedOutput("score"),
                                                        grpcclient.InferRequestedOutput("reasons")],
                              parameters={"quote_time": body["parameters"]["quote_time"]})
        reasons = [json.loads(r) for r in result.as_numpy("reasons")]
        assert len(reasons) == 3 and result.as_numpy("price") is None
        for score, doc in zip(result.as_numpy("score"), reasons):
            assert abs(1 / (1 + math.exp(-doc["raw_score"])) - score) <= 1e-6
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_insurance_client_asks_for_reasons(pair, protocol):
    from insurance_client import InsuranceClient

    srv = pair["fast"]
    url = srv.http if protocol == "http" else srv.grpc
    row = {t["name"]: t["data"][0] for t in request_json("auto")["inputs"]}
    claim = {t["name"]: t["data"][0] for t in request_json("claims")["inputs"]}
    with InsuranceClient(url, protocol=protocol) as client:
        plain = client.score("auto", row)
        assert plain.reasons is None
        lead = client.score("auto", row, reasons=True)
        assert lead.score == plain.score
        parts = lead.reasons["base"] + sum(x["contribution"] for x in lead.reasons["up"] + lead.reasons["down"])
        assert abs(parts + lead.reasons["other"] - lead.reasons["raw_score"]) <= 1e-6
        triage = client.triage(claim, reasons=True)
        assert "anomaly" in triage.reasons and triage.reasons["anomaly"]["feature"] in claim


@pytest.mark.slow
def test_grpc_reasons_answer_identically_on_both_paths_typed_and_raw(pair):
    from .test_request_path import call, grpc_request

    class Channels:  # the shape test_request_path.call expects
        def __init__(self):
            self.channel = {side: grpc.insecure_channel(pair[side].grpc) for side in ("fast", "plain")}

    channels = Channels()
    for model in MODELS:
        for raw in (False, True):
            req = grpc_request(model, raw)
            req.parameters["reasons"].int64_param = 2
            fast, plain = call(channels, "fast", req), call(channels, "plain", req)
            assert fast[0] == grpc.StatusCode.OK and fast == plain
            from .security.test_hostile_input import _pb

            answer = _pb().ModelInferResponse.FromString(fast[1])
            assert [o.name for o in answer.outputs][-1] == "reasons"
            texts = ([answer.outputs[-1].contents.bytes_contents[i] for i in range(3)] if not raw else
                     _unpack_bytes(answer.raw_output_contents[-1]))
            assert [len(json.loads(t)["up"]) <= 2 for t in texts] == [True] * 3
    for c in channels.channel.values():
        c.close()


def _unpack_bytes(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        n = int.from_bytes(blob[i:i + 4], "little")
        out.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return out


@pytest.mark.slow
def test_no_decision_records_unless_switched_on(pair):
    requests.post(f"{pair['fast'].http}/v2/models/auto/infer", json=request_json("auto"), timeout=10)
    for srv in pair.values():
        assert "inputs_sha256" not in srv.log_text()
