"""Fixes of MLServer 1.7.1's gRPC layer found by the hostile-input tests (tests/security).

Installed once by ``runtime.model`` at import, i.e. in the server process as soon as it
instantiates the runtime (before it serves a request), and in every parallel worker. Each
fix is small, idempotent, tested, and touches MLServer (pinned at 1.7.1) only where its
code reads a module-level table or a classmethod at call time:

* gRPC status codes: ``mlserver.grpc.utils.STATUS_CODE_MAPPING`` maps only 400, 404, 422
  and 500 and falls back to UNKNOWN; add 401 -> UNAUTHENTICATED, 403 -> PERMISSION_DENIED,
  413 -> RESOURCE_EXHAUSTED.
* Malformed ``raw_input_contents`` (a buffer shorter than the declared shape needs, a BYTES
  length prefix past the end, a datatype MLServer does not know such as BF16) made the
  request converter raise struct.error / ValueError, answered as INTERNAL. They are the
  client's error: INVALID_ARGUMENT with the reason. The converter checks the buffer size
  against the shape before unpacking, so a shape of [2147483648] allocates nothing.
* REST ``infer_stream`` / ``generate_stream``: MLServer returns a StreamingResponse before
  the model runs, so any error (401, 400, 404) surfaced after the status line and the client
  got a bare 500. The first chunk is now produced before the response starts: an MLServer
  error becomes its own status with ``{"error": ...}`` like ``/infer``.
* Typed ``contents`` responses: the response converter puts BYTES outputs into
  ``bytes_contents``, which refuses ``str``, so every request of a gRPC client that sends
  typed contents instead of raw ones (tritonclient sends raw) got INTERNAL "expected
  bytes, str found". BYTES output elements are encoded as UTF-8 there (REST is unchanged).
"""

from __future__ import annotations

import struct

from mlserver.errors import MLServerError

_INSTALLED = False


class InvalidRequest(MLServerError):
    """400 (gRPC INVALID_ARGUMENT) for a request MLServer could not even convert."""

    def __init__(self, msg: str):
        super().__init__(msg, status_code=400)


#: What unpacking a malformed request raises (struct sizes, unknown datatypes, bad UTF-8, ...).
MALFORMED = (struct.error, ValueError, TypeError, IndexError, OverflowError, UnicodeDecodeError)


def malformed(error: BaseException) -> InvalidRequest:
    """The 400 for a request that could not be read, naming what went wrong (bounded in size)."""
    return InvalidRequest(f"malformed request: {type(error).__name__}: {str(error)[:200]}")


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    _status_codes()
    _request_converter()
    _bytes_outputs()
    _rest_stream_errors()


def _status_codes() -> None:
    import grpc
    from mlserver.grpc import utils

    utils.STATUS_CODE_MAPPING.setdefault(401, grpc.StatusCode.UNAUTHENTICATED)
    utils.STATUS_CODE_MAPPING.setdefault(403, grpc.StatusCode.PERMISSION_DENIED)
    utils.STATUS_CODE_MAPPING.setdefault(413, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _request_converter() -> None:
    from mlserver.grpc.converters import ModelInferRequestConverter

    original = ModelInferRequestConverter.to_types.__func__

    def to_types(cls, pb_object):
        try:
            return original(cls, pb_object)
        except MALFORMED as e:
            raise malformed(e) from e

    ModelInferRequestConverter.to_types = classmethod(to_types)


def _bytes_outputs() -> None:
    from mlserver.grpc.converters import InferTensorContentsConverter
    from mlserver.types import Datatype

    original = InferTensorContentsConverter._get_contents.__func__

    def _get_contents(cls, type_object, datatype):
        if datatype == Datatype.BYTES:
            data = getattr(type_object, "root", type_object)
            if isinstance(data, list) and any(isinstance(v, str) for v in data):
                type_object = [v.encode("utf-8") if isinstance(v, str) else v for v in data]
        return original(cls, type_object, datatype)

    InferTensorContentsConverter._get_contents = classmethod(_get_contents)


def _rest_stream_errors() -> None:
    from mlserver.rest import endpoints
    from mlserver.rest.responses import Response
    from starlette.requests import ClientDisconnect

    base = endpoints.StreamingResponse
    if getattr(base, "_insurance_prefetch", False):
        return

    class PrefetchingStreamingResponse(base):
        _insurance_prefetch = True

        async def __call__(self, scope, receive, send):
            body = self.body_iterator
            try:
                first = await body.__anext__()
            except StopAsyncIteration:
                first = None
            except MLServerError as e:
                await Response(status_code=e.status_code, content={"error": str(e)})(scope, receive, send)
                return

            async def chained():
                if first is not None:
                    yield first
                async for chunk in body:
                    yield chunk

            # Stream the rest from this task, as starlette does for ASGI >= 2.4: the generator holds
            # MLServer's model context (contextvars) entered above, which must exit in the same task.
            self.body_iterator = chained()
            try:
                await self.stream_response(send)
            except OSError:
                raise ClientDisconnect() from None
            if self.background is not None:
                await self.background()

    endpoints.StreamingResponse = PrefetchingStreamingResponse
