"""Fixes of MLServer 1.7.1 behaviours found by the hostile-input tests (tests/security).

Installed once, each on its own, by runtime/patches.py (the one place every MLServer patch is
installed from, at server start-up and in every parallel worker). Each fix is small,
idempotent, tested, and touches MLServer (pinned at 1.7.1) only where its code reads a
module-level table, a class attribute or a classmethod at call time:

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
* The serving edge (issue 12; functions below): unknown models answered 404 before MLServer makes
  a metric series from their name (``known_models_first``), ``GET /v2`` naming this server
  (``server_metadata``), the protocol's ``{"error"}`` instead of FastAPI's 422/405 ``{"detail"}``
  (``oip_errors``), and an ordered shutdown (``clean_shutdown``).
* Typed ``contents`` responses: the response converter puts BYTES outputs into
  ``bytes_contents``, which refuses ``str``, so every request of a gRPC client that sends
  typed contents instead of raw ones (tritonclient sends raw) got INTERNAL "expected
  bytes, str found". BYTES output elements are encoded as UTF-8 there (REST is unchanged).
"""

from __future__ import annotations

import struct

from mlserver.errors import MLServerError


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
    """All of runtime/patches.py (kept for callers that import this module's name)."""
    from . import patches

    patches.install()


def _status_codes() -> None:
    import grpc
    from mlserver.grpc import utils

    utils.STATUS_CODE_MAPPING.setdefault(401, grpc.StatusCode.UNAUTHENTICATED)
    utils.STATUS_CODE_MAPPING.setdefault(403, grpc.StatusCode.PERMISSION_DENIED)
    utils.STATUS_CODE_MAPPING.setdefault(413, grpc.StatusCode.RESOURCE_EXHAUSTED)
    utils.STATUS_CODE_MAPPING.setdefault(503, grpc.StatusCode.UNAVAILABLE)


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


# ---- the serving edge (issue 12): installed by runtime/patches.py ---------------------------------

def known_models_first() -> None:
    """DataPlane._infer_contextmanager makes the model_infer_request_* series from the name and version
    in the URL / message before it looks the model up, and never drops them: any caller grew /metrics
    without bound. The model is resolved first (404 ModelNotFound otherwise), so label values only ever
    come from loaded models."""
    from mlserver.handlers.dataplane import DataPlane

    original = DataPlane._infer_contextmanager
    if getattr(original, "_insurance_known_first", False):
        return

    def _infer_contextmanager(self, name, version=None):
        return _KnownFirst(self, original, name, version)

    _infer_contextmanager._insurance_known_first = True
    DataPlane._infer_contextmanager = _infer_contextmanager


class _KnownFirst:
    """An async context manager: look the model up (404 before any metric), then MLServer's."""

    def __init__(self, data_plane, original, name, version):
        self.data_plane, self.original, self.name, self.version = data_plane, original, name, version
        self.inner = None

    async def __aenter__(self):
        await self.data_plane._model_registry.get_model(self.name, self.version)  # ModelNotFound: 404
        self.inner = self.original(self.data_plane, self.name, self.version)
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc):
        return await self.inner.__aexit__(*exc)


SERVER_NAME = "insurance-serving"


def server_metadata() -> None:
    """GET /v2 (and gRPC ServerMetadata) answers MLServer's defaults, name "mlserver" and MLServer's own
    version: unless the operator set another name or version, it names this server and its version."""
    from importlib.metadata import PackageNotFoundError, version

    from mlserver.handlers.dataplane import DataPlane
    from mlserver.types import MetadataServerResponse

    original = DataPlane.metadata
    if getattr(original, "_insurance_named", False):
        return
    try:
        own = version(SERVER_NAME)
    except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
        own = "0+unknown"

    import mlserver

    async def metadata(self):
        meta = await original(self)
        # a name and version the operator set stay; MLServer's defaults (or only our name) become ours
        if self._settings.server_name in ("mlserver", SERVER_NAME) and meta.version == mlserver.__version__:
            meta = MetadataServerResponse(name=SERVER_NAME, version=own, extensions=meta.extensions)
        return meta

    metadata._insurance_named = True
    DataPlane.metadata = metadata


def oip_errors(app) -> None:
    """FastAPI answers a body that fails MLServer's schema with 422 {"detail": [...]} (echoing the input)
    and a wrong method with 405 {"detail": ...}; the Open Inference Protocol's error object is
    {"error": "<message>"}. Installs handlers on MLServer's REST app: 400 naming the fields, 404/405 with
    {"error"} (the 405 keeps its Allow header), and an unexpected 500 as {"error"} instead of plain text."""
    from fastapi.exceptions import RequestValidationError
    from mlserver.rest.responses import Response
    from starlette.exceptions import HTTPException

    if getattr(app, "_insurance_oip_errors", False):
        return

    async def invalid(request, exc: RequestValidationError):
        return Response(status_code=400, content={"error": describe(exc.errors())})

    async def http_error(request, exc: HTTPException):
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path[:200]}"
            allow = (exc.headers or {}).get("Allow")
            if allow:
                message += f"; allowed: {allow}"
        elif exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path[:200]}"
        else:
            message = str(exc.detail)
        return Response(status_code=exc.status_code, content={"error": message}, headers=exc.headers)

    async def internal(request, exc: Exception):  # the details stay in the log (Starlette logs the traceback)
        return Response(status_code=500, content={"error": "internal server error"})

    app.exception_handlers[RequestValidationError] = invalid
    app.exception_handlers[HTTPException] = http_error
    app.exception_handlers[Exception] = internal
    app.middleware_stack = None  # rebuilt with these handlers on the next request
    app._insurance_oip_errors = True


