"""V2 over HTTP (httpx): one POST /v2/models/<model>[/versions/<v>]/infer per batch."""

from __future__ import annotations

from typing import Any, Mapping

import httpx

from ._core import (InsuranceError, InvalidRequest, ModelNotFound, NOT_READY, ServerError, Timeout, Unavailable,
                    _Retryable)


def model_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


def infer_path(model: str, version: str | None) -> str:
    return model_path(model, version) + "/infer"


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"])
        if isinstance(body.get("detail"), list):  # FastAPI/pydantic 422: the failing location
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in body["detail"])
        if "detail" in body:
            return str(body["detail"])
    return str(body)[:500]


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return float(r.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def classify(model: str, r: httpx.Response) -> dict[str, Any]:
    """Return the JSON of a 200; raise the matching error (wrapped in _Retryable when worth a retry)."""
    if r.status_code == 200:
        return r.json()
    msg = _message(r)
    if r.status_code == 503:
        raise _Retryable(Unavailable(f"{model}: server unavailable (503): {msg}"), _retry_after(r))
    if r.status_code in (400, 422):
        if NOT_READY.search(msg):  # a version is (re)loading during a hot swap
            raise _Retryable(Unavailable(f"{model}: {msg}"))
        raise InvalidRequest(msg, r.status_code, model)
    if r.status_code == 404:
        raise ModelNotFound(f"{model}: {msg}")
    if r.status_code in (401, 403):
        raise InsuranceError(f"{model}: not authorised ({r.status_code}): {msg}")
    raise ServerError(f"{model}: server error {r.status_code}: {msg}")


def classify_json(model: str, r: httpx.Response) -> dict[str, Any]:
    """Like classify, without retry wrapping (for calls that are not retried)."""
    try:
        return classify(model, r)
    except _Retryable as e:
        raise e.error from None


def transport_error(model: str, e: httpx.HTTPError, timeout: float) -> Exception:
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                      httpx.WriteError, httpx.PoolTimeout)):
        return _Retryable(Unavailable(f"{model}: cannot reach the server: {type(e).__name__}: {e}"))
    if isinstance(e, httpx.TimeoutException):
        return Timeout(f"{model}: no answer within {timeout:g} s ({type(e).__name__})")
    return InsuranceError(f"{model}: {type(e).__name__}: {e}")


class HTTPTransport:
    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None,
                 client: httpx.Client | None = None):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.client = client or httpx.Client(base_url=self.url, timeout=timeout, headers=dict(headers or {}))

    def _send(self, model: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            r = self.client.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise transport_error(model, e, self.timeout) from e
        return classify(model, r)

    def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        return self._send(model, "GET", model_path(model, version))

    def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return self._send(model, "POST", infer_path(model, version), body)

    def close(self) -> None:
        self.client.close()


class AsyncHTTPTransport:
    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None,
                 client: httpx.AsyncClient | None = None):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.client = client or httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=dict(headers or {}))

    async def _send(self, model: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            r = await self.client.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise transport_error(model, e, self.timeout) from e
        return classify(model, r)

    async def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        return await self._send(model, "GET", model_path(model, version))

    async def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return await self._send(model, "POST", infer_path(model, version), body)

    async def close(self) -> None:
        await self.client.aclose()


__all__ = ["HTTPTransport", "AsyncHTTPTransport", "InvalidRequest"]
