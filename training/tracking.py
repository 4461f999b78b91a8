"""Experiment tracking to MLflow, only when ``MLFLOW_TRACKING_URI`` is set.

Optional: install the extra (``pip install 'insurance-serving[mlflow]'``, the lightweight
``mlflow-skinny`` client). Without the URI nothing is imported; with the URI but without the
package, training goes on and says once that nothing was tracked. Each run logs the
vertical, version, data sha256, git commit, seed, every parameter (tuned ones included) and
every metric of the manifest, plus the manifest itself as an artifact; the bundle records the
run id under ``training.mlflow`` so both point at each other. The bundle, not MLflow, stays
the artifact that is served.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "insurance-serving"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(node, list):
        out[prefix] = ",".join(map(str, node))[:500]
    else:
        out[prefix] = node


class Tracker:
    """One MLflow run per trained bundle; a no-op when tracking is off or unavailable."""

    def __init__(self) -> None:
        self.mlflow = None
        self.warned = False
        if not enabled():
            return
        try:
            import mlflow
        except ImportError:
            print(f"warning: {ENV} is set but mlflow is not installed (pip install 'insurance-serving[mlflow]'); "
                  "training continues without tracking", file=sys.stderr)
            return
        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ[ENV])
        mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT))

    @property
    def active(self) -> bool:
        return self.mlflow is not None

    def start(self, run_name: str) -> str | None:
        if not self.active:
            return None
        run = self.mlflow.start_run(run_name=run_name)
        return run.info.run_id

    def finish(self, manifest: dict[str, Any], bundle: Path) -> dict[str, Any] | None:
        """Log the manifest's training facts, params and metrics to the active run and end it."""
        if not self.active:
            return None
        mlflow = self.mlflow
        training = manifest.get("training", {})
        params: dict[str, Any] = {}
        _flatten("", training.get("params", {}), params)
        metrics: dict[str, Any] = {}
        _flatten("", manifest.get("metrics", {}), metrics)
        try:
            mlflow.set_tags({"vertical": manifest["vertical"], "version": manifest["version"],
                             "framework": manifest["framework"], "data_sha256": training.get("data_sha256"),
                             "data_source": training.get("data_source"), "git_commit": training.get("git_commit"),
                             "bundle": str(bundle)})
            mlflow.log_params({**params, "seed": training.get("seed"), "rows": training.get("rows"),
                               **({"tune.trials": training["tuning"]["trials"]} if "tuning" in training else {})})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
                                and not isinstance(v, bool)})
            mlflow.log_artifact(str(bundle / "manifest.json"))
            run = mlflow.active_run()
            return {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id,
                    "experiment_id": run.info.experiment_id}
        finally:
            mlflow.end_run()

    def abort(self) -> None:
        if self.active and self.mlflow.active_run() is not None:
            self.mlflow.end_run(status="FAILED")
