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
from .db import CHUNK_ROWS, URL_ENV, DatabaseSource, is_database_url, parse_time, read_database, resolve_url
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
    p.add_argument("--data", help="CSV or Parquet with the vertical's feature columns and target, or a database URL "
                                  "postgresql://USER@HOST:PORT/DB with --table or --query (only with --vertical); "
                                  "default: synthetic data")
    db = p.add_argument_group("database source (training/db.py; password from PGPASSWORD/PGPASSFILE, "
                              f"--data-url-file or ${URL_ENV}, never on the command line)")
    src = db.add_mutually_exclusive_group()
    src.add_argument("--table", help="read this table (schema.table allowed), ordered by --order-by or its primary key")
    src.add_argument("--query", help="read the rows of this SELECT (its own ORDER BY decides the row order)")
    db.add_argument("--data-url-file", type=Path, help="file holding the database URL, password included (e.g. a "
                                                       "mounted Secret)")
    db.add_argument("--time-column", help="timestamp column: recorded as the data's time window; --since/--until "
                                          "filter on it")
    db.add_argument("--since", help="only rows with time-column >= this ISO time, or a duration back from now (90d)")
    db.add_argument("--until", help="only rows with time-column < this ISO time, or a duration back from now")
    db.add_argument("--order-by", help="comma-separated columns that order a --table (default: its primary key)")
    db.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows fetched per chunk (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="seed of data generation, split, CV and model "
                                                        "(default: %(default)s)")
    p.add_argument("--rows", type=int, help="synthetic rows (default: the vertical's `synthetic.rows`)")
    p.add_argument("--out", type=Path, default=Path("models"), help="model repository (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle of the same version")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="search hyperparameters with Optuna first: N trials (seeded TPE) scored by the CV ROC-AUC "
                        "of the training split; the chosen parameters are recorded in the manifest (default: off)")
    args = p.parse_args(argv)
    if (args.data or args.table or args.query) and args.all:
        p.error("--data/--table/--query need --vertical (a table holds one vertical's columns)")
    if args.data and not is_database_url(args.data) and (args.table or args.query or args.data_url_file):
        p.error(f"--table/--query/--data-url-file read a database; --data {args.data!r} is a file "
                "(a database is postgresql://USER@HOST:PORT/DB)")
    if is_database_url(args.data) and not (args.table or args.query):
        p.error("a database --data needs --table TABLE or --query SQL")
    if args.data_url_file and not (args.table or args.query):
        p.error("--data-url-file needs --table TABLE or --query SQL")
    return args


def database_source(args: argparse.Namespace) -> DatabaseSource | None:
    """The database to read from the arguments, or None when training from a file or synthetic data."""
    if not (args.table or args.query):
        return None
    url, origin = resolve_url(args.data, args.data_url_file)
    return DatabaseSource(url=url, table=args.table, query=args.query, time_column=args.time_column,
                          since=parse_time(args.since), until=parse_time(args.until),
                          order_by=[c.strip() for c in (args.order_by or "").split(",") if c.strip()],
                          chunk_rows=args.chunk_rows, origin=origin)


def load_source(args: argparse.Namespace, vertical, db: DatabaseSource | None):
    """(table, what the manifest records about its source)."""
    if db is not None:
        return read_database(db, vertical)
    if args.data:
        return load_table(args.data, vertical), {"data_source": str(args.data)}
    df = generate(vertical, seed=args.seed, rows=args.rows)
    return df, {"data_source": f"synthetic (training/synthetic.py, seed {args.seed}, {len(df)} rows)"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config()
    names = sorted(config.verticals) if args.all else [args.vertical]
    tracker = Tracker()  # MLflow, only when MLFLOW_TRACKING_URI is set (training/tracking.py)
    for name in names:
        vertical = config.vertical(name)
        start = time.perf_counter()
        try:
            df, source = load_source(args, vertical, database_source(args))
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
