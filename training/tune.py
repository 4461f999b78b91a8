"""Hyperparameter search with Optuna (`python -m training --tune N`).

The objective is the mean 5-fold CV ROC-AUC on the training split (the 80 %), the same
folds the final model reports; the held-out 20 % is never seen by the search. The sampler is
Optuna's TPE seeded with the training seed and trials run one after another, and the models
are deterministic, so the same command on the same data chooses the same parameters and
writes the same model file. The chosen parameters and the search are recorded in the
manifest (``training.params``, ``training.tuning``).
"""

from __future__ import annotations

from typing import Any

from .train import Experiment

# name -> (kind, low, high[, log]) per model family; everything else keeps its default.
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "lightgbm": {
        "learning_rate": ("float", 0.02, 0.2, True),
        "num_leaves": ("int", 7, 63),
        "min_data_in_leaf": ("int", 10, 120),
        "feature_fraction": ("float", 0.6, 1.0),
        "lambda_l2": ("float", 1e-3, 10.0, True),
        "num_boost_round": ("int", 100, 500),
    },
    "hist_gradient_boosting": {
        "learning_rate": ("float", 0.02, 0.2, True),
        "max_leaf_nodes": ("int", 7, 63),
        "min_samples_leaf": ("int", 10, 120),
        "l2_regularization": ("float", 1e-3, 10.0, True),
        "max_iter": ("int", 100, 500),
    },
}


class TuningUnavailable(RuntimeError):
    pass


def _suggest(trial, space: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for name, spec in space.items():
        kind, low, high = spec[:3]
        if kind == "int":
            out[name] = trial.suggest_int(name, low, high)
        else:
            out[name] = trial.suggest_float(name, low, high, log=bool(spec[3]) if len(spec) > 3 else False)
    return out


def tune(experiment: Experiment, trials: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the search; return (chosen parameter overrides, record for the manifest)."""
    try:
        import optuna
    except ImportError as e:
        raise TuningUnavailable("--tune needs Optuna: pip install 'insurance-serving[tune]'") from e
    if trials < 1:
        raise ValueError("--tune needs at least 1 trial")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SEARCH_SPACES[experiment.params_key]
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                study_name=f"{experiment.vertical.name}-seed{seed}")
    # The defaults are the first trial, so tuning never reports worse than not tuning.
    study.enqueue_trial({k: v for k, v in experiment.default_params.items() if k in space})

    def objective(trial) -> float:
        aucs = experiment.cv_auc(_suggest(trial, space))
        trial.set_user_attr("cv_roc_auc_folds", [round(a, 6) for a in aucs])
        return sum(aucs) / len(aucs)

    study.optimize(objective, n_trials=trials, n_jobs=1, gc_after_trial=False, show_progress_bar=False)
    best = study.best_trial
    chosen = {k: best.params[k] for k in space}
    default_value = study.trials[0].value
    record = {
        "library": f"optuna {optuna.__version__}",
        "sampler": "TPESampler",
        "seed": seed,
        "trials": trials,
        "objective": f"mean {len(experiment.folds)}-fold CV ROC-AUC on the training split",
        "search_space": {k: list(v) for k, v in space.items()},
        "best_trial": best.number,
        "best_cv_roc_auc": round(float(best.value), 6),
        "default_params_cv_roc_auc": round(float(default_value), 6),
        "best_params": chosen,
    }
    return chosen, record
