"""`python -m bench.bulk` (part of `make bench`; alone: `make bench-bulk`, a few minutes): big requests,
one-vertical memory and cold start, the gRPC metrics interceptor, the scalar business formulas.

Writes bench/results/bulk.md, bulk.json and profile-bulk.txt. Servers one at a time on loopback, the
same `auto` model: A (this runtime, raw fields, the full business path; gzip at its default
`gzip_level` 1), A gzip 9 (`gzip_level: 0`, MLServer's GZip middleware at level 9, as on MLServer's
path), A+lleaves (`compiled_trees`), B (stock `mlserver_lightgbm`, the client sends the encoded matrix
and gets the score only). One client (c=1) sending 1,000- and 10,000-row requests over HTTP without
and with `Accept-Encoding: gzip` (wrk) and over gRPC (h2load). Ratios are within this run: the
machine is shared and absolute numbers move between runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from runtime.serve import example_request

from . import load, payloads, servers
from .__main__ import log, machine

RESULTS = Path(__file__).resolve().parent / "results"
INFER = f"/v2/models/{servers.MODEL}/infer"
SIZES = (1000, 10000)
MODES = ("http", "http+gzip", "grpc")
STEPS = ("inprocess", "scalar_rows", "grpc_interceptor", "big_requests", "single_row", "memory", "container", "profile")


def _one_row_requests(port: int, model: str, count: int, label: str) -> None:
    """`count` one-row requests, one after another on one connection; RuntimeError on any non-200."""
    body = example_request(model).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(count):
            conn.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{label}: HTTP {r.status}")
    finally:
        conn.close()


def _default_image() -> str:
    """`make image`'s tag: insurance-serving:<the project's version>."""
    import tomllib

    version = tomllib.loads((servers.ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return f"insurance-serving:{version}"



class Bulk:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="insurance-bulk-"))
        self.compiled_cache = self.workdir / "compiled"
        self.rows = payloads.load_rows(max(SIZES))
        self.points: list[dict] = []
        self.out: dict = {}

    # ---- load ---------------------------------------------------------------------------------
    def bodies(self, size: int, kind: str) -> list[bytes]:
        return payloads.bodies(self.rows, size, kind, count=max(1, min(4, self.rows.count // size)))

    def run_once(self, run: servers.Running, size: int, mode: str, kind: str) -> dict:
        if mode == "grpc":
            message = payloads.grpc_message(self.rows.slice(0, size), self.rows.features, kind, servers.MODEL)
            p = load.run_h2load(run.grpc, message, 1, self.args.duration, size, self.workdir / "h2load")
        else:
            headers = {"Accept-Encoding": "gzip"} if mode == "http+gzip" else None
            p = load.run_wrk(run.http, INFER, self.bodies(size, kind), 1, self.args.duration, size,
                             self.workdir / "wrk", headers=headers)
        return p.to_dict()

    def record(self, label: str, size: int, mode: str, runs: list[dict], ratios: list[float]) -> dict:
        med = {k: statistics.median(r[k] for r in runs) for k in ("rows_per_s", "p50_ms", "p99_ms", "rps")}
        entry = {"server": label, "rows": size, "mode": mode, "runs": runs, **med,
                 "errors": sum(r["errors"] for r in runs),
                 "ratio_to_b": statistics.median(ratios) if ratios else None}
        self.points.append(entry)
        log(f"  {label:<10} {mode:<9} rows={size:<5} {med['rows_per_s']:>10,.0f} rows/s  "
            f"p50 {med['p50_ms']:7.1f} ms  p99 {med['p99_ms']:7.1f} ms  errors {entry['errors']}"
            + (f"  /B {entry['ratio_to_b']:.2f}" if ratios else ""))
        return entry

    def start_a(self, label: str, extra: dict | None = None, models: tuple[str, ...] = (servers.MODEL,),
                env: dict | None = None) -> servers.Running:
        wd = self.workdir / "".join(ch if ch.isalnum() else "_" for ch in label)
        wd.mkdir(parents=True, exist_ok=True)
        repo = servers.mlserver_repository(wd, "A", extra=extra, models=models)
        return servers.start_mlserver(label, repo, wd, models=models, env=env)

    def start_b(self) -> servers.Running:
        wd = self.workdir / "B"
        wd.mkdir(parents=True, exist_ok=True)
        return servers.start_mlserver("B", servers.mlserver_repository(wd, "B"), wd, stock=True)

    # ---- experiments --------------------------------------------------------------------------
    def big_requests(self) -> None:
        """Every server up at once (an idle one costs nothing), measured in turn for each size and
        transport, `repeats` rounds: a change of the machine's load hits neighbours alike, and each
        round's ratio to B is taken before the median (the shared machine moves absolute numbers by
        2-3x within minutes)."""
        compiled = {"compiled_trees": True, "compiled_trees_cache": str(self.compiled_cache)}
        plan = [("A", None, MODES), ("A gzip 9", {"gzip_level": 0}, ("http+gzip",)), ("B", None, MODES)]
        if self.lleaves:
            plan.insert(1, ("A+lleaves", compiled, MODES))
        running: dict[str, servers.Running] = {}
        try:
            for label, extra, _ in plan:
                log(f"server {label}")
                running[label] = self.start_b() if label == "B" else self.start_a(label, extra)
                kind = "stock" if label == "B" else "v2"
                load.run_wrk(running[label].http, INFER, self.bodies(1000, kind), 1, 1, 1000, self.workdir / "wrk")
            if self.lleaves:  # LightGBM serves until the compiled trees are verified: wait for them
                time.sleep(2)
            for size in SIZES:
                for mode in MODES:
                    labels = [label for label, _, modes in plan if mode in modes]
                    runs: dict[str, list[dict]] = {label: [] for label in labels}
                    for _ in range(self.args.repeats):
                        for label in labels:
                            runs[label].append(self.run_once(running[label], size, mode,
                                                             "stock" if label == "B" else "v2"))
                    for label in labels:
                        b = runs.get("B") if label != "B" else None
                        ratios = [r["rows_per_s"] / rb["rows_per_s"] for r, rb in zip(runs[label], b)] if b else []
                        self.record(label, size, mode, runs[label], ratios)
            self.response_sizes(running["A"])
        finally:
            for run in running.values():
                run.stop()

    def response_sizes(self, run: servers.Running) -> None:
        """Bytes of a 10,000-row answer: plain, gzip level 1 (A's default) and level 9 (MLServer's)."""
        import gzip

        body = self.bodies(10000, "v2")[0]
        plain = _post(run.http_port, body, {})[1]
        out = {"plain_bytes": len(plain)}
        for level in (1, 6, 9):
            started = time.perf_counter()
            out[f"gzip{level}_bytes"] = len(gzip.compress(plain, compresslevel=level, mtime=0))
            out[f"gzip{level}_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        self.out["response_10000_rows"] = out
        log(f"  10,000-row answer: {out}")

    def single_row(self) -> None:
        """The single-row ratio A/B over HTTP at c=16 (the issue's target: kept >= 1.5). Both servers
        run at once (the idle one costs nothing) and are measured in turn, so that the machine's load
        changes hit both alike."""
        runs = {"A": self.start_a("A"), "B": self.start_b()}
        try:
            bodies = {label: payloads.bodies(self.rows, 1, "stock" if label == "B" else "v2", count=64)
                      for label in runs}
            for label, run in runs.items():
                load.run_wrk(run.http, INFER, bodies[label], 16, 1, 1, self.workdir / "wrk")
            rps: dict[str, list[float]] = {label: [] for label in runs}
            for _ in range(max(3, self.args.repeats)):
                for label, run in runs.items():
                    rps[label].append(load.run_wrk(run.http, INFER, bodies[label], 16, self.args.duration / 2, 1,
                                                   self.workdir / "wrk").rps)
            self.out["single_row_http_c16_rps"] = {label: statistics.median(v) for label, v in rps.items()}
            self.out["single_row_http_c16_runs"] = rps
            # A/B of each back-to-back pair, then the median: a load change between pairs cancels out
            self.out["single_row_http_c16_ab"] = statistics.median(a / b for a, b in zip(rps["A"], rps["B"]))
            log(f"  1-row HTTP c=16 req/s: {rps}; A/B (median of pairs) {self.out['single_row_http_c16_ab']:.2f}")
        finally:
            for run in runs.values():
                run.stop()

    def memory(self) -> None:
        """One vertical per server, as a KServe pod serves it: cold start (process start to ready)
        and resident memory after load and after 1,000 requests; modules a lead-scoring pod should
        not map. In the process here; in the image: the container step."""
        variants = [("auto", {}, "A auto"), ("claims", {}, "A claims")]
        if self.lleaves:
            variants.append(("auto", {"compiled_trees": True, "compiled_trees_cache": str(self.compiled_cache)},
                             "A+lleaves auto"))
        image_like = servers.without_pyarrow(self.workdir)  # the image has no pyarrow (pip install .)
        out = {}
        for model, extra, label in variants:
            run = self.start_a(label, extra, models=(model,), env=image_like)
            try:
                after_load = run.rss_mb()
                _one_row_requests(run.http_port, model, 1000, label)
                maps = Path(f"/proc/{run.process.pid}/maps").read_text()
                out[label] = {"cold_start_s": round(run.cold_start_s, 2), "rss_after_load_mb": round(after_load, 1),
                              "rss_after_1000_requests_mb": round(run.rss_mb(), 1),
                              "maps_sklearn": "/sklearn/" in maps,
                              "scipy_packages_mapped": sorted({ln.split("/scipy/", 1)[1].split("/")[0]
                                                               for ln in maps.splitlines() if "/scipy/" in ln})}
                log(f"  {label}: {out[label]}")
            finally:
                run.stop()
        self.out["memory"] = out

    def container(self) -> None:
        """The memory step's figures inside the image (`make image`), as a KServe pod runs it: one
        bundle mounted read-only at /mnt/models, read-only root, uid 1000; cold start is `run` to
        ready. Skipped, saying why, where no engine answers or the image was not built."""
        from . import container as ctr

        image = self.args.image
        if ctr.find_engine() is None or ctr.run_engine("image", "exists" if ctr.engine() == "podman" else "inspect",
                                                        image, check=False).returncode != 0:
            self.out["container"] = {"skipped": f"no container engine or no image {image} (`make image`)"}
            log(f"  container: {self.out['container']['skipped']}")
            return
        out = {}
        for model in ("auto", "claims"):
            bundle = next((servers.MODELS / model).glob("*/manifest.json")).parent
            c = ctr.start_container(image, models=bundle)
            try:
                ready = c.wait_ready([f"/v2/models/{model}/ready"], timeout=180)
                after_load = c.rss_mib()
                _one_row_requests(c.ports[ctr.HTTP], model, 1000, f"{model} in the container")
                after_requests = c.rss_mib()
                # compiled trees (the image's default): the compiler runs in a child process once per pod
                c.wait_children()
                try:  # the server verifies and swaps the library after the child exits
                    logs = c.wait_log("scoring with compiled trees", "compiled trees unavailable", timeout=5)
                except ctr.EngineError:
                    logs = c.logs()
                out[model] = {"cold_start_s": round(ready, 2), "rss_after_load_mb": round(after_load, 1),
                              "rss_after_1000_requests_mb": round(after_requests, 1),
                              "rss_server_alone_mb": round(c.rss_mib(), 1),
                              "compiled_trees": "scoring with compiled trees" in logs}
                log(f"  {model} in {image}: {out[model]}")
            finally:
                c.remove()
        self.out["container"] = {"image": image, "engine": ctr.engine(), **out}

    def inprocess(self) -> None:
        from .inprocess import measure

        self.out["inprocess"] = measure(self.rows, seconds=self.args.duration / 3, sizes=SIZES,
                                        cache_dir=self.compiled_cache)
        for r in self.out["inprocess"]:
            log(f"  {r['case']:<45} rows={r['rows_per_call']:<6} {r['rows_per_s']:12,.0f} rows/s")

    def scalar_rows(self) -> None:
        """µs per 1-row and 16-row predict() with and without the scalar business formulas."""
        import predictors.business as business
        import predictors.predictor as predictor_module
        from predictors import load_predictor

        from .inprocess import _rate

        bundle = next((servers.MODELS / servers.MODEL).glob("*/manifest.json")).parent
        p = load_predictor(bundle)
        saved = predictor_module.SCALAR_ROWS, business._SCALAR_ROWS
        out = {}
        for size in (1, 16):
            raw = self.rows.slice(0, size)
            for label, limits in (("scalar", saved), ("numpy", (0, 0))):
                predictor_module.SCALAR_ROWS, business._SCALAR_ROWS = limits
                try:
                    out[f"{label} {size} rows us"] = round(1e6 * size / _rate(lambda: p.predict(raw, size), size, 0.5), 1)
                finally:
                    predictor_module.SCALAR_ROWS, business._SCALAR_ROWS = saved
        self.out["scalar_business"] = out
        log(f"  predict() per call: {out}")

    def grpc_interceptor(self) -> None:
        """µs per unary call of the Prometheus interceptor: MLServer's (py-grpc-prometheus) and the
        runtime's (runtime/grpc_metrics.py), same series, in-process (bench/interceptor.py)."""
        # a child interpreter: MLServer's gRPC protos and tritonclient's (the load's) clash in one process
        out = subprocess.run([sys.executable, "-m", "bench.interceptor"], capture_output=True, text=True,
                             timeout=300, check=True, cwd=servers.ROOT)
        self.out["grpc_interceptor"] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"  gRPC interceptor: {self.out['grpc_interceptor']}")

    def profile(self) -> None:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(pyspy).exists():
            log("py-spy not installed: no profile")
            return
        run = self.start_a("A profile")
        raw = self.workdir / "profile-bulk.txt"
        try:
            bodies = self.bodies(10000, "v2")
            t = threading.Thread(target=load.run_wrk, args=(run.http, INFER, bodies, 1, 8, 10000, self.workdir / "wrk"),
                                 kwargs={"headers": {"Accept-Encoding": "gzip"}})
            t.start()
            time.sleep(1)
            proc = subprocess.run([pyspy, "record", "--pid", str(run.process.pid), "--duration", "5", "--rate", "200",
                                   "--format", "raw", "--output", str(raw), "--nonblocking"],
                                  capture_output=True, text=True)
            t.join()
            if proc.returncode != 0:
                log(f"  py-spy failed: {proc.stderr.strip()[-300:]}")
                return
            from .report import profile_summary

            text = profile_summary(raw).replace("(A, 1-row HTTP, c=16)", "(A, 10,000-row HTTP requests, gzip accepted, c=1)")
            (self.args.out / "profile-bulk.txt").write_text(text)
            self.out["profile"] = "profile-bulk.txt"
        finally:
            run.stop()

    def run(self) -> dict:
        from predictors.scoring import lleaves_available

        self.lleaves = lleaves_available()
        started = time.monotonic()
        info = machine()
        if self.lleaves:
            from predictors.scoring import compile_to, compiled_path

            bundle = next((servers.MODELS / servers.MODEL).glob("*/manifest.json")).parent
            t0 = time.monotonic()
            compile_to(bundle / "model.txt", compiled_path(bundle / "model.txt", self.compiled_cache))
            self.out["compile_seconds"] = round(time.monotonic() - t0, 2)
            log(f"compiled {servers.MODEL} with lleaves in {self.out['compile_seconds']} s")
        steps = self.args.steps
        for step in STEPS:
            if step in steps:
                log(step)
                getattr(self, step)()
        return {"machine": info, "duration_s": self.args.duration, "repeats": self.args.repeats,
                "points": self.points, **self.out, "elapsed_s": round(time.monotonic() - started)}


