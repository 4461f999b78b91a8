"""`python -m bench [--quick]` (or `make bench`): run the whole benchmark and write
bench/results/results.md, results.json and results.png.

Servers in turn, each alone on the machine, on free loopback ports, with the same model files:
A (this runtime), A+lleaves (compiled trees, when lleaves is installed), M (MLServer with a
runtime that computes nothing: the MLServer floor), B (stock MLServer LightGBM), C (KServe custom
predictor), D (uvicorn + orjson floor). Load: wrk over HTTP, h2load over gRPC (a bounded
tritonclient.grpc.aio client without it); concurrency 1/16/64, 1-row and 32-row requests.
Then MLServer adaptive batching, parallel workers, the prediction cache, the five-model server,
the cost of the per-credential rate limit, and a py-spy profile of A under load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import load, payloads, servers

RESULTS = Path(__file__).resolve().parent / "results"
EXTRAS = ("batching", "workers", "cache", "five_models", "ratelimit")
INFER = f"/v2/models/{servers.MODEL}/infer"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    versions = {}
    for mod in ("mlserver", "kserve", "lightgbm", "numpy", "uvicorn", "orjson", "tritonclient", "lleaves", "llvmlite"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001
            versions[mod] = None
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    h2load = None
    if shutil.which("h2load"):
        out = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
        h2load = (out.stdout or out.stderr).split("\n")[0].strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].strip(), "h2load": h2load, "versions": versions,
    }


def summarize(runs: list[dict]) -> dict:
    def stat(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {k: stat(k) for k in ("rps", "rows_per_s", "p50_ms", "p99_ms")} | {"errors": sum(r["errors"] for r in runs)}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="insurance-bench-"))
        self.compiled_cache = self.workdir / "compiled"
        self.rows = payloads.load_rows(2048)
        self.points: list[dict] = []
        self.servers: dict[str, dict] = {}
        self.extras: dict[str, object] = {}
        self._bodies: dict[tuple[int, str], list[bytes]] = {}
        self._grpc: dict[tuple[int, str], list] = {}

    # ---- load ---------------------------------------------------------------------------------
    def bodies(self, size: int, kind: str) -> list[bytes]:
        key = (size, kind)
        if key not in self._bodies:
            self._bodies[key] = payloads.bodies(self.rows, size, kind, count=64)
        return self._bodies[key]

    def grpc_requests(self, size: int, kind: str) -> list:
        key = (size, kind)
        if key not in self._grpc:
            import tritonclient.grpc as grpcclient

            self._grpc[key] = [payloads.grpc_inputs(self.rows.slice(k * size, size), self.rows.features, kind,
                                                    grpcclient) for k in range(16)]
        return self._grpc[key]

    def grpc_message(self, size: int, kind: str) -> bytes:
        return payloads.grpc_message(self.rows.slice(0, size), self.rows.features, kind, servers.MODEL)

    def run_grpc(self, run: servers.Running, size: int, kind: str, concurrency: int, duration: float) -> load.Point:
        if load.h2load_available():
            return load.run_h2load(run.grpc, self.grpc_message(size, kind), concurrency, duration, size,
                                   self.workdir / "h2load")
        return load.run_grpc(run.grpc, servers.MODEL, self.grpc_requests(size, kind), concurrency, duration, size)

    def check_answer(self, run: servers.Running, body: bytes) -> None:
        import urllib.request

        req = urllib.request.Request(run.http + INFER, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
        if not doc.get("outputs"):
            raise RuntimeError(f"{run.label}: no outputs in the answer: {doc}")

    def measure(self, run: servers.Running, proto: str, size: int, concurrency: int, kind: str,
                experiment: str = "grid", label: str | None = None, bodies: list[bytes] | None = None,
                repeats: int | None = None, extra: dict | None = None) -> dict:
        repeats = repeats or self.args.repeats
        runs = []
        for _ in range(repeats):
            if proto == "http":
                point = load.run_wrk(run.http, INFER, bodies or self.bodies(size, kind), concurrency,
                                     self.args.duration, size, self.workdir / "wrk")
            else:
                point = self.run_grpc(run, size, kind, concurrency, self.args.duration)
            runs.append(point.to_dict())
            run.rss_mb()
        entry = {"experiment": experiment, "server": label or run.label, "proto": proto, "rows": size,
                 "c": concurrency, "runs": runs, "summary": summarize(runs), **(extra or {})}
        self.points.append(entry)
        s = entry["summary"]
        log(f"  {entry['server']:<12} {proto:<4} rows={size:<2} c={concurrency:<2} "
            f"{s['rps']['median']:8.0f} req/s ({s['rps']['min']:.0f}-{s['rps']['max']:.0f})  "
            f"p50 {s['p50_ms']['median']:6.2f} ms  p99 {s['p99_ms']['median']:6.2f} ms  errors {s['errors']}")
        return entry

    def warmup(self, run: servers.Running, proto: str, size: int, kind: str) -> None:
        if proto == "http":
            self.check_answer(run, self.bodies(size, kind)[0])
            load.run_wrk(run.http, INFER, self.bodies(size, kind), 16, 1, size, self.workdir / "wrk")
        else:
            self.run_grpc(run, size, kind, 16, 1)

    # ---- servers ------------------------------------------------------------------------------
    def precompile(self) -> None:
        from predictors.scoring import compile_to, compiled_path

        for name in ("auto", "home", "health", "life"):
            bundle = next((servers.MODELS / name).glob("*/manifest.json")).parent
            obj = compiled_path(bundle / "model.txt", self.compiled_cache)
            if not obj.exists():
                started = time.monotonic()
                compile_to(bundle / "model.txt", obj)
                self.extras.setdefault("compile_seconds", {})[name] = round(time.monotonic() - started, 2)

    def start(self, label: str, **kw) -> servers.Running:
        wd = self.workdir / "".join(ch if ch.isalnum() else "_" for ch in label)
        wd.mkdir(parents=True, exist_ok=True)
        models = kw.pop("models", (servers.MODEL,))
        if label.startswith("A"):
            extra = kw.pop("extra", {})
            repo = servers.mlserver_repository(wd, "A", extra=extra, batching=kw.pop("batching", None), models=models)
            return servers.start_mlserver(label, repo, wd, models=models, **kw)
        if label in ("B", "M"):
            repo = servers.mlserver_repository(wd, label, batching=kw.pop("batching", None))
            return servers.start_mlserver(label, repo, wd, stock=label == "B", **kw)
        if label == "C":
            return servers.start_kserve(label, wd)
        if label == "D":
            return servers.start_floor(label, wd)
        raise ValueError(label)

    def grid(self) -> None:
        labels = ["A"]
        if self.lleaves:
            labels.append("A+lleaves")
        labels += ["M", "B", "C", "D"]
        if self.args.only:
            labels = [lb for lb in labels if lb in self.args.only]
        for label in labels:
            extra = {"compiled_trees": True, "compiled_trees_cache": str(self.compiled_cache)} if label == "A+lleaves" else {}
            log(f"server {label}")
            run = self.start(label, **({"extra": extra} if label.startswith("A") else {}))
            kind = "stock" if label == "B" else "v2"
            try:
                protos = ["http"] + (["grpc"] if run.grpc and not self.args.no_grpc else [])
                for proto in protos:
                    for size in self.args.sizes:
                        self.warmup(run, proto, size, kind)
                        for c in self.args.concurrency:
                            self.measure(run, proto, size, c, kind)
                self.servers[label] = {"cold_start_s": run.cold_start_s, "rss_mb": max(run.rss_samples or [run.rss_mb()])}
                log(f"  {label}: cold start {run.cold_start_s:.2f} s, RSS {self.servers[label]['rss_mb']:.0f} MB")
            finally:
                run.stop()

    # ---- extras -------------------------------------------------------------------------------
    def batching(self) -> None:
        configs = [(64, 0.002)] if self.args.quick else [(32, 0.005), (64, 0.002), (64, 0.005)]
        cs = (1, 64) if self.args.quick else (1, 16, 64)
        base = "A+lleaves" if self.lleaves else "A"
        extra = {"compiled_trees": True, "compiled_trees_cache": str(self.compiled_cache)} if self.lleaves else {}
        for size, wait in configs:
            label = f"{base} batch {size}/{wait * 1000:g}ms"
            log(f"server {label}")
            run = self.start(label, extra=extra, batching=(size, wait))
            try:
                self.warmup(run, "http", 1, "v2")
                for c in cs:
                    self.measure(run, "http", 1, c, "v2", experiment="batching",
                                 extra={"max_batch_size": size, "max_batch_time": wait, "base": base})
            finally:
                run.stop()

    def workers(self) -> None:
        # the last one: adaptive batching in front of a worker, where it saves the per-request IPC
        for workers, batching in ((1, None), (2, None), (1, (64, 0.002))):
            label = f"A workers={workers}" + (f" batch {batching[0]}/{batching[1] * 1000:g}ms" if batching else "")
            log(f"server {label}")
            run = self.start(label, parallel_workers=workers, batching=batching)
            try:
                self.warmup(run, "http", 1, "v2")
                for c in (16, 64):
                    self.measure(run, "http", 1, c, "v2", experiment="workers", label=label,
                                 extra={"parallel_workers": workers, "batching": list(batching) if batching else None})
                self.servers[label] = {"cold_start_s": run.cold_start_s, "rss_mb": max(run.rss_samples)}
            finally:
                run.stop()

    def cache(self) -> None:
        rate = self.args.repeat_rate
        count = 60_000 if not self.args.quick else 20_000
        for label, ttl, share in (("A", 0, rate), ("A cache", 60, rate), ("A", 0, 0.0), ("A cache", 60, 0.0)):
            log(f"server {label} (repeat rate {share:.0%})")
            run = self.start(label, extra={"prediction_cache_ttl": ttl} if ttl else {})
            try:
                self.warmup(run, "http", 1, "v2")
                runs, hit = [], []
                for r in range(self.args.repeats):
                    bodies = payloads.repeat_bodies(self.rows, count, share, seed=100 + r)
                    point = load.run_wrk(run.http, INFER, bodies, 16, self.args.duration, 1, self.workdir / "wrk")
                    runs.append(point.to_dict())
                    hit.append(payloads.repeat_share(bodies, point.requests))
                    if point.requests >= count:
                        log("  warning: the run cycled its body list; raise count")
                entry = {"experiment": "cache", "server": f"{label} {share:.0%} repeats", "proto": "http", "rows": 1,
                         "c": 16, "runs": runs, "summary": summarize(runs), "ttl": ttl, "repeat_rate": share,
                         "repeat_share_sent": statistics.median(hit)}
                self.points.append(entry)
                s = entry["summary"]
                log(f"  {entry['server']:<22} {s['rps']['median']:8.0f} req/s ({s['rps']['min']:.0f}-"
                    f"{s['rps']['max']:.0f})  p50 {s['p50_ms']['median']:.2f} ms  p99 {s['p99_ms']['median']:.2f} ms")
            finally:
                run.stop()

    def ratelimit(self) -> None:
        """A with an API key, without and with a rate limit that never trips (its cost per request),
        1-row HTTP at c=16, runs of the two alternating; plus Policy.admit timed in-process."""
        from .inprocess import ratelimit_cost

        self.extras["ratelimit_inprocess"] = ratelimit_cost()
        log(f"  rate limit in-process: {self.extras['ratelimit_inprocess']['admit_us']:.2f} us per admitted request")
        key = "bench-key-0123456789"
        variants = (("A api key", {"api_keys": key}),
                    ("A api key + rate limit", {"api_keys": key, "rate_limit": 1e9, "rate_limit_burst": 1e9}))
        runs: dict[str, list] = {label: [] for label, _ in variants}
        started = {label: self.start(label, extra=extra) for label, extra in variants}
        try:
            bodies = self.bodies(1, "v2")
            for run in started.values():
                load.run_wrk(run.http, INFER, bodies, 16, 1, 1, self.workdir / "wrk", headers={"X-API-Key": key})
            for _ in range(max(2, self.args.repeats)):
                for label, _ in variants:
                    point = load.run_wrk(started[label].http, INFER, bodies, 16, self.args.duration, 1,
                                         self.workdir / "wrk", headers={"X-API-Key": key})
                    runs[label].append(point.to_dict())
        finally:
            for run in started.values():
                run.stop()
        for label, _ in variants:
            entry = {"experiment": "ratelimit", "server": label, "proto": "http", "rows": 1, "c": 16,
                     "runs": runs[label], "summary": summarize(runs[label])}
            self.points.append(entry)
            s = entry["summary"]
            log(f"  {label:<24} {s['rps']['median']:8.0f} req/s ({s['rps']['min']:.0f}-{s['rps']['max']:.0f})  "
                f"p50 {s['p50_ms']['median']:.2f} ms  errors {s['errors']}")

    def five_models(self) -> None:
        models = ("auto", "claims", "health", "home", "life")
        compiled = {"compiled_trees": True, "compiled_trees_cache": str(self.compiled_cache)}
        variants = [("A five models", {}, False), ("A five models, no pyarrow (as in the image)", {}, True)]
        if self.lleaves:
            variants += [("A+lleaves five models", compiled, False),
                         ("A+lleaves five models, no pyarrow (as in the image)", compiled, True)]
        out = {}
        for label, extra, image_like in variants:
            log(f"server {label}")
            env = servers.without_pyarrow(self.workdir) if image_like else None
            run = self.start(label, extra=extra, models=models, env=env)
            try:
                load.run_wrk(run.http, INFER, self.bodies(1, "v2"), 16, 2, 1, self.workdir / "wrk")
                out[label] = {"cold_start_s": run.cold_start_s, "cold_start_per_model_s": run.cold_start_s / len(models),
                              "rss_mb": run.rss_mb()}
                log(f"  {label}: ready in {run.cold_start_s:.2f} s, RSS {out[label]['rss_mb']:.0f} MB")
            finally:
                run.stop()
        self.extras["five_models"] = out

    def profile(self) -> None:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(pyspy).exists():
            log("py-spy not installed: no profile")
            return
        label = "A"
        log(f"profile {label} under load (py-spy)")
        run = self.start(label)
        try:
            self.warmup(run, "http", 1, "v2")
            seconds = 4 if self.args.quick else 8
            out = {}
            for fmt, path in (("flamegraph", RESULTS / "profile-A.svg"), ("raw", self.workdir / "profile-A.txt")):
                t = threading.Thread(target=load.run_wrk, args=(run.http, INFER, self.bodies(1, "v2"), 16,
                                                                 seconds + 2, 1, self.workdir / "wrk"))
                t.start()
                time.sleep(0.5)
                proc = subprocess.run([pyspy, "record", "--pid", str(run.process.pid), "--duration", str(seconds),
                                       "--rate", "250", "--format", fmt, "--output", str(path), "--nonblocking"],
                                      capture_output=True, text=True)
                t.join()
                if proc.returncode != 0:
                    log(f"  py-spy failed: {proc.stderr.strip()[-500:]}")
                    return
                out[fmt] = str(path)
            from .report import profile_summary

            (RESULTS / "profile-A.txt").write_text(profile_summary(self.workdir / "profile-A.txt"))
            self.extras["profile"] = {"svg": "profile-A.svg", "summary": "profile-A.txt"}
        finally:
            run.stop()

    # ---- all ----------------------------------------------------------------------------------
    def run(self) -> dict:
        from predictors.scoring import lleaves_available

        self.lleaves = lleaves_available() and not self.args.no_lleaves
        started = time.monotonic()
        info = machine()
        log(f"machine: {info['cores']} cores, {info['cpu']}; workdir {self.workdir}")
        if self.lleaves:
            log("compiling the lead-scoring models with lleaves (once, into the bench's cache)")
            self.precompile()
        from .inprocess import measure as inprocess

        log("in-process ceiling")
        self.extras["inprocess"] = inprocess(self.rows, seconds=0.3 if self.args.quick else 1.0,
                                             cache_dir=self.compiled_cache)
        for r in self.extras["inprocess"]:
            log(f"  {r['case']:<45} rows={r['rows_per_call']:<5} {r['rows_per_s']:12,.0f} rows/s")
        from .inprocess import cache_effect

        self.extras["cache_inprocess"] = cache_effect()
        for r in self.extras["cache_inprocess"]:
            log(f"  cache {r['model']}: {r['no_cache_us']:.0f} us without, {r['miss_us']:.0f} us miss, {r['hit_us']:.0f} us hit")
        from .reasons import measure as reasons_cost  # reason codes and decision record (docs/reasons.md)

        self.extras["reasons"] = reasons_cost(seconds=0.1 if self.args.quick else 0.2)
        if not self.args.no_grid:
            self.grid()
        if not self.args.only:
            extras = EXTRAS if self.args.extras is None else self.args.extras
            for name in extras if not self.args.no_extras else ():
                getattr(self, name)()
            if not self.args.no_profile:
                self.profile()
        return {"machine": info, "quick": self.args.quick, "duration_s": self.args.duration,
                "repeats": self.args.repeats, "concurrency": list(self.args.concurrency), "sizes": list(self.args.sizes),
                "repeat_rate": self.args.repeat_rate, "servers": self.servers, "points": self.points,
                "extras": self.extras, "elapsed_s": round(time.monotonic() - started)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 run of 2 s per point, fewer extras (fast iteration)")
    p.add_argument("--duration", type=float, help="seconds per run (default 4, quick 2)")
    p.add_argument("--repeats", type=int, help="runs per point (default 3, quick 1)")
    p.add_argument("--only", nargs="*", help="servers of the main grid to run (A A+lleaves M B C D); skips extras")
    p.add_argument("--no-grpc", action="store_true")
    p.add_argument("--no-extras", action="store_true", help="skip batching, workers, cache, five models")
    p.add_argument("--extras", nargs="*", choices=EXTRAS, help="run only these extras")
    p.add_argument("--no-grid", action="store_true", help="skip the main grid (with --extras)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-lleaves", action="store_true", help="leave out the compiled-trees variant")
    p.add_argument("--repeat-rate", type=float, default=0.3, help="share of repeated leads in the cache test")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 4.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.concurrency = (1, 16, 64)
    args.sizes = (1, 32)
    if not load.wrk_available():
        print("error: wrk not found (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    global RESULTS
    RESULTS = args.out or RESULTS
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    from .report import write_report

    write_report(results, RESULTS)
    log(f"wrote {RESULTS / 'results.md'}, results.json, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