def describe(errors) -> str:
    """pydantic/FastAPI validation errors -> one message naming the fields, never echoing the input."""
    problems = []
    for err in errors[:3]:
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            problems.append(f"body: invalid JSON ({err.get('ctx', {}).get('error', 'cannot be parsed')})")
            continue
        problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(problems) + more


def clean_shutdown() -> None:
    """MLServer.stop() closes the parallel workers' pool first, while the gRPC server (and, until uvicorn's
    own SIGTERM handling has closed it, the REST server) still take requests: each answered 500. Its
    InferencePool._close_workers iterates the worker dict while the workers' exit callbacks shrink it
    ("dictionary changed size during iteration"), and once the servers have returned asyncio.run cancels
    a half-done pool close whose reader thread then blocks the exit: the process kept running. Now:
    readiness drops and new inferences get 503 (gRPC UNAVAILABLE); the REST listener closes and its
    connections close after their answer; once no inference is in flight the pool closes; then the
    gRPC server (MLServer's 5 s grace), the REST and the metrics servers stop. Each step is guarded."""
    import asyncio

    from mlserver.handlers.dataplane import DataPlane
    from mlserver.parallel.pool import InferencePool
    from mlserver.server import MLServer

    if getattr(MLServer.stop, "_insurance_ordered", False):
        return

    async def stop(self, sig=None):
        if getattr(self, "_insurance_stopping", False):
            return
        self._insurance_stopping = True
        _STOPPING[0] = True
        rest, grpc_server = self._rest_server, self._grpc_server
        await _guarded([("REST requests in flight", _drain_rest(rest) if rest else None),
                        ("inferences in flight", _no_inference_in_flight())])
        await _guarded([("inference pool", self._inference_pool_registry.close()
                         if self._inference_pool_registry else None)])
        await _guarded([("Kafka server", self._kafka_server.stop() if self._kafka_server else None)])
        await _guarded([("gRPC server", grpc_server.stop(sig) if grpc_server else None),
                        ("REST server", rest.stop(sig) if rest else None)])
        await _guarded([("metrics server", self._metrics_server.stop(sig) if self._metrics_server else None)])

    async def _close_workers(self):
        for pid, worker in list(self._workers.items()):
            await worker.stop()
            worker.join(self._settings.parallel_workers_timeout)
            if worker.exitcode is None:
                worker.kill()
            await asyncio.gather(*[callback(worker) for callback in self._on_worker_stop])
        self._workers.clear()

    ready, infer = DataPlane.ready, DataPlane.infer

    async def ready_unless_stopping(self):
        return False if _STOPPING[0] else await ready(self)

    async def infer_unless_stopping(self, *args, **kwargs):
        if _STOPPING[0]:
            raise ServerStopping()
        _IN_FLIGHT[0] += 1
        try:
            return await infer(self, *args, **kwargs)
        finally:
            _IN_FLIGHT[0] -= 1

    stop._insurance_ordered = True
    MLServer.stop = stop
    InferencePool._close_workers = _close_workers
    DataPlane.ready = ready_unless_stopping
    DataPlane.infer = infer_unless_stopping


class ServerStopping(MLServerError):
    """503 (gRPC UNAVAILABLE): the server is shutting down; retry on another replica."""

    def __init__(self):
        super().__init__("the server is shutting down; retry on another replica", status_code=503)


_IN_FLIGHT = [0]


async def _no_inference_in_flight() -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    while _IN_FLIGHT[0] > 0 and loop.time() < deadline:
        await asyncio.sleep(0.02)


_STOPPING = [False]
#: Longest wait for REST requests in flight at shutdown (Kubernetes' default grace period is 30 s).
DRAIN_SECONDS = 20.0


async def _guarded(steps) -> None:
    import asyncio
    import logging

    steps = [(name, step) for name, step in steps if step is not None]
    results = await asyncio.gather(*(step for _, step in steps), return_exceptions=True)
    for (name, _), result in zip(steps, results):
        if isinstance(result, BaseException):
            logging.getLogger("mlserver.insurance").warning("shutdown: %s failed (%s: %s); going on", name,
                                                           type(result).__name__, result)


async def _drain_rest(rest) -> None:
    """What uvicorn's own shutdown does first, while its serve() keeps running: close the listener, let
    each connection close after its current answer, wait until none is left (bounded)."""
    import asyncio

    server = getattr(rest, "_server", None)
    state = getattr(server, "server_state", None)
    if server is None or state is None:
        return
    for listener in getattr(server, "servers", ()):
        listener.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    while loop.time() < deadline:
        for connection in list(state.connections):
            connection.shutdown()
        if not state.tasks and not state.connections:
            return
        await asyncio.sleep(0.05)
