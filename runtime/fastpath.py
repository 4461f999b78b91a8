"""The runtime's own request path for V2 ``infer`` of its models (REST and gRPC): MLServer's generic
path costs more than the model itself, so this one answers what it can, exactly as MLServer would.

How it hooks into MLServer, what it takes and what it leaves to MLServer, and its measurements:
docs/performance.md ("The runtime's request path"); tests/test_request_path.py compares both paths.
Installed by runtime/patches.py only after ``missing_names()`` found nothing missing; any unexpected
error inside it hands that request to MLServer's path (``ml_fast_path_fallbacks_total``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Optional

import orjson
from mlserver.cloudevents import CloudEventsMiddleware, CloudEventsTypes
from mlserver.context import model_context
from mlserver.errors import MLServerError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.utils import to_metadata
from mlserver.types import Datatype
from mlserver.utils import generate_uuid
from starlette.routing import BaseRoute, Match, NoMatchFound

from . import codec
from .auth import grpc_headers
from .edge import TooLarge, read_body, replay
from .hardening import MALFORMED, InvalidRequest, malformed

logger = logging.getLogger("mlserver.insurance.fastpath")

_DATATYPES = frozenset(d.value for d in Datatype)
_OWN_PARAMETERS = ("content_type", "headers")  # declared fields of MLServer's Parameters: not model_extra
_BATCHING = "__adaptive_batching__"  # set on a model by MLServer's load_batching


class Tensor:
    """One request input: what MLServer's RequestInput holds, as plain values."""

    __slots__ = ("name", "datatype", "shape", "data")

    def __init__(self, name: str, datatype: str, shape: list, data: Any):
        self.name, self.datatype, self.shape, self.data = name, datatype, shape, data


class Request:
    """An inference request as plain values: ``parameters`` are the request parameters other
    than content_type / headers (pydantic's model_extra), ``outputs`` the requested output names
    (None: all)."""

    __slots__ = ("id", "inputs", "parameters", "outputs")

    def __init__(self, id: Optional[str], inputs: list, parameters: Optional[dict], outputs: Optional[list]):
        self.id, self.inputs, self.parameters, self.outputs = id, inputs, parameters, outputs


# ---- which requests this path takes -----------------------------------------------------------

def fast_model(data_plane: Any, name: str, version: Optional[str]) -> Any:
    """The loaded, ready InsuranceModel that answers (name, version) as MLServer's registry resolves
    it, when this path may serve it; else None (MLServer's path answers)."""
    registry = data_plane._model_registry._models.get(name)
    if registry is None:
        return None
    model = registry._find_model(version)
    if model is None or not model.ready or getattr(model, "infer_plain", None) is None:
        return None
    options = getattr(model, "options", None)
    if options is None or not options.fast_path or getattr(model, "monitoring", None) is None:
        return None
    if hasattr(model, _BATCHING):
        return None
    if data_plane._response_cache is not None and model.settings.cache_enabled is not False:
        return None
    return model


def _middlewares_known(data_plane: Any) -> bool:
    return all(isinstance(m, CloudEventsMiddleware) for m in data_plane._inference_middleware._middlewares)


_children: dict = {}  # (data plane, model, version) -> MLServer's duration, failure, success series


def infer(data_plane: Any, model: Any, name: str, version: Optional[str], request: Request,
          headers: dict, generate_id: bool) -> tuple[dict, int, dict, list]:
    """DataPlane.infer's bookkeeping around InsuranceModel.infer_plain: MLServer's request metrics,
    the model context, the request id; returns the CloudEvents response headers and the outputs."""
    key = (id(data_plane), name, version)
    children = _children.get(key)
    if children is None:  # MLServer never removes these series: the children stay valid
        children = _children[key] = (data_plane._ModelInferRequestDuration.labels(model=name, version=version),
                                     data_plane._ModelInferRequestFailure.labels(model=name, version=version),
                                     data_plane._ModelInferRequestSuccess.labels(model=name, version=version))
        if len(_children) > 10_000:  # names and versions come from URLs: bounded
            _children.clear()
    duration, failure, success = children
    with duration.time(), failure.count_exceptions():
        with model_context(model.settings):
            if request.id is None and generate_id:
                request.id = generate_uuid()
            n, outputs, names = model.infer_plain(request, headers)
        success.inc()
    ce: dict = {}
    for middleware in data_plane._inference_middleware._middlewares:
        ce.update(middleware._get_headers(CloudEventsTypes.Response, model.settings, request.id))
    return ce, n, outputs, names


