"""A cheaper gRPC Prometheus interceptor with MLServer's series (the same metric objects).

MLServer 1.7.1 wraps every gRPC call in ``mlserver.grpc.interceptors.PromServerInterceptor``
(py-grpc-prometheus): per call it builds a new method handler, a partial and two closures and
resolves three label sets. ``install()`` replaces that class's ``intercept_service`` (the server
calls it per request on the instance MLServer built at start-up, before any runtime is imported):
per unary method the wrapped handler and its label children are built once, then a call costs two
counter increments and one histogram observation. The metric objects are the instance's own, so
``grpc_server_started_total``, ``grpc_server_handled_total`` and ``grpc_server_handling_seconds``
keep their names, labels, buckets and values. Streaming methods keep MLServer's code. The cost of
both is measured by bench/interceptor.py (docs/performance.md).
"""

from __future__ import annotations

import logging
import threading
from time import perf_counter
from typing import Any

import grpc
from grpc import StatusCode

logger = logging.getLogger("mlserver.insurance.grpc_metrics")

_STATUS = {code.value[0]: code for code in StatusCode}
UNARY = "UNARY"


class _Method:
    """Label children of one unary method (grpc_service, grpc_method) and its wrapped handler."""

    __slots__ = ("started", "histogram", "handled_counter", "labels", "handled", "handler", "wrapped")

    def __init__(self, interceptor: Any, service: str, method: str, handler: Any):
        metrics = interceptor._metrics
        self.labels = {"grpc_type": UNARY, "grpc_service": service, "grpc_method": method}
        self.started = metrics["grpc_server_started_counter"].labels(**self.labels)
        self.histogram = (metrics["grpc_server_handled_histogram"].labels(**self.labels)
                          if interceptor._enable_handling_time_histogram else None)
        self.handled_counter = interceptor._grpc_server_handled_total_counter
        self.handled: dict = {}
        self.handler = handler  # kept: the cache is keyed by its id
        self.wrapped = grpc.unary_unary_rpc_method_handler(self._behavior(handler.unary_unary),
                                                           request_deserializer=handler.request_deserializer,
                                                           response_serializer=handler.response_serializer)

    def count_handled(self, code: StatusCode) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = self.handled_counter.labels(**self.labels, grpc_code=code.name)
        child.inc()

    def _behavior(self, behavior: Any) -> Any:
        started, histogram, count_handled = self.started, self.histogram, self.count_handled

        async def new_behavior(request: Any, context: Any) -> Any:
            start = perf_counter()
            try:
                started.inc()
                try:
                    response = await behavior(request, context)
                except grpc.RpcError as e:  # as py-grpc-prometheus: the code of a grpc.Call, else UNKNOWN
                    count_handled(e.code() if isinstance(e, grpc.Call) else StatusCode.UNKNOWN)
                    raise
                count_handled(_status(context))
                return response
            finally:
                if histogram is not None:
                    histogram.observe(max(perf_counter() - start, 0))

        return new_behavior


def _status(context: Any) -> StatusCode:
    """The call's status code as MLServer's interceptor computes it (an int code mapped back)."""
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        return StatusCode.OK
    if isinstance(code, int):
        return _STATUS.get(code, StatusCode.UNKNOWN)
    return code


_installed = False
_lock = threading.Lock()


def install() -> bool:
    """Replace MLServer's PromServerInterceptor.intercept_service (once); False, and MLServer's
    interceptor stays, when it is not the 1.7.1 class this expects."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from mlserver.grpc.interceptors import PromServerInterceptor
            from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor as Inner
        except ImportError:  # pragma: no cover
            return False
        needed = ("_metrics", "_grpc_server_handled_total_counter", "_enable_handling_time_histogram", "_legacy",
                  "_skip_exceptions")
        probe = Inner.__init__.__code__.co_names
        if not all(n in probe for n in needed) or not hasattr(PromServerInterceptor, "_metrics_wrapper"):
            logger.warning("gRPC metrics interceptor not replaced: MLServer's PromServerInterceptor is not the "
                           "1.7.1 class it expects; MLServer's serves")
            return False
        stock = PromServerInterceptor.intercept_service

        async def intercept_service(self: Any, continuation: Any, handler_call_details: Any) -> Any:
            inner = self._interceptor
            handler = await continuation(handler_call_details)
            if handler is None or handler.request_streaming or handler.response_streaming or inner._legacy \
                    or inner._skip_exceptions:
                return await _stock(self, handler, handler_call_details, stock)
            methods = self.__dict__.get("_insurance_methods")
            if methods is None:
                methods = self.__dict__["_insurance_methods"] = {}
            key = (handler_call_details.method, id(handler))
            entry = methods.get(key)
            if entry is None:
                parts = handler_call_details.method.split("/")
                service, method = (parts[1], parts[2]) if len(parts) >= 3 else ("", "")
                entry = _Method(inner, service, method, handler)
                if len(methods) < 1000:  # methods come from the service definitions: a handful
                    methods[key] = entry
            return entry.wrapped

        intercept_service.stock = stock  # type: ignore[attr-defined]
        PromServerInterceptor.intercept_service = intercept_service
        _installed = True
        return True


async def _stock(self: Any, handler: Any, details: Any, stock: Any) -> Any:
    """MLServer's wrapping for a handler this module does not take (the continuation already ran)."""

    async def resolved(_details: Any) -> Any:
        return handler

    return await stock(self, resolved, details)
