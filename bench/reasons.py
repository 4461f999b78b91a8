"""Cost of reason codes and of the decision record, in process, one thread (docs/reasons.md).

Per model (auto: LightGBM; claims: scikit-learn) and batch size: CPU µs per row of the runtime's
scoring work without reasons (predictors/ from raw columns), with the `reasons` output
(predictors/reasons.py), with the decision record written to a file (runtime/decision_log.py),
and with both; ratios against the plain call measured in the same run, the cases interleaved
round by round so that a noisy neighbour slows them alike. ``python -m bench.reasons`` runs it
alone (~20 s); ``make bench`` includes it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from predictors import load_predictor
from predictors.reasons import Reasons, ReasonsOptions

from .servers import MODELS

CASES = ("plain", "reasons", "decision log", "reasons + decision log")


def _rows(predictor, name: str, n: int) -> dict:
    from predictors.spec import load_config
    from training.synthetic import generate

    df = generate(load_config().vertical(name), seed=7, rows=n)
    return {f.name: [None if isinstance(v, float) and v != v else v for v in df[f.name].tolist()]
            for f in predictor.features}


def measure(names: tuple[str, ...] = ("auto", "claims"), sizes: tuple[int, ...] = (1, 32),
            seconds: float = 0.2, rounds: int = 5) -> list[dict]:
    from runtime.decision_log import DecisionLog, _logger
    from predictors.decisions import DecisionLogOptions, Recorder

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        log = _logger(Path(tmp) / "decisions.jsonl")
        for name in names:
            bundle = next((MODELS / name).glob("*/manifest.json")).parent
            predictor = load_predictor(bundle)
            reasons = Reasons(predictor, ReasonsOptions.parse(name, predictor.vertical.reasons))
            options = DecisionLogOptions.parse(predictor.vertical, {"enabled": True})
            record = DecisionLog(Recorder(name, "1", "0" * 64, predictor.features, options), log)
            for size in sizes:
                raw = _rows(predictor, name, size)

                def call(with_reasons: bool, with_log: bool) -> None:
                    prediction = predictor.predict(raw, size)
                    texts = reasons.compute(prediction, raw, reasons.options.top_k) if with_reasons else None
                    if with_log:
                        record.write("bench", size, raw, prediction.outputs, texts)

                fns = {"plain": lambda: call(False, False), "reasons": lambda: call(True, False),
                       "decision log": lambda: call(False, True), "reasons + decision log": lambda: call(True, True)}
                samples: dict[str, list[float]] = {c: [] for c in CASES}
                for _ in range(rounds):
                    for case, fn in fns.items():
                        fn()
                        # CPU time of this process: on a shared machine, wall time mostly measures the neighbours
                        calls, start = 0, time.process_time()
                        while time.process_time() - start < seconds:
                            fn()
                            calls += 1
                        samples[case].append((time.process_time() - start) / (calls * size) * 1e6)
                base = statistics.median(samples["plain"])
                for case in CASES:
                    us = statistics.median(samples[case])
                    out.append({"model": name, "rows_per_call": size, "case": case, "us_per_row": us,
                                "ratio": us / base})
        for h in log.handlers:
            h.close()
        logging.getLogger(log.name).handlers.clear()
    return out


def report_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Reason codes and decision record (CPU µs per row, in process, one thread)", "",
             "| model | rows/call | " + " | ".join(CASES) + " |", "|---|---|" + "---|" * len(CASES)]
    by = {(r["model"], r["rows_per_call"], r["case"]): r for r in rows}
    for model, size in dict.fromkeys((r["model"], r["rows_per_call"]) for r in rows):
        cells = []
        for case in CASES:
            r = by[(model, size, case)]
            cells.append(f"{r['us_per_row']:,.0f}" + ("" if case == "plain" else f" ({r['ratio']:.1f}x)"))
        lines.append(f"| {model} | {size} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    rows = measure(seconds=0.1 if args.quick else 0.2, rounds=3 if args.quick else 5)
    print("\n".join(report_lines(rows)))


if __name__ == "__main__":
    main()
