"""python -m training: train bundles for one or all verticals."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from predictors.spec import load_config

from .bundle import write_bundle
from .data import DataError, data_hash, load_table
from .synthetic import generate
from .tracking import Tracker
from .train import prepare, train_vertical


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    config = load_config()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train per-vertical models and write integrity-checked bundles "
                    "(<out>/<vertical>/<version>/). Without --data the vertical's synthetic data "
                    "is generated from predictors/verticals.yaml.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--vertical", choices=sorted(config.verticals), help="the vertical to train")
    which.add_argument("--all", action="store_true", help="train every vertical")
    p.add_argument("--version", default="1.0.0", help="bundle semver (default: %(default)s)")
    p.add_argument("--data", type=Path, help="CSV or Parquet with the vertical's feature columns and target "
                                             "(only with --vertical); default: synthetic data")
    p.add_argument("--seed", type=int, default=42, help="seed of data generation, split, CV and model "
                                                        "(default: %(default)s)")
    p.add_argument("--rows", type=int, help="synthetic rows (default: the vertical's `synthetic.rows`)")
    p.add_argument("--out", type=Path, default=Path("models"), help="model repository (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle of the same version")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="search hyperparameters with Optuna first: N trials (seeded TPE) scored by the CV ROC-AUC "
                        "of the training split; the chosen parameters are recorded in the manifest (default: off)")
    args = p.parse_args(argv)
    if args.data and args.all:
        p.error("--data needs --vertical (a table holds one vertical's columns)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config()
    names = sorted(config.verticals) if args.all else [args.vertical]
    tracker = Tracker()  # MLflow, only when MLFLOW_TRACKING_URI is set (training/tracking.py)
    for name in names:
        vertical = config.vertical(name)
        start = time.perf_counter()
        try:
            if args.data:
                df = load_table(args.data, vertical)
                source = {"data_source": str(args.data)}
            else:
                df = generate(vertical, seed=args.seed, rows=args.rows)
                source = {"data_source": f"synthetic (training/synthetic.py, seed {args.seed}, {len(df)} rows)"}
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        experiment = prepare(df, vertical, config, seed=args.seed)
        params, extra = None, {}
        if args.tune:
            from .tune import tune

            params, extra["tuning"] = tune(experiment, args.tune, args.seed)
        run_id = tracker.start(f"{name}-{args.version}")
        if run_id:
            extra["mlflow"] = {"tracking_uri": tracker.mlflow.get_tracking_uri(), "run_id": run_id}
        try:
            result = train_vertical(df, vertical, config, seed=args.seed, params=params, experiment=experiment)
            folder = write_bundle(args.out, vertical, args.version, result,
                                  {**source, "data_sha256": data_hash(df), "seed": args.seed, "rows": len(df),
                                   **extra}, force=args.force)
        except BaseException:
            tracker.abort()
            raise
        tracker.finish(json.loads((folder / "manifest.json").read_text(encoding="utf-8")), folder)
        m = result.metrics
        print(json.dumps({"vertical": name, "bundle": str(folder), "seconds": round(time.perf_counter() - start, 1),
                          "holdout_roc_auc": m["holdout"]["roc_auc"], "cv_roc_auc": m["cv"]["roc_auc_mean"],
                          "baseline": m["baseline"]["name"], "baseline_roc_auc": m["baseline"]["roc_auc"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
