"""Load generators: wrk for HTTP (a Lua script cycling the request bodies) and h2load (nghttp2,
Debian's nghttp2-client) for gRPC: a unary gRPC call is an HTTP/2 POST of a length-prefixed
message, which h2load sends on one connection with `concurrency` streams in flight. Both are C
programs, so the load generator takes little of the CPU the servers share with it. Without
h2load, a bounded asyncio client on tritonclient.grpc.aio (Python: it costs the machine more, so
its figures are lower bounds). Closed loop: `concurrency` connections (or in-flight requests) each
send the next request when the previous answer arrives, for `duration` seconds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LUA = r"""
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 7919
end

function init(args)
  i = offset or 0
end

function request()
  i = i %% #bodies + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f, "max_us": %%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class Point:
    """One measured load run."""

    requests: int
    seconds: float
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int

    def to_dict(self) -> dict:
        return asdict(self)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(base_url: str, path: str, bodies: list[bytes], concurrency: int, duration: float, rows: int,
            workdir: Path, threads: int = 1, headers: dict[str, str] | None = None) -> Point:
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / f"bodies-{abs(hash(tuple(bodies[:2]))) % 10**8}-{len(bodies)}.jsonl"
    if not body_file.exists():
        body_file.write_bytes(b"\n".join(bodies) + b"\n")
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    tag = hashlib.sha256(extra.encode()).hexdigest()[:8]
    script = workdir / f"{body_file.stem}-{path.strip('/').replace('/', '_')}-{tag}.lua"
    script.write_text(LUA % {"bodies": str(body_file), "path": path, "headers": extra})
    threads = max(1, min(threads, concurrency))
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration))}s",
           "--timeout", "10s", "-s", str(script), base_url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("BENCH_JSON "):])
    seconds = r["duration_us"] / 1e6
    ok = r["requests"] - r["status_errors"]
    return Point(requests=r["requests"], seconds=seconds, rps=ok / seconds, rows_per_s=ok * rows / seconds,
                 p50_ms=r["p50_us"] / 1e3, p99_ms=r["p99_us"] / 1e3, errors=r["status_errors"] + r["socket_errors"])


async def _grpc_load(target: str, model: str, requests: list, concurrency: int, duration: float) -> tuple:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(target)
    latencies: list[float] = []
    errors = 0
    try:
        for inputs in requests[:2]:  # one answer checked before timing
            await client.infer(model, inputs)
        deadline = time.perf_counter() + duration

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    await client.infer(model, requests[i % len(requests)])
                    latencies.append(time.perf_counter() - t0)
                except Exception:  # noqa: BLE001 (counted, the run goes on)
                    errors += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
    return latencies, errors, elapsed


def run_grpc(target: str, model: str, requests: list, concurrency: int, duration: float, rows: int) -> Point:
    latencies, errors, elapsed = asyncio.run(_grpc_load(target, model, requests, concurrency, duration))
    lat = np.asarray(latencies) * 1e3
    ok = len(lat)
    return Point(requests=ok + errors, seconds=elapsed, rps=ok / elapsed, rows_per_s=ok * rows / elapsed,
                 p50_ms=float(np.percentile(lat, 50)) if ok else float("nan"),
                 p99_ms=float(np.percentile(lat, 99)) if ok else float("nan"), errors=errors)


GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def check_grpc_message(target: str, message: bytes) -> bytes:
    """Send one serialized request with grpcio (bytes in, bytes out); raises on any gRPC error.
    h2load sees HTTP statuses only, and a gRPC error is an HTTP 200 with a grpc-status trailer:
    the message is checked before and after every run instead (the same bytes every time)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        return channel.unary_unary(GRPC_METHOD)(message, timeout=10)


def run_h2load(target: str, message: bytes, concurrency: int, duration: float, rows: int, workdir: Path) -> Point:
    workdir.mkdir(parents=True, exist_ok=True)
    body = workdir / f"grpc-{hashlib.sha256(message).hexdigest()[:16]}.bin"
    if not body.exists():
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    log = workdir / "h2load-requests.log"
    log.unlink(missing_ok=True)  # h2load appends
    check_grpc_message(target, message)
    cmd = ["h2load", "-c", "1", "-m", str(concurrency), "-D", str(max(1, round(duration))), "--warm-up-time", "1",
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), "--log-file", str(log),
           f"http://{target}{GRPC_METHOD}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    check_grpc_message(target, message)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out.stdout)
    if out.returncode != 0 or counts is None:
        raise RuntimeError(f"h2load failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    seconds = float(re.search(r"finished in ([\d.]+)s", out.stdout).group(1))
    succeeded = int(counts.group(3))
    errors = int(counts.group(4)) + int(counts.group(5)) + int(counts.group(6))
    # one line per request of the measured period: start (us since epoch), HTTP status, duration (us)
    durations = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") == 2]
    lat = np.asarray(durations, dtype=np.float64) / 1e3
    return Point(requests=succeeded + errors, seconds=seconds, rps=succeeded / seconds,
                 rows_per_s=succeeded * rows / seconds,
                 p50_ms=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                 p99_ms=float(np.percentile(lat, 99)) if len(lat) else float("nan"), errors=errors)
