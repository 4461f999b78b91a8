"""The clients: `InsuranceClient` (sync) and `AsyncInsuranceClient` (asyncio), same methods."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import datetime
from typing import Any, Mapping, Sequence

from ._core import (CLAIMS, SCORE, TRIAGE, ClaimTriage, InsuranceError, LeadScore, Retry, _Retryable, check_task,
                    chunks, claim_triages, groups_without_null_numbers, lead_scores, legacy, outcomes_body,
                    quote_time_param, task_of, v2_json)

DEFAULT_TIMEOUT = 10.0
DEFAULT_BATCH_SIZE = 1000
PROTOCOLS = ("http", "grpc")

Row = Mapping[str, Any]


def _text_fields(protocol: str, rows: Sequence[Row]) -> list[str]:
    if protocol != "grpc":
        return []
    from ._core import columns

    return [k for k, t in columns(rows)[1].items() if t == "BYTES"]


def _plan(protocol: str, rows: Sequence[Row], batch_size: int) -> list[list[int]]:
    """Index lists, one per request, in row order after reassembly."""
    plans = []
    for chunk_start in range(0, len(rows), batch_size):
        idx = list(range(chunk_start, min(chunk_start + batch_size, len(rows))))
        if protocol == "grpc":
            part = [rows[i] for i in idx]
            plans += [[idx[j] for j in group] for group in groups_without_null_numbers(part)]
        else:
            plans.append(idx)
    return plans


class _Base:
    def __init__(self, url: str, *, protocol: str = "http", timeout: float = DEFAULT_TIMEOUT,
                 retry: Retry | None = None, headers: Mapping[str, str] | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, seed: int | None = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        self.url, self.protocol, self.timeout = url, protocol, timeout
        self.retry = retry or Retry()
        self.headers = dict(headers or {})
        self.batch_size = batch_size
        self._rng = random.Random(seed)
        self.retries_made = 0  # total retries, for callers that want to see them
        self._tasks: dict[str, str] = {}  # model -> SCORE | TRIAGE, learnt from its metadata once

    @staticmethod
    def _decode(model: str, task: str, body: dict[str, Any]) -> list:
        return claim_triages(body) if task == TRIAGE else lead_scores(model, body)


class InsuranceClient(_Base):
    """Scores leads and triages claims over V2 (HTTP by default, ``protocol="grpc"`` optional).

    ``url``: ``http://host:8080`` (HTTP) or ``host:8081`` (gRPC). ``timeout`` in seconds per
    request; ``retry`` the policy for connection errors, 503 and a reloading model;
    ``headers`` extra HTTP headers / gRPC metadata (e.g. an API key). Use as a context manager
    or call ``close()``."""

    def __init__(self, url: str = "http://127.0.0.1:8080", **kwargs: Any):
        super().__init__(url, **kwargs)
        if self.protocol == "grpc":
            from ._grpc import GRPCTransport

            self._t = GRPCTransport(url, self.timeout, self.headers)
        else:
            from ._http import HTTPTransport

            self._t = HTTPTransport(url, self.timeout, self.headers)

    def __enter__(self) -> "InsuranceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._t.close()

    def _call(self, send, *args: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return send(*args)
            except _Retryable as r:
                if attempt >= self.retry.attempts:
                    raise r.error from None
                time.sleep(self.retry.delay(attempt, r.retry_after, self._rng))
                attempt += 1
                self.retries_made += 1

    def _task(self, model: str, version: str | None, wanted: str) -> str:
        task = self._tasks.get(model)
        if task is None:
            task = self._tasks[model] = task_of(model, self._call(self._t.model_metadata, model, version))
        check_task(model, task, wanted)
        return task

    def _run(self, model: str, rows: Sequence[Row], version: str | None, quote_time, wanted: str,
             reasons: bool = False) -> list:
        rows = list(rows)
        task = self._task(model, version, wanted)
        qt = quote_time_param(quote_time)
        out: list = [None] * len(rows)
        text = _text_fields(self.protocol, rows)
        for idx in _plan(self.protocol, rows, self.batch_size):
            body = v2_json([rows[i] for i in idx], qt, request_id=uuid.uuid4().hex, text_fields=text, reasons=reasons)
            for i, result in zip(idx, self._decode(model, task, self._call(self._t.infer, model, version, body))):
                out[i] = result
        return out

    def score(self, vertical: str, lead_data: Row, *, version: str | None = None,
              quote_time: datetime | str | None = None, reasons: bool = False) -> LeadScore:
        """Score one lead with a lead-scoring model (auto, home, health, life: whatever the server serves).
        ``reasons=True``: also the features that pushed the score up or down (``LeadScore.reasons``,
        docs/reasons.md)."""
        return self._run(vertical, [lead_data], version, quote_time, SCORE, reasons)[0]

    def score_many(self, vertical: str, leads: Sequence[Row], *, version: str | None = None,
                   quote_time: datetime | str | None = None, reasons: bool = False) -> list[LeadScore]:
        """Score many leads, in batches of ``batch_size`` rows per request; results in input order."""
        return self._run(vertical, leads, version, quote_time, SCORE, reasons)

    def triage(self, claim: Row, *, version: str | None = None, model: str = CLAIMS,
               reasons: bool = False) -> ClaimTriage:
        """Triage one claim with a claims-triage model (``claims`` unless named); ``reasons`` as for score."""
        return self._run(model, [claim], version, None, TRIAGE, reasons)[0]

    def triage_many(self, claims: Sequence[Row], *, version: str | None = None,
                    model: str = CLAIMS, reasons: bool = False) -> list[ClaimTriage]:
        return self._run(model, claims, version, None, TRIAGE, reasons)

    def report_outcomes(self, model: str, outcomes) -> dict[str, Any]:
        """Send ground truth for earlier results: ``[(LeadScore | ClaimTriage, 1 or 0), ...]``
        (1 = converted / approved). HTTP only (POST /v2/models/<model>/outcomes); feeds the live
        ROC-AUC of ``ml_model_performance{source="live"}``. Returns the server's answer."""
        if self.protocol != "http":
            raise InsuranceError("report_outcomes needs the HTTP protocol (MLServer has no gRPC route for it)")
        from ._http import classify_json, transport_error
        import httpx

        try:
            r = self._t.client.post(f"/v2/models/{model}/outcomes", json=outcomes_body(outcomes))
        except httpx.HTTPError as e:
            raise getattr(transport_error(model, e, self.timeout), "error", transport_error(model, e, self.timeout))
        return classify_json(model, r)

    def score_request(self, body: Mapping[str, Any], **kwargs: Any) -> LeadScore | ClaimTriage:
        """The old REST call shape: ``{"vertical": "auto", "lead_data": {...}}`` (a claims-triage model: triaged)."""
        vertical, row = legacy(body)
        if self._task(vertical, kwargs.get("version"), "") == TRIAGE:
            return self.triage(row, version=kwargs.get("version"), model=vertical)
        return self.score(vertical, row, **kwargs)


