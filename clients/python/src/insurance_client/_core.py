"""Transport-independent parts: typed results, errors, V2 request building, response parsing, retry policy."""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

CLAIMS = "claims"  # the default model of triage(); any claims-triage model can be named
SCORE, TRIAGE = "score", "triage"
#: Outputs that make a model a lead-scoring or a claims-triage model (from its V2 metadata).
TASK_OUTPUTS = {SCORE: ("score", "confidence", "price", "market_factors", "decision"),
                TRIAGE: ("score", "anomaly_score", "settlement_estimate", "decision")}
NOT_READY = re.compile(r"is not ready yet", re.I)
INPUT_NAME = re.compile(r"^input '([^']+)'")


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class LeadScore:
    """One scored lead: conversion probability, confidence, quoted premium and decision."""

    vertical: str
    score: float
    confidence: float
    price: float
    decision: str  # "accept" | "reject"
    market_factors: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None
    request_id: str | None = None  # with `row`: what report_outcomes() sends back later
    row: int = 0
    #: with ``reasons=True``: the features that pushed the score up / down (docs/reasons.md), else None
    reasons: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClaimTriage:
    """One triaged claim: approval probability, anomaly score, expected settlement and decision."""

    score: float
    anomaly_score: float
    settlement_estimate: float
    decision: str  # "ML_APPROVED" | "ML_REJECTED" | "ML_REVIEW"
    model_version: str | None = None
    request_id: str | None = None
    row: int = 0
    reasons: dict[str, Any] | None = None  # with ``reasons=True`` (docs/reasons.md)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ errors
class InsuranceError(Exception):
    """Base class of every error the client raises."""


class InvalidRequest(InsuranceError):
    """The request was refused (HTTP 400/422, gRPC INVALID_ARGUMENT): the server's message names the input.

    ``input`` is the offending input's name when the message names one."""

    def __init__(self, message: str, status: int | None = None, model: str | None = None):
        self.message, self.status, self.model = message, status, model
        m = INPUT_NAME.match(message)
        self.input = m.group(1) if m else None
        where = f"{model}: " if model else ""
        super().__init__(f"{where}{message}" + (f" (HTTP {status})" if status else ""))


class ModelNotFound(InsuranceError):
    """No such model or version on the server (HTTP 404, gRPC NOT_FOUND)."""


class Unavailable(InsuranceError):
    """The server could not be reached or stayed unavailable (connection errors, 503) after every retry."""


class Timeout(InsuranceError):
    """The server did not answer within the timeout."""


class ServerError(InsuranceError):
    """The server failed (5xx other than 503, gRPC INTERNAL/UNKNOWN)."""


# ------------------------------------------------------------------ retry policy
@dataclass(frozen=True)
class Retry:
    """Retries on connection errors, 503 and a model that is (re)loading, with exponential
    backoff and full jitter: sleep ~ U(0, min(max_backoff, backoff * 2**attempt)); a 503's
    Retry-After (seconds) is honoured up to max_backoff. Scoring has no side effects, so a
    retried request is safe."""

    attempts: int = 3  # retries after the first try
    backoff: float = 0.1
    max_backoff: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        cap = min(self.max_backoff, self.backoff * (2 ** attempt))
        return (rng or random).uniform(0, cap)


class _Retryable(Exception):
    def __init__(self, error: InsuranceError, retry_after: float | None = None):
        self.error, self.retry_after = error, retry_after


# ------------------------------------------------------------------ requests
def task_of(model: str, metadata: Mapping[str, Any]) -> str:
    """SCORE or TRIAGE, from the outputs in a model's V2 metadata (GET /v2/models/<model>)."""
    outputs = {o.get("name") for o in metadata.get("outputs") or ()}
    for task, needed in TASK_OUTPUTS.items():
        if outputs >= set(needed):
            return task
    raise ServerError(f"{model}: its outputs {sorted(map(str, outputs))} are neither a lead-scoring model's "
                      f"({', '.join(TASK_OUTPUTS[SCORE])}) nor a claims-triage model's "
                      f"({', '.join(TASK_OUTPUTS[TRIAGE])})")


def check_task(model: str, task: str, wanted: str) -> None:
    """ValueError when score() is called on a claims-triage model or triage() on a lead-scoring one."""
    if task == TRIAGE and wanted == SCORE:
        raise ValueError(f"{model} is a claims-triage model: claims are triaged, not scored: use triage()/triage_many()")
    if task == SCORE and wanted == TRIAGE:
        raise ValueError(f"{model} is a lead-scoring model: triage is for a claims-triage model; use score()/score_many()")


def columns(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list], dict[str, str]]:
    """Row dicts -> (column per field, V2 datatype per field). None is a missing value; a field
    no row has is left out. Numbers go as FP64, strings as BYTES; a field mixing both, or a
    bool, is refused here with the field named."""
    if not rows:
        raise InvalidRequest("no rows to send: give at least one lead or claim")
    names: list[str] = []
    for r in rows:
        if not isinstance(r, Mapping):
            raise InvalidRequest(f"each row must be a mapping of field -> value, got {type(r).__name__}")
        for k in r:
            if k not in names:
                names.append(k)
    cols, types = {}, {}
    for name in names:
        values = [r.get(name) for r in rows]
        kinds = set()
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise InvalidRequest(f"input '{name}': row {i} is {v!r}: expected a number, a string or None")
            kinds.add("BYTES" if isinstance(v, str) else "FP64")
        if not kinds:
            continue  # only None: leave the input out (missing)
        if len(kinds) > 1:
            raise InvalidRequest(f"input '{name}': mixes numbers and strings across rows; send numbers for "
                                 "numeric features and strings for categorical/text ones")
        cols[name], types[name] = values, kinds.pop()
    if not cols:
        raise InvalidRequest("every field of every row is None: send at least one value")
    return cols, types