# ---- REST ---------------------------------------------------------------------------------------

def _parameters(value: Any) -> Any:
    """model_extra of a Parameters object as MLServer would build it; False if pydantic would refuse it."""
    if value is None:
        return None
    if value.__class__ is not dict:
        return False
    ct = value.get("content_type")
    headers = value.get("headers")
    if (ct is not None and ct.__class__ is not str) or (headers is not None and headers.__class__ is not dict):
        return False
    return {k: v for k, v in value.items() if k not in _OWN_PARAMETERS}


def from_json(obj: Any) -> Optional[Request]:
    """A parsed V2 JSON body -> Request; None when it is not exactly what MLServer's InferenceRequest
    accepts as is (MLServer's path then answers, with its own 422 where it refuses it)."""
    if obj.__class__ is not dict:
        return None
    inputs = obj.get("inputs")
    rid = obj.get("id")
    if inputs.__class__ is not list or (rid is not None and rid.__class__ is not str):
        return None
    parameters = _parameters(obj.get("parameters"))
    if parameters is False:
        return None
    tensors = []
    for inp in inputs:
        if inp.__class__ is not dict or "data" not in inp:
            return None
        name, datatype, shape = inp.get("name"), inp.get("datatype"), inp.get("shape")
        if name.__class__ is not str or datatype.__class__ is not str or datatype not in _DATATYPES \
                or shape.__class__ is not list:
            return None
        for d in shape:
            if d.__class__ is not int:
                return None
        if inp.get("parameters") is not None and _parameters(inp["parameters"]) is False:
            return None
        tensors.append(Tensor(name, datatype, shape, inp["data"]))
    wanted = None
    outputs = obj.get("outputs")
    if outputs is not None:
        if outputs.__class__ is not list:
            return None
        wanted = []
        for out in outputs:
            if out.__class__ is not dict or out.get("name").__class__ is not str \
                    or _parameters(out.get("parameters")) is False:
                return None
            wanted.append(out["name"])
    return Request(rid, tensors, parameters, wanted or None)


UNVERSIONED = "/v2/models/{model_name}/infer"
VERSIONED = "/v2/models/{model_name}/versions/{model_version}/infer"