def _post(port: int, body: bytes, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", INFER, body, {"Content-Type": "application/json", **headers})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ---- report -----------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    m = results["machine"]
    by = {(p["server"], p["rows"], p["mode"]): p for p in results["points"]}
    inproc = {(r["case"], r["rows_per_call"]): r["rows_per_s"] for r in results.get("inprocess", [])}
    lines = [
        "# Big requests, one-vertical memory, cold start (`python -m bench.bulk`)", "",
        f"{m['date']}; {m['cores']} cores ({m['cpu']}), shared with other work: compare ratios within this run, "
        f"not absolute numbers across runs. {results['repeats']} round(s) of {results['duration_s']:g} s per point, "
        "one client (c=1), all servers up and measured in turn per round; rows/s and latencies are medians, "
        "the ratio to B is the median of the rounds' ratios. A: this runtime, raw fields, full business path (validation, encoding, "
        "LightGBM, pricing, decisions, drift accounting, metrics), gzip level 1 when accepted; A gzip 9: "
        "`gzip_level: 0` (MLServer's middleware, level 9); A+lleaves: `compiled_trees`; B: stock "
        "`mlserver_lightgbm`, encoded matrix in, score out.", "",
        "| server | rows/request | transport | rows/s | p50 ms | p99 ms | ratio to B (median of rounds) | ratio to in-process LightGBM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (server, rows, mode), p in by.items():
        ceiling = inproc.get(("LightGBM Booster.predict", rows))
        ratio_b = f"{p['ratio_to_b']:.2f}" if p.get("ratio_to_b") else "–"
        ratio_c = f"{p['rows_per_s'] / ceiling:.2f}" if ceiling else "–"
        lines.append(f"| {server} | {rows:,} | {mode} | {p['rows_per_s']:,.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} "
                     f"| {ratio_b} | {ratio_c} |")
    if inproc:
        lines += ["", "In-process ceiling (one thread, no server):", "", "| case | rows/call | rows/s |", "|---|---|---|"]
        lines += [f"| {case} | {rows:,} | {v:,.0f} |" for (case, rows), v in inproc.items()]
    for key, title in (("response_10000_rows", "A's 10,000-row answer: bytes and compression time"),
                       ("memory", "One vertical per server process (no pyarrow, as in the image)"),
                       ("container", "One vertical in the image (one bundle mounted read-only, read-only root, "
                                     "uid 1000; MiB of the container's processes)"),
                       ("single_row_http_c16_runs", "Single row, HTTP, c=16, req/s of each run (A and B in turn)"),
                       ("scalar_business", "predict() µs per call with the scalar (plain-Python) business "
                                           "formulas for <= 16 rows and without them"),
                       ("grpc_interceptor", "gRPC Prometheus interceptor, µs per unary call"),
                       ("compile_seconds", "lleaves compile time of the auto model, s")):
        if key in results:
            lines += ["", f"{title}:", "", "```", json.dumps(results[key], indent=1), "```"]
    if "single_row_http_c16_ab" in results:
        lines += ["", "Single-row A/B over HTTP at c=16 (median of back-to-back pairs): "
                      f"{results['single_row_http_c16_ab']:.2f}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    steps = STEPS
    p = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    p.add_argument("--repeats", type=int, default=3, help="rounds per point (ratios: the median of the rounds')")
    p.add_argument("--steps", nargs="*", choices=steps, default=list(steps))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--image", default=_default_image(), help="image of the container step (default: %(default)s)")
    args = p.parse_args(argv)
    if not load.wrk_available() or not load.h2load_available():
        print("error: wrk and h2load are needed (make bench-deps)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    bulk = Bulk(args)
    try:
        results = bulk.run()
    finally:
        shutil.rmtree(bulk.workdir, ignore_errors=True)
    (args.out / "bulk.json").write_text(json.dumps(results, indent=1))
    (args.out / "bulk.md").write_text(markdown(results))
    log(f"wrote {args.out / 'bulk.md'}, bulk.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
