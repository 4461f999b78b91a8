"""The REST server against the Open Inference Protocol specification, with schemathesis.

The specification is kserve/open-inference-protocol's `open_inference_rest.yaml` (tests/oip, see
SOURCE.txt), loaded with its `${MODEL_NAME}` path templates written the OpenAPI way and the path
parameters set to a served model and version. Every operation gets schema-conforming requests
(positive) and requests that break the schema (negative: missing or mistyped fields, wrong body
types); every answer must pass schemathesis's checks: no 5xx, a status the specification
documents, a body of the documented schema (`{"error": "..."}` for errors), the documented
content type. Bounded to run in about a minute (OIP_EXAMPLES per operation and mode).

Deliberate divergences (docs/security.md, "Open Inference Protocol errors"), excluded by name:

* ``status_code_conformance`` on infer: the runtime answers 404 for an unknown model or version,
  413 for a body over max_request_bytes and 405 for a wrong method; the specification lists only
  200 and 400 (its prose says errors are "typically" 400). Checked here instead: every non-200
  answer of infer is 400, 404 or 413 with `{"error": ...}`.
* ``negative_data_rejection`` / ``positive_data_acceptance``: they require a schema-valid request
  to be accepted and an invalid one to be refused; a V2 request valid for the protocol's schema is
  refused (400) when its inputs are not the model's features, which the protocol allows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from .conftest import copy_repository, request_json, start_server, stop_server

pytestmark = pytest.mark.slow

SPEC = Path(__file__).with_name("oip") / "open_inference_rest.yaml"
EXAMPLES = int(os.environ.get("OIP_EXAMPLES", "60"))
MODEL, VERSION = "auto", "1.0.0"


def oip_schema():
    import schemathesis

    text = SPEC.read_text().replace("${MODEL_NAME}", "{MODEL_NAME}").replace("${MODEL_VERSION}", "{MODEL_VERSION}")
    return schemathesis.openapi.from_dict(yaml.safe_load(text))


@pytest.fixture(scope="module")
def oip_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oip")
    srv = start_server(copy_repository(tmp / "repo", [MODEL]), tmp, [f"/v2/models/{MODEL}/ready"])
    yield srv
    stop_server(srv)


def _operations():
    return [(op.ok().method.upper(), op.ok().path) for op in oip_schema().get_all_operations()]


def _cases():
    """Every operation with conforming requests; infer (the one with a body) also with breaking ones (the
    others take no input besides the fixed path parameters)."""
    return [(m, p, "positive") for m, p in _operations()] + \
        [(m, p, "negative") for m, p in _operations() if p.endswith("/infer")]


def test_the_specification_copy_is_the_one_its_source_names():
    source = SPEC.with_name("SOURCE.txt").read_text()
    assert "open-inference-protocol" in source and "unmodified" in source
    assert len(_operations()) == 6  # live, ready, model ready, server metadata, model metadata, infer


@pytest.mark.parametrize("method,path,mode", _cases())
def test_every_operation_conforms_to_the_oip_specification(oip_server, method, path, mode):
    import requests
    import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS

    operation = oip_schema()[path][method]
    excluded = CHECKS.get_by_names(["negative_data_rejection", "positive_data_acceptance"])
    if path.endswith("/infer"):
        excluded += CHECKS.get_by_names(["status_code_conformance"])
    session = requests.Session()
    seen: dict[int, int] = {}
    strategy = operation.as_strategy(GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE,
                                     path_parameters={"MODEL_NAME": MODEL, "MODEL_VERSION": VERSION})

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(base_url=oip_server.http, session=session, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, excluded_checks=excluded)
        if response.status_code != 200:
            assert response.status_code in (400, 404, 413), (response.status_code, response.text[:300])
            body = json.loads(response.text)
            assert isinstance(body.get("error"), str) and body["error"] and "detail" not in body, body

    if mode == "positive" and path.endswith("/infer"):  # and the example request: a 200 of the documented schema
        case = operation.Case(path_parameters={"MODEL_NAME": MODEL, "MODEL_VERSION": VERSION},
                              body=request_json(MODEL), media_type="application/json")
        response = case.call(base_url=oip_server.http, session=session, timeout=30)
        assert response.status_code == 200, response.text[:300]
        case.validate_response(response, excluded_checks=excluded)
        seen[200] = 1
    run()
    assert seen, "no request was sent"
    from .security.conftest import REPORT

    print(f"OIP conformance {method} {path} ({mode}):", seen)
    REPORT[f"OIP conformance {method} {path} ({mode})"] = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))
