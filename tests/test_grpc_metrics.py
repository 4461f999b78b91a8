"""runtime/grpc_metrics.py: the runtime's gRPC Prometheus interceptor writes the very series
MLServer's (py-grpc-prometheus) writes, on real grpc.aio servers; and it is the one installed.
In a child interpreter: MLServer's gRPC protos clash with tritonclient's in one process."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import asyncio, json
import grpc
from prometheus_client import CollectorRegistry
from bench.interceptor import METHOD, serve

async def run(interceptor, registry):
    server, port = await serve(interceptor)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        for request in [b"x"] * 5 + [b"fail"] * 2 + [b"not-found"] * 3 + [b"x"]:
            try:
                await call(request)
            except grpc.aio.AioRpcError:
                pass
    await server.stop(None)
    samples = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created") or (s.name.endswith("_bucket") and s.labels["le"] != "+Inf"):
                continue  # creation times and latency buckets differ by timing alone
            if s.name.endswith("_sum"):
                s = s._replace(value=float(s.value > 0))
            samples[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
    return samples

from mlserver.grpc.interceptors import PromServerInterceptor
stock_method = PromServerInterceptor.intercept_service
from runtime import model  # the runtime's import installs its interceptor
installed = PromServerInterceptor.intercept_service is not stock_method

class Stock(PromServerInterceptor):
    intercept_service = stock_method

stock_registry, our_registry = CollectorRegistry(), CollectorRegistry()
stock = asyncio.run(run(Stock(enable_handling_time_histogram=True, registry=stock_registry), stock_registry))
ours = asyncio.run(run(PromServerInterceptor(enable_handling_time_histogram=True, registry=our_registry), our_registry))
print(json.dumps({"installed": installed, "stock": stock, "ours": ours}))
"""


def _run() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runtime_interceptor_writes_mlservers_series_with_the_same_values():
    result = _run()
    assert result["installed"]
    assert result["ours"] == result["stock"]
    started = [v for k, v in result["ours"].items() if k.startswith("grpc_server_started_total")]
    handled_ok = [v for k, v in result["ours"].items() if k.startswith("grpc_server_handled_total")
                  and '"grpc_code": "OK"' in k]
    assert started == [11.0] and handled_ok == [6.0]
