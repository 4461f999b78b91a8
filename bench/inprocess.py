"""The in-process ceiling: rows/s of scoring with no server at all, one thread.

LightGBM's Booster.predict, the same booster through the C API (predictors/scoring.py), the
trees compiled by lleaves when installed, and the whole predictors/ business path (validation,
encoding, scoring, pricing) from raw columns, on 1 row, 32 rows and 1,024 rows per call.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from predictors import load_predictor
from predictors.scoring import CompiledScorer, SharedLibraryScorer, compile_to, compiled_path, lleaves_available

from .payloads import Rows, encoded_matrix
from .servers import MODELS, MODEL


def _rate(fn, rows: int, seconds: float) -> float:
    fn()  # warm
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls * rows / (now - start)


def measure(rows: Rows, seconds: float = 0.5, sizes: tuple[int, ...] = (1, 32, 1024),
            cache_dir: Path | None = None) -> list[dict]:
    bundle = next((MODELS / MODEL).glob("*/manifest.json")).parent
    predictor = load_predictor(bundle)
    booster = predictor.model
    compiled = None
    if lleaves_available():
        cache_dir = cache_dir or Path(tempfile.gettempdir()) / "insurance-bench-compiled"
        obj = compiled_path(bundle / "model.txt", cache_dir)  # what the server runs: a .so where a linker exists
        if not obj.exists():
            compile_to(bundle / "model.txt", obj)
        compiled = (SharedLibraryScorer(obj, booster.num_feature()) if obj.suffix == ".so"
                    else CompiledScorer(bundle / "model.txt", obj))
    out = []
    for size in sizes:
        raw = rows.slice(0, size)
        x = np.ascontiguousarray(encoded_matrix(raw, rows.features))
        cases = {
            "LightGBM Booster.predict": lambda: booster.predict(x, num_threads=1),
            "LightGBM C API (predictors/scoring.py)": lambda: predictor.booster_scorer(x),
        }
        if compiled is not None:
            cases["lleaves compiled trees"] = lambda: compiled(x)
        cases["predictors/ full business path (LightGBM)"] = lambda: predictor.predict(raw)
        if compiled is not None:
            def full_compiled():
                predictor.scorer = compiled
                try:
                    return predictor.predict(raw)
                finally:
                    predictor.scorer = predictor.booster_scorer
            cases["predictors/ full business path (lleaves)"] = full_compiled
        for name, fn in cases.items():
            out.append({"case": name, "rows_per_call": size, "rows_per_s": _rate(fn, size, seconds)})
    return out


def cache_effect(names: tuple[str, ...] = ("auto", "claims"), rows: int = 200) -> list[dict]:
    """µs per 1-row predictors/ call without the prediction cache, on a miss and on a hit."""
    from predictors.spec import load_config
    from training.synthetic import generate

    out = []
    for name in names:
        bundle = next((MODELS / name).glob("*/manifest.json")).parent
        predictor = load_predictor(bundle)
        df = generate(load_config().vertical(name), seed=3, rows=rows)
        raws = [{f.name: [None if isinstance(r[f.name], float) and r[f.name] != r[f.name] else r[f.name]]
                 for f in predictor.features} for r in df.to_dict("records")]

        def per_call() -> float:
            start = time.perf_counter()
            for raw in raws:
                predictor.predict(raw, 1)
            return (time.perf_counter() - start) / len(raws) * 1e6

        plain = per_call()
        predictor.enable_cache(60)
        miss, hit = per_call(), per_call()
        out.append({"model": name, "no_cache_us": plain, "miss_us": miss, "hit_us": hit})
    return out


_RATELIMIT_SCRIPT = r"""
import json, time
from runtime.auth import Authenticator
from runtime.ratelimit import Limiter, Policy
from runtime.settings import RuntimeSettings

opts = RuntimeSettings(api_keys="bench-key", rate_limit=1e9, rate_limit_burst=1e9)
auth, policy, limiter = Authenticator(opts), Policy(opts), Limiter()
principal = auth.authenticate({"x-api-key": "bench-key"})

def timed(fn, n=200_000):
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6

admit = timed(lambda: policy.admit(principal, "auto", limiter))
authenticate = timed(lambda: auth.authenticate({"x-api-key": "bench-key"}), 50_000)
print(json.dumps({"admit_us": admit, "authenticate_us": authenticate}))
"""


def ratelimit_cost() -> dict:
    """Policy.admit (one token taken from a credential's bucket) and, for scale, authenticating
    an API key, in microseconds per call (best of 5), in a child interpreter (runtime/ imports
    MLServer, whose gRPC protos cannot share a process with tritonclient's)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RATELIMIT_SCRIPT], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