def _target(path: str, versioned: bool) -> Optional[tuple[str, Optional[str]]]:
    """(model name, version) of /v2/models/<name>/infer or /v2/models/<name>/versions/<v>/infer."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    parts = path[11:-6].split("/")
    if not versioned:
        return (parts[0], None) if len(parts) == 1 and parts[0] else None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class RestInfer(BaseRoute):
    """POST /v2/models/<name>/infer (or, `versioned`, .../versions/<v>/infer) for the models this
    path takes; every other request to that path goes on to MLServer's route. ``path`` is the route
    template, which starlette_exporter reports as the ``path`` label like MLServer's own route."""

    endpoint = None  # read by MLServer's custom-handler bookkeeping (mlserver.rest.utils.matches)

    def __init__(self, app: Any, data_plane: Any, versioned: bool):
        self.app, self.data_plane, self.versioned = app, data_plane, versioned
        self.path = VERSIONED if versioned else UNVERSIONED

    def matches(self, scope: dict) -> tuple[Match, dict]:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("insurance_declined"):
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            target = _target(path, self.versioned)
            if target is not None:
                return Match.FULL, {"insurance_target": target, "endpoint": self.handle}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **params: Any) -> Any:
        raise NoMatchFound(name, params)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        await self.answer(scope, receive, send, self._mlserver, None)

    async def answer(self, scope: dict, receive: Any, send: Any, delegate: Any, gzip_middleware: Optional[int]
                     ) -> None:
        """Answer the request, or hand it to `delegate` (MLServer's way) untouched or replayed."""
        state = _Progress()
        try:
            return await self._handle(scope, receive, send, state, delegate, gzip_middleware)
        except ConnectionAbortedError:  # the client left: nobody to answer
            return
        except Exception as e:  # a fault of this path: MLServer's answers instead (never a 500 of ours)
            if state.answering or state.delegated:
                raise
            fell_back(e, self.data_plane, *scope["insurance_target"])
            return await delegate(scope, replay(state.body, receive) if state.body is not None else receive, send)

    async def _handle(self, scope: dict, receive: Any, send: Any, state: "_Progress", delegate: Any,
                      gzip_middleware: Optional[int]) -> None:
        name, version = scope["insurance_target"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        model = fast_model(self.data_plane, name, version)
        if model is None or not _middlewares_known(self.data_plane) \
                or "content-encoding" in headers or not _json_content(headers.get("content-type")):
            state.delegated = True
            return await delegate(scope, receive, send)
        limit = model.options.max_request_bytes  # the model's own, within the edge's server-wide one
        try:
            body = state.body = await read_body(receive, limit, headers.get("content-length"))
        except TooLarge as e:
            close = () if e.drained else (("connection", "close"),)
            state.answering = True
            return await _send(send, 413, orjson.dumps({"error": str(e)}), close)
        # resolved again after the last await: a reload or unload may have happened meanwhile
        model = fast_model(self.data_plane, name, version)
        try:
            request = from_json(orjson.loads(body)) if model is not None else None
        except orjson.JSONDecodeError:
            request = None
        if request is None:
            state.delegated = True
            return await delegate(scope, replay(body, receive), send)
        model.monitoring.fast_path_served()
        try:
            ce, n, outputs, names = infer(self.data_plane, model, name, version, request, headers, True)
        except MLServerError as e:  # headers: e.g. Retry-After of a 429 (runtime/ratelimit.py)
            state.answering = True
            return await _send(send, e.status_code, orjson.dumps({"error": str(e)}), getattr(e, "headers", ()))
        body, extra = codec.json_response(model, request.id, n, outputs, names, ce, headers, model.options.gzip_level,
                                          gzip_middleware)
        state.answering = True
        await _send(send, 200, body, extra)

    async def _mlserver(self, scope: dict, receive: Any, send: Any) -> None:
        for route in self.app.router.routes:
            if isinstance(route, RestInfer):
                continue
            match, child = route.matches(scope)
            if match == Match.FULL:
                scope.update(child)
                return await route.handle(scope, receive, send)


class _Progress:
    """How far a REST request got on this path: the body read, handed to MLServer, answer started."""

    __slots__ = ("body", "delegated", "answering")

    def __init__(self):
        self.body: Optional[bytes] = None
        self.delegated = self.answering = False


_fallback_logged: set = set()


def fell_back(error: BaseException, data_plane: Any, name: str, version: Optional[str]) -> None:
    """Count (and log once per error type) a request handed to MLServer's path after an unexpected error."""
    key = type(error).__name__
    if key not in _fallback_logged and len(_fallback_logged) < 100:
        _fallback_logged.add(key)
        logger.error("the runtime's request path failed (%s); this request and any like it take MLServer's path",
                     key, exc_info=error)
    try:
        registry = data_plane._model_registry._models.get(name)
        model = registry._find_model(version) if registry is not None else None
        if model is not None:  # label values only from a loaded model
            from .metrics import families

            families().fast_path_fallbacks.labels(model.name, model.version or "").inc()
    except Exception:  # counting must not fail the request
        logger.debug("ml_fast_path_fallbacks_total not counted", exc_info=True)


def _json_content(content_type: Optional[str]) -> bool:
    """A body FastAPI reads as JSON: no Content-Type, or application/json (application/*+json too,
    but those few take MLServer's path)."""
    return content_type is None or content_type.partition(";")[0].strip().lower() == "application/json"


async def _send(send: Any, status: int, body: bytes, extra: Any) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_route(app: Any, data_plane: Any) -> None:
    """Put the two routes first in the REST app (once)."""
    routes = app.router.routes
    if not any(isinstance(r, RestInfer) for r in routes):
        routes[0:0] = [RestInfer(app, data_plane, False), RestInfer(app, data_plane, True)]


# ---- in front of the REST app's middleware ------------------------------------------------------

class Front:
    """The REST routes' answers given in front of the app's middleware (runtime/edge.py puts it in
    the app's place; it passes on everything but the POSTs its routes take): that stack (Starlette's
    error and exception layers, starlette_exporter's metrics, GZip) costs more per request than the
    runtime's whole path. Taken only when the stack is exactly what MLServer 1.7.1 builds (metrics,
    GZip; no CORS, no tracing, no other middleware) and the metrics middleware has MLServer's
    options; then what those layers would do to the answer is done here: the `rest_server_*` series
    on the same metric objects, `Vary` and compression as the GZip middleware. Anything the route
    hands on goes through the whole app, the route stepping aside."""

    def __init__(self, app: Any):
        self.app = app
        self.plan: Any = None  # None: not checked yet; False: the stack is not the known one
        self._progress: Any = None  # the in-progress gauge's child
        self._series: dict = {}  # (route path, status) -> the request counter's and histogram's children

    def _check(self) -> Any:
        from fastapi.middleware.gzip import GZipMiddleware
        from starlette_exporter import PrometheusMiddleware

        metrics, gzip_level = None, None
        for m in self.app.user_middleware:
            if m.cls is PrometheusMiddleware and metrics is None:
                metrics = PrometheusMiddleware(None, *m.args, **m.kwargs)
                if (metrics.request_labels or metrics.response_labels or metrics.optional_metrics_list
                        or metrics.exemplars or metrics.always_use_int_status or metrics.group_unhandled_paths
                        or not metrics.group_paths or not metrics.filter_unhandled_paths or "POST" in metrics.skip_methods):
                    return False
            elif m.cls is GZipMiddleware and gzip_level is None:
                gz = GZipMiddleware(None, *m.args, **m.kwargs)
                if gz.minimum_size != codec.GZIP_MINIMUM_SIZE:
                    return False
                gzip_level = gz.compresslevel
            else:  # CORS, tracing or anything else: its effect on an answer is not known here
                return False
        return metrics, gzip_level

    def _route(self, scope: dict) -> Optional[RestInfer]:
        """The route the app's router would pick, if it is one of the runtime's (routes put before
        them, such as the credential guard of runtime/auth.py, keep their turn)."""
        for route in self.app.router.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                if not isinstance(route, RestInfer):
                    return None
                scope["insurance_target"] = child["insurance_target"]
                return route
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = self._route(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        if self.plan is None:
            self.plan = self._check()
        if self.plan is False:
            return await self.app(scope, receive, send)
        metrics, gzip_level = self.plan
        if metrics is not None and any(p.fullmatch(scope["path"]) for p in metrics.skip_paths):
            metrics = None
        status, begin, end = None, time.perf_counter(), None
        delegated = False

        async def through_app(scope_: dict, receive_: Any, send_: Any) -> None:
            nonlocal delegated
            delegated = True  # the app's own middleware counts this one
            await self.app({**scope_, "insurance_declined": True}, receive_, send_)

        async def counted(message: dict) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                end = time.perf_counter()
            await send(message)

        if metrics is None:
            return await route.answer(scope, receive, send, through_app, gzip_level)
        progress = self._progress
        if progress is None:
            progress = self._progress = metrics.requests_in_progress.labels("POST", metrics.app_name)
        progress.inc()
        try:
            await route.answer(scope, receive, counted, through_app, gzip_level)
        except Exception:
            status = 500
            raise
        finally:
            progress.dec()
            if not delegated:
                if status is None:  # as starlette_exporter: 499 when the client left before an answer
                    status = 500 if sys.exc_info()[0] is not None else 499
                series = self._series.get((route.path, status))
                if series is None:  # two paths x a few statuses: bounded
                    labels = ("POST", route.path, status, metrics.app_name)
                    series = self._series[(route.path, status)] = (metrics.request_count.labels(*labels),
                                                                   metrics.request_time.labels(*labels))
                series[0].inc()
                series[1].observe((end or time.perf_counter()) - begin)


# ---- gRPC ---------------------------------------------------------------------------------------

def from_proto(message: Any) -> Request:
    """A ModelInferRequest -> Request, as MLServer's ModelInferRequestConverter reads it (typed
    contents: the first field set; raw contents: one per input with no typed data, in order)."""
    raw = message.raw_input_contents
    r = 0
    tensors = []
    for inp in message.inputs:
        fields = inp.contents.ListFields()
        data = list(fields[0][1]) if fields else []
        tensor = Tensor(inp.name, inp.datatype, list(inp.shape), data)
        _proto_parameters(inp.parameters)
        if not data and raw:
            try:
                tensor.data = codec.unpack(tensor, raw[r])
            except MALFORMED as e:  # as MLServer's converter with runtime/hardening.py
                raise malformed(e) from e
            r += 1
        tensors.append(tensor)
    wanted = [o.name for o in message.outputs] or None
    for out in message.outputs:
        _proto_parameters(out.parameters)
    return Request(message.id, tensors, _proto_parameters(message.parameters), wanted)


def _proto_parameters(params: Any) -> Optional[dict]:
    """model_extra of the Parameters MLServer's ParametersConverter builds from an InferParameter
    map (None for an empty map); InvalidRequest where pydantic would refuse it."""
    if not params:
        return None
    extra = {}
    for key, value in params.items():
        fields = value.ListFields()
        v = fields[0][1] if fields else None
        if key in _OWN_PARAMETERS:
            if v is not None and (key == "headers" or not isinstance(v, str)):
                raise InvalidRequest(f"malformed request: parameter '{key}' has the wrong type")
            continue
        extra[key] = v
    return extra


def to_proto(model: Any, request_id: str, n: int, outputs: dict, names: list, use_raw: bool) -> Any:
    """The ModelInferResponse MLServer's ModelInferResponseConverter writes for these outputs."""
    response = pb.ModelInferResponse(model_name=model.name, id=request_id)
    if model.version is not None:
        response.model_version = model.version
    types = model.output_types
    for name in names:
        datatype = types[name]
        values = outputs[name]
        out = response.outputs.add(name=name, datatype=datatype, shape=[n])
        if use_raw:
            out.contents.SetInParent()  # MLServer writes an empty contents message next to raw outputs
        if datatype == "BYTES":
            if use_raw:
                response.raw_output_contents.append(codec.packed_bytes(values, True))
            else:
                out.contents.bytes_contents.extend(codec.packed_bytes(values, False))
        elif use_raw:
            response.raw_output_contents.append(values.astype("<f8", copy=False).tobytes())
        else:
            out.contents.fp64_contents.extend(values.tolist())
    return response


_original_model_infer = None


async def model_infer(servicer: Any, request: Any, context: Any) -> Any:
    """InferenceServicer.ModelInfer for the models this path takes, MLServer's otherwise. Runs
    inside MLServer's handle_mlserver_error: an MLServerError becomes its gRPC status there; any
    other error hands the request to MLServer's path."""
    data_plane = servicer._data_plane
    name, version = request.model_name, request.model_version
    try:
        model = fast_model(data_plane, name, version or None)
        if model is None or not _middlewares_known(data_plane):
            model = None
        else:
            model.monitoring.fast_path_served()
            payload = from_proto(request)
            ce, n, outputs, names = infer(data_plane, model, name, version, payload, grpc_headers(context), False)
            response = to_proto(model, payload.id, n, outputs, names, bool(request.raw_input_contents))
    except MLServerError:
        raise
    except Exception as e:
        fell_back(e, data_plane, name, version or None)
        model = None
    if model is None:
        return await _original_model_infer(servicer, request, context)
    if ce:
        context.set_trailing_metadata(to_metadata(ce))
    return response


# ---- installation -------------------------------------------------------------------------------

_installed = False
_lock = threading.Lock()

#: Private names of MLServer 1.7.1 this path reads: (module, class or None, attribute, where it is set).
#: Attributes set in __init__ are looked up in the names __init__'s code assigns.
PRIVATE_NAMES = (
    ("mlserver.handlers.dataplane", "DataPlane", "_model_registry", "__init__"),
    ("mlserver.handlers.dataplane", "DataPlane", "_response_cache", "__init__"),
    ("mlserver.handlers.dataplane", "DataPlane", "_inference_middleware", "__init__"),
    ("mlserver.handlers.dataplane", "DataPlane", "_ModelInferRequestDuration", "__init__"),
    ("mlserver.handlers.dataplane", "DataPlane", "_ModelInferRequestFailure", "__init__"),
    ("mlserver.handlers.dataplane", "DataPlane", "_ModelInferRequestSuccess", "__init__"),
    ("mlserver.registry", "MultiModelRegistry", "_models", "__init__"),
    ("mlserver.registry", "SingleModelRegistry", "_find_model", None),
    ("mlserver.middleware", "InferenceMiddlewares", "_middlewares", "__init__"),
    ("mlserver.cloudevents", "CloudEventsMiddleware", "_get_headers", None),
    ("mlserver.cloudevents", "CloudEventsTypes", "Response", None),
    ("mlserver.batching.hooks", None, "_AdaptiveBatchingAttr", None),
    ("mlserver.rest.server", "RESTServer", "add_custom_handlers", None),
    ("mlserver.rest.server", "RESTServer", "_app", "__init__"),
    ("mlserver.rest.server", "RESTServer", "_data_plane", "__init__"),
    ("mlserver.grpc.servicers", "InferenceServicer", "_data_plane", "__init__"),
    ("mlserver.grpc.servicers", "InferenceServicer", "ModelInfer", None),
)


def missing_names() -> list[str]:
    """The PRIVATE_NAMES this MLServer lacks, and the gRPC wrapper shape this path re-points (empty: all there)."""
    import importlib

    missing = []
    for module, cls, attr, where in PRIVATE_NAMES:
        try:
            owner = importlib.import_module(module)
            if cls is not None:
                owner = getattr(owner, cls)
            if where is None:
                ok = hasattr(owner, attr)
            else:
                ok = attr in getattr(getattr(owner, where), "__code__").co_names
        except (ImportError, AttributeError):
            ok = False
        if not ok:
            missing.append(f"{module}.{cls + '.' if cls else ''}{attr}")
    try:
        from mlserver.batching.hooks import _AdaptiveBatchingAttr
    except ImportError:
        _AdaptiveBatchingAttr = None
    if _AdaptiveBatchingAttr is not None and _AdaptiveBatchingAttr != _BATCHING:
        missing.append(f"mlserver.batching.hooks._AdaptiveBatchingAttr == {_BATCHING!r}")
    if not missing and _grpc_cell() is None:
        missing.append("mlserver.grpc.servicers.InferenceServicer.ModelInfer (the handle_mlserver_error wrapper of 1.7.1)")
    return missing


def install() -> None:
    """Hook both protocols into MLServer (idempotent); called when runtime.model is imported."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _install_rest()
        _install_grpc()


def _install_rest() -> None:
    from mlserver.rest.server import RESTServer

    original = RESTServer.add_custom_handlers

    async def add_custom_handlers(self, model):
        if getattr(model, "infer_plain", None) is not None:
            install_route(self._app, self._data_plane)
        return await original(self, model)

    RESTServer.add_custom_handlers = add_custom_handlers
    from . import edge

    edge.wrap_app(Front)


def _grpc_cell() -> Any:
    """The closure cell of handle_mlserver_error's wrapper that holds MLServer's ModelInfer (None if absent)."""
    from mlserver.grpc.servicers import InferenceServicer

    wrapper = InferenceServicer.ModelInfer
    if getattr(wrapper, "_insurance_original", None) is not None:
        return wrapper._insurance_cell
    closure = getattr(wrapper, "__closure__", None) or ()
    names = getattr(getattr(wrapper, "__code__", None), "co_freevars", ())
    cell = closure[names.index("f")] if "f" in names else None
    original = getattr(cell, "cell_contents", None) if cell is not None else None
    if original is None or getattr(original, "__qualname__", "") not in ("InferenceServicer.ModelInfer",
                                                                          "model_infer"):
        return None
    return cell


def _install_grpc() -> None:
    global _original_model_infer
    cell = _grpc_cell()
    if cell is None:
        raise RuntimeError("MLServer's InferenceServicer.ModelInfer is not the 1.7.1 wrapper this path re-points")
    if cell.cell_contents is not model_infer:
        _original_model_infer = cell.cell_contents
        cell.cell_contents = model_infer
