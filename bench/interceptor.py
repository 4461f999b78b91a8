"""µs per unary gRPC call of the Prometheus interceptor: MLServer's (py-grpc-prometheus) and the
runtime's replacement (runtime/grpc_metrics.py), against the same method called without one; rounds
interleaved so that noise hits all alike. `serve()` runs a real grpc.aio server with an interceptor
(tests/test_metrics.py compares the series both write)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

METHOD = "/inference.GRPCInferenceService/ServerReady"


def interceptors(registry: CollectorRegistry) -> dict[str, Any]:
    """'mlserver' and 'runtime' interceptors on their own registries (same class, two methods)."""
    from mlserver.grpc.interceptors import PromServerInterceptor

    from runtime import grpc_metrics

    grpc_metrics.install()
    ours = PromServerInterceptor.intercept_service

    class Stock(PromServerInterceptor):
        intercept_service = ours.stock

    return {"mlserver": Stock(enable_handling_time_histogram=True, registry=registry),
            "runtime": PromServerInterceptor(enable_handling_time_histogram=True, registry=CollectorRegistry())}


class _Handler(grpc.GenericRpcHandler):
    def service(self, details: Any) -> Any:
        if details.method != METHOD:
            return None

        async def unary(request: bytes, context: Any) -> bytes:
            if request == b"fail":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to fail")
            if request == b"not-found":
                context.set_code(grpc.StatusCode.NOT_FOUND)
            return b"ok"

        return grpc.unary_unary_rpc_method_handler(unary)


async def serve(interceptor: Any) -> tuple[Any, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = grpc.aio.server(interceptors=[interceptor] if interceptor is not None else [])
    server.add_generic_rpc_handlers((_Handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def calls(port: int, requests: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        for r in requests:
            try:
                await call(r)
            except grpc.aio.AioRpcError:
                pass


class _Details:
    method = METHOD


class _Context:
    """What the interceptors read of a grpc.aio ServicerContext after a successful call."""

    def code(self) -> None:
        return None


async def _measure(calls_per_round: int, rounds: int) -> dict:
    found = interceptors(CollectorRegistry())
    handler = _Handler().service(_Details())
    details, context = _Details(), _Context()

    async def continuation(_details: Any) -> Any:
        return handler

    async def plain() -> None:
        h = await continuation(details)
        await h.unary_unary(b"x", context)

    def through(interceptor: Any) -> Any:
        async def call() -> None:
            h = await interceptor.intercept_service(continuation, details)
            await h.unary_unary(b"x", context)
        return call

    cases = {"none": plain, **{k: through(v) for k, v in found.items()}}
    per_call: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            start = time.perf_counter()
            for _ in range(calls_per_round):
                await fn()
            per_call[k].append((time.perf_counter() - start) / calls_per_round * 1e6)
    med = {k: min(v) for k, v in per_call.items()}  # the least disturbed round
    return {"mlserver_interceptor_us": round(med["mlserver"] - med["none"], 1),
            "runtime_interceptor_us": round(med["runtime"] - med["none"], 1)}


def measure(calls_per_round: int = 2000, rounds: int = 9) -> dict:
    """The interceptors' own cost, µs per unary call: their Python work around the method, in this
    process (the gRPC transport is the same for both and is left out)."""
    return asyncio.run(_measure(calls_per_round, rounds))


if __name__ == "__main__":
    import json

    print(json.dumps(measure()))
