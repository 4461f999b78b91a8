"""The README is the user's manual: its generated tables are current and its examples work."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests

from predictors.docs import feature_tables

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_feature_tables_are_current():
    assert feature_tables() in README, "README feature tables are stale: python -m predictors.docs --write README.md"


def _curl_auto_example() -> dict:
    m = re.search(r"http://127\.0\.0\.1:8080/v2/models/auto/infer -d '(\{.*?\})'\n```", README, re.S)
    assert m, "README lost its curl example"
    return json.loads(m.group(1))


def _readme_answer() -> dict:
    m = re.search(r"```json\n(\{\"model_name\": \"auto\".*?)\n```", README, re.S)
    return json.loads(m.group(1))


@pytest.mark.slow
def test_curl_example_answers_what_the_readme_shows(server):
    body = _curl_auto_example()
    r = requests.post(f"{server.http}/v2/models/auto/versions/1.0.0/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    got = {o["name"]: o["data"] for o in r.json()["outputs"]}
    shown = {o["name"]: o["data"] for o in _readme_answer()["outputs"]}
    assert got["decision"] == shown["decision"] and got["price"] == shown["price"]
    np.testing.assert_allclose(got["score"], shown["score"], atol=5e-5)
    np.testing.assert_allclose(got["confidence"], shown["confidence"], atol=5e-5)
    assert [json.loads(m) for m in got["market_factors"]] == [json.loads(m) for m in shown["market_factors"]]


@pytest.mark.slow
def test_tritonclient_snippet_runs(server):
    snippet = re.search(r"```python\n(import numpy as np\nimport tritonclient.http.*?)```", README, re.S).group(1)
    snippet = snippet.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    result = scope["result"]
    assert 0.0 <= float(result.as_numpy("score")[0]) <= 1.0 and float(result.as_numpy("price")[0]) > 0
    decision = result.as_numpy("decision")[0]
    assert (decision.decode() if isinstance(decision, bytes) else decision) in ("accept", "reject")


@pytest.mark.slow
def test_reasons_example_answers_what_the_readme_shows(server):
    """The README's request with `reasons` (docs/reasons.md) and the answer it shows."""
    section = README[README.index("### Reasons: why this score"):]
    body = json.loads(re.search(r"/v2/models/auto/infer -d '(\{.*?\})'\n```", section, re.S).group(1))
    shown = json.loads(re.search(r"```json reasons\n(\{.*?)\n```", section, re.S).group(1))
    r = requests.post(f"{server.http}/v2/models/auto/versions/1.0.0/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    got = {o["name"]: o["data"] for o in r.json()["outputs"]}
    want = {o["name"]: o["data"] for o in shown["outputs"]}
    assert list(got) == list(want) and got["decision"] == want["decision"]
    np.testing.assert_allclose(got["score"], want["score"], atol=5e-5)
    doc, expected = json.loads(got["reasons"][0]), want["reasons"][0]
    for side in ("up", "down"):
        assert [(x["feature"], x["value"]) for x in doc[side]] == [(x["feature"], x["value"]) for x in expected[side]]
        np.testing.assert_allclose([x["contribution"] for x in doc[side]],
                                   [x["contribution"] for x in expected[side]], atol=5e-5)
    for key in ("raw_score", "base", "other"):
        assert abs(doc[key] - expected[key]) <= 5e-5, key