class AsyncInsuranceClient(_Base):
    """The asyncio form of `InsuranceClient`: the same methods, awaited; ``score_many`` sends its
    batches concurrently (at most ``concurrency`` at a time)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", *, concurrency: int = 4, **kwargs: Any):
        super().__init__(url, **kwargs)
        self.concurrency = concurrency
        if self.protocol == "grpc":
            from ._grpc import AsyncGRPCTransport

            self._t = AsyncGRPCTransport(url, self.timeout, self.headers)
        else:
            from ._http import AsyncHTTPTransport

            self._t = AsyncHTTPTransport(url, self.timeout, self.headers)

    async def __aenter__(self) -> "AsyncInsuranceClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._t.close()

    async def _call(self, send, *args: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await send(*args)
            except _Retryable as r:
                if attempt >= self.retry.attempts:
                    raise r.error from None
                await asyncio.sleep(self.retry.delay(attempt, r.retry_after, self._rng))
                attempt += 1
                self.retries_made += 1

    async def _task(self, model: str, version: str | None, wanted: str) -> str:
        task = self._tasks.get(model)
        if task is None:
            task = self._tasks[model] = task_of(model, await self._call(self._t.model_metadata, model, version))
        check_task(model, task, wanted)
        return task

    async def _run(self, model: str, rows: Sequence[Row], version: str | None, quote_time, wanted: str,
                   reasons: bool = False) -> list:
        rows = list(rows)
        task = await self._task(model, version, wanted)
        qt = quote_time_param(quote_time)
        out: list = [None] * len(rows)
        gate = asyncio.Semaphore(self.concurrency)
        text = _text_fields(self.protocol, rows)

        async def one(idx: list[int]) -> None:
            async with gate:
                body = await self._call(self._t.infer, model, version,
                                        v2_json([rows[i] for i in idx], qt, request_id=uuid.uuid4().hex,
                                                text_fields=text, reasons=reasons))
            for i, result in zip(idx, self._decode(model, task, body)):
                out[i] = result

        await asyncio.gather(*(one(idx) for idx in _plan(self.protocol, rows, self.batch_size)))
        return out

    async def score(self, vertical: str, lead_data: Row, *, version: str | None = None,
                    quote_time: datetime | str | None = None, reasons: bool = False) -> LeadScore:
        return (await self._run(vertical, [lead_data], version, quote_time, SCORE, reasons))[0]

    async def score_many(self, vertical: str, leads: Sequence[Row], *, version: str | None = None,
                         quote_time: datetime | str | None = None, reasons: bool = False) -> list[LeadScore]:
        return await self._run(vertical, leads, version, quote_time, SCORE, reasons)

    async def triage(self, claim: Row, *, version: str | None = None, model: str = CLAIMS,
                     reasons: bool = False) -> ClaimTriage:
        return (await self._run(model, [claim], version, None, TRIAGE, reasons))[0]

    async def triage_many(self, claims: Sequence[Row], *, version: str | None = None,
                          model: str = CLAIMS, reasons: bool = False) -> list[ClaimTriage]:
        return await self._run(model, claims, version, None, TRIAGE, reasons)

    async def score_request(self, body: Mapping[str, Any], **kwargs: Any) -> LeadScore | ClaimTriage:
        vertical, row = legacy(body)
        if await self._task(vertical, kwargs.get("version"), "") == TRIAGE:
            return await self.triage(row, version=kwargs.get("version"), model=vertical)
        return await self.score(vertical, row, **kwargs)


__all__ = ["InsuranceClient", "AsyncInsuranceClient", "chunks"]