def quote_time_param(quote_time: datetime | str | None) -> str | None:
    if quote_time is None:
        return None
    if isinstance(quote_time, datetime):
        if quote_time.tzinfo is None:
            quote_time = quote_time.replace(tzinfo=timezone.utc)
        return quote_time.isoformat()
    return str(quote_time)


def v2_json(rows: Sequence[Mapping[str, Any]], quote_time: str | None = None,
            request_id: str | None = None, text_fields: Sequence[str] = (), reasons: bool = False) -> dict[str, Any]:
    """The V2 JSON body of a batch. `text_fields` (BYTES fields of the whole batch) are sent as ""
    even where this part of the batch has none of them, so that a row with no value at all
    still makes a valid request."""
    n = len(rows)
    if text_fields and all(all(r.get(k) is None for k in r) for r in rows):
        rows = [{text_fields[0]: ""} for _ in rows]
    cols, types = columns(rows)
    inputs = []
    for name, values in cols.items():
        if types[name] == "BYTES":
            values = ["" if v is None else v for v in values]
        inputs.append({"name": name, "shape": [n], "datatype": types[name], "data": values})
    body: dict[str, Any] = {"inputs": inputs}
    if quote_time:
        body["parameters"] = {"quote_time": quote_time}
    if reasons:  # the request parameter that adds the `reasons` output (docs/reasons.md)
        body.setdefault("parameters", {})["reasons"] = True
    if request_id:
        body["id"] = request_id
    return body


def groups_without_null_numbers(rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Row indices grouped so that no numeric field is None inside a group (gRPC's FP64 tensors
    cannot carry a null: rows missing different numeric fields go in separate requests)."""
    _, types = columns(rows)
    numeric = [n for n, t in types.items() if t == "FP64"]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        key = tuple(r.get(n) is None for n in numeric)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# ------------------------------------------------------------------ responses
def _outputs(body: Mapping[str, Any]) -> dict[str, list]:
    return {o["name"]: list(o["data"]) for o in body.get("outputs", [])}


def _reasons(out: Mapping[str, list], n: int) -> list:
    values = out.get("reasons")
    return [None] * n if values is None else [json.loads(r) if isinstance(r, str) else r for r in values]


def lead_scores(vertical: str, body: Mapping[str, Any]) -> list[LeadScore]:
    out = _outputs(body)
    version, rid = body.get("model_version"), body.get("id")
    try:
        reasons = _reasons(out, len(out["score"]))
        return [LeadScore(vertical=vertical, score=float(s), confidence=float(c), price=float(p), decision=str(d),
                          market_factors=json.loads(m) if isinstance(m, str) else dict(m), model_version=version,
                          request_id=rid, row=i, reasons=r)
                for i, (s, c, p, m, d, r) in enumerate(zip(out["score"], out["confidence"], out["price"],
                                                           out["market_factors"], out["decision"], reasons))]
    except KeyError as e:
        raise ServerError(f"{vertical}: the answer lacks output {e}; is this a lead-scoring model?") from None


def claim_triages(body: Mapping[str, Any]) -> list[ClaimTriage]:
    out = _outputs(body)
    version, rid = body.get("model_version"), body.get("id")
    try:
        reasons = _reasons(out, len(out["score"]))
        return [ClaimTriage(score=float(s), anomaly_score=float(a), settlement_estimate=float(e), decision=str(d),
                            model_version=version, request_id=rid, row=i, reasons=r)
                for i, (s, a, e, d, r) in enumerate(zip(out["score"], out["anomaly_score"], out["settlement_estimate"],
                                                        out["decision"], reasons))]
    except KeyError as e:
        raise ServerError(f"claims: the answer lacks output {e}") from None


def outcomes_body(results_and_outcomes) -> dict[str, Any]:
    """[(LeadScore | ClaimTriage, 0/1), ...] -> the body of POST /v2/models/<model>/outcomes."""
    items = []
    for result, outcome in results_and_outcomes:
        if not getattr(result, "request_id", None):
            raise InvalidRequest("an outcome needs the result of a scored request (its request_id)")
        if outcome not in (0, 1, True, False):
            raise InvalidRequest(f"outcome must be 1 (converted / approved) or 0, not {outcome!r}")
        items.append({"id": result.request_id, "row": result.row, "outcome": int(outcome)})
    if not items:
        raise InvalidRequest("no outcomes to send")
    return {"outcomes": items}


def chunks(rows: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def legacy(body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The old backends' REST body {"vertical": ..., "lead_data": {...}} -> (vertical, row)."""
    if not isinstance(body, Mapping) or "vertical" not in body:
        raise InvalidRequest('a score request is {"vertical": "auto", "lead_data": {...}}: "vertical" is missing')
    data = body.get("lead_data", body.get("claim_data"))
    if not isinstance(data, Mapping):
        raise InvalidRequest('a score request is {"vertical": "auto", "lead_data": {...}}: "lead_data" must be an '
                             "object of field -> value")
    return str(body["vertical"]), data
