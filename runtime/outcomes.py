"""``POST /v2/models/<name>/outcomes``: ground truth for earlier predictions.

A prediction is the V2 request ``id`` plus the row index in that request (MLServer puts the
request's ``id`` in the response, a generated UUID when the request had none, so a caller
always has it). Body::

    {"outcomes": [{"id": "<request id>", "row": 0, "outcome": 1}, ...]}

``outcome`` is 1 (true, converted / claim approved) or 0. The answer counts what matched a
remembered prediction, lists what did not (``unknown``: never scored here, evicted from the
store, or scored under a second ago by another worker: send those again later) and gives the
resulting live metrics per model version (``ml_model_performance{source="live"}``).

The endpoint is an MLServer custom handler (REST only; MLServer 1.7.1 has none for gRPC). In
parallel-worker mode MLServer hands the call to one worker; the store is shared by the workers
(predictors/outcomes.py), so any worker can match it. With authentication configured
(docs/security.md) it needs a credential with the ``outcomes`` role (ground truth moves the live
ROC-AUC and the A/B verdict), and an outcome matches only predictions made under the same
credential or tenant (``Principal.owner``): ids of other clients come back ``unknown``.
"""

# No `from __future__ import annotations` here: FastAPI reads the handler's annotations, and with
# parallel workers it sees them through MLServer's wrapper, whose module globals would not resolve
# string annotations.
from typing import Any, Optional

from fastapi import Body, Header
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from predictors.versions import newest as newest_version
from predictors.versions import semver_key

from . import metrics

#: The route of the custom handler (one route serves every model: the name is a path parameter).
REST_PATH = "/v2/models/{model_name}/outcomes"
MAX_OUTCOMES = 10_000


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(min_length=1, max_length=256, description="the V2 request id of the prediction")
    row: int = Field(0, ge=0, description="row index of the prediction in that request")
    outcome: int = Field(ge=0, le=1, description="1: converted / approved, 0: not")


class OutcomesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES)


class InvalidOutcomes(MLServerError):
    """400 naming the offending field; never echoes the body (unlike FastAPI's 422 answers)."""

    def __init__(self, msg: str):
        super().__init__(msg, status_code=400)


def parse(body: Any) -> OutcomesRequest:
    try:
        return OutcomesRequest.model_validate(body)
    except ValidationError as e:
        problems = ["{}: {}".format(".".join(str(p) for p in err["loc"]) or "body", err["msg"])
                    for err in e.errors(include_input=False, include_url=False)[:3]]
        more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
        raise InvalidOutcomes("invalid outcomes: " + "; ".join(problems) + more +
                              '; expected {"outcomes": [{"id": "<request id>", "row": 0, "outcome": 0 or 1}, ...]}'
                              ) from None


class ModelNotServed(MLServerError):
    def __init__(self, msg: str):
        super().__init__(msg, status_code=404)


class OutcomesUnavailable(MLServerError):
    def __init__(self, msg: str):
        super().__init__(msg, status_code=409)


def receive(model_name: str, body: Any, headers: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Match the outcomes to remembered predictions and update the live performance gauges."""
    versions = metrics.active(model_name)
    if not versions:
        raise ModelNotServed(f"model '{model_name}' is not loaded here")
    newest = versions[newest_version(versions)]  # semver order: 1.10.0 after 1.9.0
    principal = None
    if newest.auth is not None and newest.auth.enabled:
        from .auth import OUTCOMES

        principal = newest.auth.check_headers(headers or {}, model_name, OUTCOMES)  # 401 / 403, counted
    policy = getattr(newest, "rate_policy", None)
    if policy is not None:
        policy.admit(principal, model_name)  # 429
    body = parse(body)  # after authentication: nothing of an unauthenticated body is looked at
    log = newest.log
    if log is None:
        raise OutcomesUnavailable(f"model '{model_name}': outcomes are turned off (outcomes_capacity 0)")
    owner = principal.owner if principal is not None else ""
    matched, unknown = log.add_outcomes(model_name, ((o.id, o.row, o.outcome) for o in body.outcomes), owner)
    live = {}
    for version in sorted({m.version for m in matched}, key=semver_key):
        monitoring = versions.get(version)
        if monitoring is not None and monitoring.log is log:
            live[version] = monitoring.update_live_performance()
    return {
        "model_name": model_name,
        "received": len(body.outcomes),
        "matched": len(matched),
        "unknown": [{"id": rid, "row": row} for rid, row in unknown],
        "live": live,
    }


@custom_handler(rest_path=REST_PATH, rest_method="POST")
async def outcomes(self, model_name: str, body: Any = Body(...), x_api_key: Optional[str] = Header(None),
                   authorization: Optional[str] = Header(None)) -> dict:
    """The handler, a method of InsuranceModel (``outcomes = outcomes.outcomes`` in its class body).

    MLServer registers one route per loaded model, all on the same path; whichever serves the call
    looks the model up by the path's ``model_name``. The method's name must stay ``outcomes``:
    MLServer's parallel workers dispatch custom handlers by ``__name__``.
    """
    headers = {k: v for k, v in (("x-api-key", x_api_key), ("authorization", authorization)) if v is not None}
    return receive(model_name, body, headers)
