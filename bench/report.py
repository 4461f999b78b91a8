"""results.json -> results.md (tables) and results.png (chart); py-spy raw stacks -> a text summary."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

GRID_SERVERS = ("A", "A+lleaves", "M", "B", "C", "D")
DESCRIPTIONS = {
    "A": "this runtime (`runtime.InsuranceModel` on MLServer 1.7.1): validation, encoding, LightGBM, pricing, "
         "decision, drift accounting, metrics",
    "A+lleaves": "A with `compiled_trees: true` (trees compiled by lleaves, verified equal to LightGBM within 1e-9)",
    "M": "MLServer floor: A's requests and A's five outputs through MLServer with a runtime that computes "
         "nothing (bench/noop_runtime.py): the most any runtime on MLServer can reach with this traffic",
    "B": "stock `mlserver_lightgbm.LightGBMModel`, same model.txt, same MLServer settings; the client sends the "
         "39 encoded columns (predictors' LeadEncoder) and gets the score only",
    "C": "KServe 0.16 custom predictor (`kserve.Model` + `kserve.ModelServer`, V2) calling predictors/ "
         "(bench/kserve_server.py)",
    "D": "floor: raw ASGI app on uvicorn + orjson calling predictors/, and a bare grpcio asyncio server doing the "
         "same over gRPC (bench/floor_server.py): no framework, metrics or validation beyond predictors/",
}


def _fmt(v: float, digits: int = 0) -> str:
    if v != v:  # NaN
        return "–"
    return f"{v:,.{digits}f}"


def _cell(summary: dict, key: str = "rps", digits: int = 0) -> str:
    s = summary[key]
    if s["min"] == s["max"]:
        return _fmt(s["median"], digits)
    return f"{_fmt(s['median'], digits)} ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"


def _grid(results: dict) -> dict[tuple, dict]:
    return {(p["server"], p["proto"], p["rows"], p["c"]): p for p in results["points"] if p["experiment"] == "grid"}


def _ratio(grid: dict, a: str, b: str, key: tuple) -> str:
    pa, pb = grid.get((a, *key)), grid.get((b, *key))
    if not pa or not pb or not pb["summary"]["rps"]["median"]:
        return "–"
    return f"{pa['summary']['rps']['median'] / pb['summary']['rps']['median']:.2f}"


def write_report(results: dict, folder: Path) -> None:
    folder = Path(folder)
    (folder / "results.md").write_text(markdown(results), encoding="utf-8")
    try:
        chart(results, folder / "results.png")
    except ImportError:
        print("matplotlib not installed: no chart (pip install -e '.[bench]')")


def markdown(results: dict) -> str:
    m = results["machine"]
    grid = _grid(results)
    servers = [s for s in GRID_SERVERS if any(k[0] == s for k in grid)]
    keys = sorted({k[1:] for k in grid}, key=lambda k: (k[0] != "http", k[1], k[2]))
    lines = [
        "# Benchmark results",
        "",
        f"Taken {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, {m['os']}, Python {m['python']}; "
        f"{m['wrk']}. {'QUICK MODE (1 short run per point): indicative only. ' if results['quick'] else ''}"
        f"Each point: {results['repeats']} run(s) of {results['duration_s']:g} s after a warm-up, closed loop; "
        "cells are the median with min–max over the runs. Load generator and server share the machine. "
        "Reproduce: `make bench` (quick: `make bench BENCH_ARGS=--quick`); see docs/performance.md.",
        "",
        "Servers (all loopback, `OMP_NUM_THREADS=1`; MLServer with `parallel_workers: 0`, `debug: false`):",
        "",
    ]
    lines += [f"- **{s}**: {DESCRIPTIONS[s]}" for s in servers]
    grpc_load = (f"{m['h2load']} (h2load), one connection with `c` streams in flight, one request body per run "
                 "(checked with grpcio before and after: h2load sees HTTP statuses, not gRPC ones)"
                 if m.get("h2load") else
                 "tritonclient.grpc.aio, `c` requests in flight from one asyncio process (the Python client costs "
                 "CPU on the same cores, so gRPC figures are lower bounds for every server alike)")
    lines += ["", f"HTTP load: wrk, one thread, 64 different request bodies cycled. gRPC load: {grpc_load}.", ""]

    lines += ["## Requests per second", "", "rows/s = requests/s × rows per request.", "",
              "| protocol | rows/request | c | " + " | ".join(servers) + " |",
              "|---|---|---|" + "---|" * len(servers)]
    for key in keys:
        cells = [_cell(grid[(s, *key)]["summary"]) if (s, *key) in grid else "–" for s in servers]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")

    lines += ["", "## Latency p50 / p99 (ms)", "",
              "| protocol | rows/request | c | " + " | ".join(servers) + " |",
              "|---|---|---|" + "---|" * len(servers)]
    for key in keys:
        cells = []
        for s in servers:
            p = grid.get((s, *key))
            cells.append("–" if not p else f"{_fmt(p['summary']['p50_ms']['median'], 2)} / "
                                           f"{_fmt(p['summary']['p99_ms']['median'], 2)}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")

    pairs = [("A", "B"), ("A", "C"), ("A", "D"), ("A", "M")]
    if "A+lleaves" in servers:
        pairs += [("A+lleaves", "B"), ("A+lleaves", "C"), ("A+lleaves", "D"), ("A+lleaves", "M")]
    pairs += [("M", "B")]
    lines += ["", "## Ratios (requests/s, medians of the same run)", "",
              "| protocol | rows/request | c | " + " | ".join(f"{a}/{b}" for a, b in pairs) + " |",
              "|---|---|---|" + "---|" * len(pairs)]
    for key in keys:
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(_ratio(grid, a, b, key) for a, b in pairs) + " |")

    lines += ["", "## Cold start and memory", "",
              "Cold start: process start to model ready (`/v2/models/auto/ready` answers 200). RSS: the server "
              "process and its children, highest sample during the runs.", "",
              "| server | cold start (s) | RSS (MB) |", "|---|---|---|"]
    for label, s in results["servers"].items():
        lines.append(f"| {label} | {s['cold_start_s']:.2f} | {s['rss_mb']:.0f} |")
    five = results["extras"].get("five_models") or {}
    for label, s in five.items():
        lines.append(f"| {label} (auto, claims, health, home, life) | {s['cold_start_s']:.2f} "
                     f"({s['cold_start_per_model_s']:.2f} per model) | {s['rss_mb']:.0f} |")
    compile_s = results["extras"].get("compile_seconds")
    if compile_s:
        lines += ["", "First compilation by lleaves (once per model and machine, cached outside the bundle; the "
                  "runtime compiles in a subprocess while LightGBM serves): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()) + "."]

    inproc = results["extras"].get("inprocess") or []
    if inproc:
        sizes = sorted({r["rows_per_call"] for r in inproc})
        cases = list(dict.fromkeys(r["case"] for r in inproc))
        by = {(r["case"], r["rows_per_call"]): r["rows_per_s"] for r in inproc}
        lines += ["", "## In-process ceiling (rows/s, one thread, no server)", "",
                  "| scoring | " + " | ".join(f"{s} row{'s' if s > 1 else ''}/call" for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for c in cases:
            lines.append(f"| {c} | " + " | ".join(_fmt(by.get((c, s), float('nan'))) for s in sizes) + " |")

    extra_points = [p for p in results["points"] if p["experiment"] != "grid"]
    batching = [p for p in extra_points if p["experiment"] == "batching"]
    if batching:
        base = batching[0].get("base", "A")
        lines += ["", f"## MLServer adaptive batching ({base}, 1-row HTTP requests)", "",
                  "| max_batch_size / max_batch_time | c | req/s = rows/s | p50 (ms) | p99 (ms) | vs unbatched |",
                  "|---|---|---|---|---|---|"]
        for c in sorted({p["c"] for p in batching}):
            unb = grid.get((base, "http", 1, c))
            if unb:
                lines.append(f"| unbatched | {c} | {_cell(unb['summary'])} | {_fmt(unb['summary']['p50_ms']['median'], 2)} | "
                             f"{_fmt(unb['summary']['p99_ms']['median'], 2)} | 1.00 |")
            for p in [p for p in batching if p["c"] == c]:
                ratio = (p["summary"]["rps"]["median"] / unb["summary"]["rps"]["median"]) if unb else float("nan")
                lines.append(f"| {p['max_batch_size']} / {p['max_batch_time'] * 1000:g} ms | {c} | {_cell(p['summary'])} | "
                             f"{_fmt(p['summary']['p50_ms']['median'], 2)} | {_fmt(p['summary']['p99_ms']['median'], 2)} | "
                             f"{ratio:.2f} |")
    workers = [p for p in extra_points if p["experiment"] == "workers"]
    if workers:
        lines += ["", "## MLServer parallel_workers (A, 1-row HTTP, OMP_NUM_THREADS=1)", "",
                  "| parallel_workers | c | req/s | p50 (ms) | p99 (ms) | RSS (MB) |", "|---|---|---|---|---|---|"]
        for c in sorted({p["c"] for p in workers}):
            unb = grid.get(("A", "http", 1, c))
            if unb:
                lines.append(f"| 0 | {c} | {_cell(unb['summary'])} | {_fmt(unb['summary']['p50_ms']['median'], 2)} | "
                             f"{_fmt(unb['summary']['p99_ms']['median'], 2)} | {results['servers'].get('A', {}).get('rss_mb', float('nan')):.0f} |")
            for p in [p for p in workers if p["c"] == c]:
                rss = results["servers"].get(p["server"], {}).get("rss_mb", float("nan"))
                b = p.get("batching")
                what = f"{p['parallel_workers']}" + (f", adaptive batching {b[0]} / {b[1] * 1000:g} ms" if b else "")
                lines.append(f"| {what} | {c} | {_cell(p['summary'])} | "
                             f"{_fmt(p['summary']['p50_ms']['median'], 2)} | {_fmt(p['summary']['p99_ms']['median'], 2)} | {rss:.0f} |")
    cache = [p for p in extra_points if p["experiment"] == "cache"]
    if cache:
        lines += ["", f"## Prediction cache (A, 1-row HTTP, c=16; repeated leads among the last 200)", "",
                  "| server | cache TTL (s) | repeat rate | repeats in what was sent (= ideal hit ratio) | req/s | p50 (ms) | p99 (ms) |",
                  "|---|---|---|---|---|---|---|"]
        for p in cache:
            lines.append(f"| {p['server']} | {p['ttl'] or 'off'} | {p['repeat_rate']:.0%} | {p['repeat_share_sent']:.1%} | "
                         f"{_cell(p['summary'])} | {_fmt(p['summary']['p50_ms']['median'], 2)} | "
                         f"{_fmt(p['summary']['p99_ms']['median'], 2)} |")

    cache_ip = results["extras"].get("cache_inprocess") or []
    if cache_ip:
        lines += ["", "In-process, one thread, 1-row calls of predictors/ (µs per call):", "",
                  "| model | no cache | cache miss | cache hit |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['no_cache_us']:,.0f} | {r['miss_us']:,.0f} | {r['hit_us']:,.0f} |" for r in cache_ip]
    limited = [p for p in extra_points if p["experiment"] == "ratelimit"]
    rl_ip = results["extras"].get("ratelimit_inprocess")
    if limited or rl_ip:
        lines += ["", "## Rate limit cost (A with an API key, 1-row HTTP, c=16; a limit that never trips)", ""]
        if limited:
            lines += ["| server | req/s | p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
            lines += [f"| {p['server']} | {_cell(p['summary'])} | {_fmt(p['summary']['p50_ms']['median'], 2)} | "
                      f"{_fmt(p['summary']['p99_ms']['median'], 2)} |" for p in limited]
            if len(limited) == 2:
                a, b = (p["summary"]["rps"]["median"] for p in limited)
                lines += ["", f"With the limit: {b / a:.3f}x the requests per second without it (runs alternate; "
                              "within the min-max spread of the runs is noise)."]
        if rl_ip:
            lines += ["", f"In-process: taking a token costs {rl_ip['admit_us']:.2f} µs per request "
                          f"(authenticating the API key: {rl_ip['authenticate_us']:.2f} µs)."]
    from .reasons import report_lines as reasons_lines

    lines += reasons_lines(results["extras"].get("reasons") or [])
    lines += ["", "## Targets (issue 6; reported, not asserted)", "", "| target | measured | met |", "|---|---|---|"]
    lines += targets(results, grid)
    if results["extras"].get("profile"):
        lines += ["", "## Profile", "", "py-spy flame graph of A under 1-row HTTP load at c=16: "
                  "[profile-A.svg](profile-A.svg); summary by function and by layer: [profile-A.txt](profile-A.txt)."]
    lines += ["", "![requests per second](results.png)", ""]
    return "\n".join(lines)


def targets(results: dict, grid: dict) -> list[str]:
    def rps(server, *key):
        p = grid.get((server, *key))
        return p["summary"]["rps"]["median"] if p else float("nan")

    out = []
    best = "A+lleaves" if any(k[0] == "A+lleaves" for k in grid) else "A"
    for server in dict.fromkeys(("A", best)):
        r = rps(server, "http", 1, 16) / rps("B", "http", 1, 16)
        out.append(f"| {server}/B >= 1.0, 1-row HTTP c=16 | {r:.2f} | {'yes' if r >= 1.0 else 'no'} |")
        for proto in ("http", "grpc"):
            r = rps(server, proto, 1, 16) / rps("C", proto, 1, 16)
            out.append(f"| {server}/C >= 1.5, 1-row {proto} c=16 | {r:.2f} | {'yes' if r >= 1.5 else 'no'} |")
    batching = [p for p in results["points"] if p["experiment"] == "batching" and p["c"] == 64]
    if batching:
        base = batching[0].get("base", "A")
        unb = grid.get((base, "http", 1, 64))
        best_p = max(batching, key=lambda p: p["summary"]["rows_per_s"]["median"])
        if unb:
            r = best_p["summary"]["rows_per_s"]["median"] / unb["summary"]["rows_per_s"]["median"]
            p99 = best_p["summary"]["p99_ms"]["median"]
            out.append(f"| batching at c=64: rows/s >= 3x unbatched, p99 < 25 ms | {r:.2f}x, p99 {p99:.1f} ms "
                       f"({best_p['max_batch_size']} / {best_p['max_batch_time'] * 1000:g} ms) | "
                       f"{'yes' if r >= 3 and p99 < 25 else 'no'} |")
    five = results["extras"].get("five_models") or {}
    for label, s in five.items():
        out.append(f"| cold start < 5 s per model ({label}) | {s['cold_start_per_model_s']:.2f} s per model "
                   f"({s['cold_start_s']:.2f} s for five) | {'yes' if s['cold_start_per_model_s'] < 5 else 'no'} |")
        out.append(f"| RSS < 250 MB for five models ({label}) | {s['rss_mb']:.0f} MB | {'yes' if s['rss_mb'] < 250 else 'no'} |")
    return out


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _grid(results)
    servers = [s for s in GRID_SERVERS if any(k[0] == s for k in grid)]
    protos = [p for p in ("http", "grpc") if any(k[1] == p for k in grid)]
    if not protos:
        return
    fig, axes = plt.subplots(1, len(protos), figsize=(7 * len(protos), 4.8), squeeze=False)
    colors = {"A": "#1f77b4", "A+lleaves": "#17becf", "M": "#9467bd", "B": "#ff7f0e", "C": "#2ca02c", "D": "#7f7f7f"}
    for ax, proto in zip(axes[0], protos):
        keys = sorted({k[2:] for k in grid if k[1] == proto})
        width = 0.8 / len(servers)
        for i, s in enumerate(servers):
            xs, ys, lo, hi = [], [], [], []
            for j, (rows, c) in enumerate(keys):
                p = grid.get((s, proto, rows, c))
                if not p:
                    continue
                r = p["summary"]["rps"]
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ys.append(r["median"])
                lo.append(r["median"] - r["min"])
                hi.append(r["max"] - r["median"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=colors.get(s))
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{rows} row{'s' if rows > 1 else ''}\nc={c}" for rows, c in keys])
        ax.set_ylabel("requests/s (median, min–max)")
        ax.set_title(f"{proto.upper()} — auto model")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"{m['cores']} cores, {m['cpu']}, {m['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- py-spy ---------------------------------------------------------------------------------------

LAYERS = [
    ("this project: runtime/", re.compile(r"[(/ ]runtime/[a-z_]+\.py")),
    ("this project: predictors/", re.compile(r"[(/ ]predictors/[a-z_]+\.py")),
    ("LightGBM", re.compile(r"lightgbm")),
    ("MLServer", re.compile(r"mlserver/")),
    ("FastAPI / Starlette", re.compile(r"(fastapi|starlette|starlette_exporter)/")),
    ("pydantic", re.compile(r"pydantic")),
    ("uvicorn / uvloop / asyncio", re.compile(r"(uvicorn|uvloop|asyncio|httptools)")),
    ("prometheus_client", re.compile(r"prometheus_client")),
    ("grpc", re.compile(r"grpc")),
]


def profile_summary(raw: Path, top: int = 30) -> str:
    """py-spy's raw (collapsed) stacks -> shares by layer, by function (inclusive) and by leaf (self)."""
    total = 0
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    layers: Counter = Counter()
    for line in Path(raw).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        leaf[frames[-1]] += n
        # the innermost layer of the stack owns the sample
        for f in reversed(frames):
            name = next((lname for lname, rx in LAYERS if rx.search(f)), None)
            if name:
                layers[name] += n
                break
        else:
            layers["other (interpreter, idle)"] += n
    if not total:
        return "no samples\n"
    out = [f"py-spy samples of the serving process under load: {total} (A, 1-row HTTP, c=16)", "",
           "By layer (the innermost known layer of each sample's stack):"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in layers.most_common()]
    out += ["", f"Top {top} functions, inclusive (time in the function and what it calls):"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", f"Top {top} functions, self time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(out) + "\n"
