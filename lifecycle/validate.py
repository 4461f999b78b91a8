"""The validation gate: what a bundle must pass before it is registered, uploaded or rolled out.

Checks, in order (a failed early check skips the ones that need it):

  format        only LightGBM text (model.txt) or skops (model.skops); any pickle-family file
                (.pkl, .joblib, ...) or a model file that is not what its name says is refused
  manifest      manifest.json has every required key, a semver version, held-out metrics;
                model-settings.json names the vertical, the runtime and the same version
  integrity     every file's sha256 matches the manifest
  contract      task, framework and feature spec identical to the vertical's contract in
                predictors/verticals.yaml (the API backends call)
  load          the model loads (skops with the trusted-type list only)
  golden        predicts the vertical's golden examples (predictors/examples/<vertical>.json) with
                valid outputs: finite scores in [0, 1], known decisions, positive prices...
  quality       held-out ROC-AUC >= the current stable version's - tolerance (same evaluation
                table for both when --eval-data is given; else each manifest's held-out metric)
  latency       median of N single-row predictions in-process <= the budget
"""

from __future__ import annotations

import json
import statistics
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from predictors import examples
from predictors.bundle import MANIFEST, MODEL_FILES, BundleError, pickle_files, read_manifest, verify_files
from predictors.spec import CLAIMS_TRIAGE, LEAD_SCORING, Config, ConfigError, load_config

from .repository import SEMVER

PASS, FAIL, SKIP, INFO = "pass", "fail", "skip", "info"
DEFAULT_TOLERANCE = 0.01
DEFAULT_LATENCY_BUDGET_MS = 100.0
DEFAULT_LATENCY_CALLS = 50
RUNTIME_IMPLEMENTATION = "runtime.InsuranceModel"
DECISIONS = {LEAD_SCORING: {"accept", "reject"}, CLAIMS_TRIAGE: {"ML_APPROVED", "ML_REJECTED", "ML_REVIEW"}}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    bundle: str
    vertical: str | None = None
    version: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, status: str, detail: str, **data: Any) -> Check:
        check = Check(name, status, detail, data)
        self.checks.append(check)
        return check

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "vertical": self.vertical, "version": self.version, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}

    def text(self) -> str:
        head = f"{self.vertical or '?'} {self.version or '?'}  ({self.bundle})"
        lines = [head]
        for c in self.checks:
            lines.append(f"  {c.status.upper():4}  {c.name:<10} {c.detail}")
        failed = self.failed()
        lines.append(f"RESULT: {'PASS' if not failed else 'FAIL'}"
                     + (f" ({len(failed)} failed: {', '.join(c.name for c in failed)})" if failed else ""))
        return "\n".join(lines)


def golden_examples(vertical: str) -> dict[str, Any]:
    """The vertical's example rows, shipped with the package (predictors/examples/<vertical>.json)."""
    try:
        return examples.load(vertical)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None


def rows_to_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list]:
    """Row dicts -> columns of the named features; a feature no row has is left out (missing)."""
    present = [n for n in names if any(n in r for r in rows)]
    return {n: [r.get(n) for r in rows] for n in present}


def _check_format(folder: Path, report: Report) -> bool:
    refused = pickle_files(folder)
    if refused:
        report.add("format", FAIL, f"refused: {'; '.join(refused)}; pickles are never accepted; allowed model "
                   f"files: LightGBM text ({MODEL_FILES['lightgbm']}) or skops ({MODEL_FILES['sklearn']})")
        return False
    models = [p for p in folder.iterdir() if p.name in MODEL_FILES.values()]
    if len(models) != 1:
        found = ", ".join(p.name for p in models) or "none"
        report.add("format", FAIL, f"a bundle holds exactly one model file ({' or '.join(MODEL_FILES.values())}); "
                   f"found {found}")
        return False
    path = models[0]
    head = path.read_bytes()[:64]
    if path.name == MODEL_FILES["lightgbm"]:
        if not head.startswith(b"tree\n"):
            report.add("format", FAIL, f"{path.name} is not LightGBM's text model format (it must begin with 'tree')")
            return False
    else:
        try:
            with zipfile.ZipFile(path) as z:
                if "schema.json" not in z.namelist():
                    raise zipfile.BadZipFile("no schema.json")
        except zipfile.BadZipFile as e:
            report.add("format", FAIL, f"{path.name} is not a skops archive ({e})")
            return False
    kind = "LightGBM text" if path.name == MODEL_FILES["lightgbm"] else "skops"
    report.add("format", PASS, f"{path.name} ({kind}); no pickle-family files")
    return True


def _check_manifest(folder: Path, report: Report) -> dict[str, Any] | None:
    try:
        manifest = read_manifest(folder)
    except BundleError as e:
        report.add("manifest", FAIL, str(e))
        return None
    report.vertical, report.version = manifest.get("vertical"), str(manifest.get("version"))
    problems = []
    if not SEMVER.match(str(manifest["version"])):
        problems.append(f"version {manifest['version']!r} is not semver")
    if SEMVER.match(folder.name) and folder.name != str(manifest["version"]):
        problems.append(f"the folder is named {folder.name} but the bundle is version {manifest['version']}")
    if manifest["name"] != manifest["vertical"]:
        problems.append(f"name {manifest['name']!r} differs from vertical {manifest['vertical']!r}")
    holdout = (manifest.get("metrics") or {}).get("holdout") or {}
    if not isinstance(holdout.get("roc_auc"), (int, float)):
        problems.append("metrics.holdout.roc_auc is missing")
    training = manifest.get("training") or {}
    for key in ("data_sha256", "git_commit", "params"):
        if key not in training:
            problems.append(f"training.{key} is missing")
    settings_path = folder / "model-settings.json"
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"model-settings.json unreadable: {e}")
    else:
        if settings.get("name") != manifest["vertical"]:
            problems.append(f"model-settings.json name {settings.get('name')!r} is not {manifest['vertical']!r}")
        if settings.get("implementation") != RUNTIME_IMPLEMENTATION:
            problems.append(f"model-settings.json implementation {settings.get('implementation')!r} is not "
                            f"{RUNTIME_IMPLEMENTATION}")
        if str((settings.get("parameters") or {}).get("version")) != str(manifest["version"]):
            problems.append(f"model-settings.json version {(settings.get('parameters') or {}).get('version')!r} "
                            f"differs from the manifest's {manifest['version']}")
    if problems:
        report.add("manifest", FAIL, "; ".join(problems))
        return None
    report.add("manifest", PASS, f"complete; trained {manifest.get('created', '?')} from data "
               f"{str(training.get('data_sha256'))[:12]}… at commit {str(training.get('git_commit'))[:12]}")
    return manifest


def _check_integrity(folder: Path, manifest: dict[str, Any], report: Report) -> bool:
    try:
        verify_files(folder, manifest)
    except BundleError as e:
        report.add("integrity", FAIL, str(e))
        return False
    report.add("integrity", PASS, "sha256 of " + ", ".join(sorted(manifest["files"])) + " match the manifest")
    return True


def _spec_diff(got: list[dict], want: list[dict]) -> str:
    g, w = {f["name"]: f for f in got}, {f["name"]: f for f in want}
    parts = []
    if missing := [n for n in w if n not in g]:
        parts.append(f"missing features {', '.join(missing)}")
    if extra := [n for n in g if n not in w]:
        parts.append(f"extra features {', '.join(extra)}")
    for n in w:
        if n in g and g[n] != w[n]:
            diffs = [f"{k}: bundle {g[n].get(k)!r} vs contract {w[n].get(k)!r}"
                     for k in sorted(set(g[n]) | set(w[n])) if g[n].get(k) != w[n].get(k)]
            parts.append(f"feature {n!r} differs ({'; '.join(diffs)})")
    if not parts and [f["name"] for f in got] != [f["name"] for f in want]:
        parts.append("feature order differs")
    return "; ".join(parts)


def _check_contract(manifest: dict[str, Any], config: Config, report: Report) -> bool:
    try:
        vertical = config.vertical(manifest["vertical"])
    except ConfigError as e:
        report.add("contract", FAIL, str(e))
        return False
    problems = []
    if manifest["task"] != vertical.task:
        problems.append(f"task {manifest['task']} but the vertical's is {vertical.task}")
    if manifest["framework"] != vertical.framework:
        problems.append(f"framework {manifest['framework']} but the vertical's is {vertical.framework}")
    diff = _spec_diff(list(manifest["feature_spec"]), vertical.feature_spec())
    if diff:
        problems.append(f"feature spec differs from predictors/verticals.yaml: {diff}")
    if problems:
        report.add("contract", FAIL, "; ".join(problems))
        return False
    report.add("contract", PASS, f"{len(vertical.features)} features identical to the {vertical.name} contract")
    return True


def _validate_outputs(task: str, outputs: Mapping[str, Any], n: int) -> list[str]:
    problems = []
    for name, values in outputs.items():
        if len(values) != n:
            problems.append(f"output {name} has {len(values)} rows for {n} inputs")
    score = np.asarray(outputs["score"], dtype=float)
    if not np.all(np.isfinite(score)) or score.min() < 0 or score.max() > 1:
        problems.append(f"score outside [0, 1] or not finite: {score.tolist()}")
    bad = sorted({d for d in outputs["decision"] if d not in DECISIONS[task]})
    if bad:
        problems.append(f"unknown decisions {bad}")
    if task == LEAD_SCORING:
        conf, price = np.asarray(outputs["confidence"], float), np.asarray(outputs["price"], float)
        if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
            problems.append("confidence outside [0, 1]")
        if not np.all(np.isfinite(price)) or price.min() <= 0:
            problems.append("price not positive and finite")
        for m in outputs["market_factors"]:
            try:
                json.loads(m)
            except ValueError:
                problems.append(f"market_factors not JSON: {m!r}")
                break
    else:
        anomaly = np.asarray(outputs["anomaly_score"], float)
        settle = np.asarray(outputs["settlement_estimate"], float)
        if not np.all(np.isfinite(anomaly)) or anomaly.min() < 0 or anomaly.max() > 1:
            problems.append("anomaly_score outside [0, 1]")
        if not np.all(np.isfinite(settle)) or settle.min() < 0:
            problems.append("settlement_estimate negative or not finite")
    return problems


def _predict_rows(predictor, rows: Sequence[Mapping[str, Any]], now: datetime):
    columns = rows_to_columns(rows, [f.name for f in predictor.features])
    return predictor.predict(columns, len(rows), now=now).outputs


def _check_golden(predictor, report: Report, stable_predictor=None) -> dict[str, Any] | None:
    try:
        golden = golden_examples(predictor.manifest["vertical"])
    except ConfigError as e:
        report.add("golden", FAIL, str(e))
        return None
    rows = golden["rows"]
    now = datetime.fromisoformat(golden.get("quote_time", "2026-01-01T00:00:00Z"))
    try:
        outputs = _predict_rows(predictor, rows, now)
        again = _predict_rows(predictor, rows, now)
        one_by_one = [float(_predict_rows(predictor, [r], now)["score"][0]) for r in rows]
    except Exception as e:  # noqa: BLE001 - any failure on golden rows fails the gate
        report.add("golden", FAIL, f"predicting the golden examples failed: {type(e).__name__}: {e}")
        return None
    problems = _validate_outputs(predictor.task, outputs, len(rows))
    if not np.array_equal(np.asarray(outputs["score"]), np.asarray(again["score"])):
        problems.append("scores differ between two identical calls")
    if not np.allclose(np.asarray(outputs["score"], float), one_by_one, rtol=0, atol=1e-12):
        problems.append("a row's score depends on the other rows of its batch")
    if problems:
        report.add("golden", FAIL, "; ".join(problems))
        return None
    data: dict[str, Any] = {"rows": len(rows)}
    detail = f"{len(rows)} golden rows answered with valid outputs"
    if stable_predictor is not None:
        try:
            base = _predict_rows(stable_predictor, rows, now)
            agree = float(np.mean([a == b for a, b in zip(outputs["decision"], base["decision"])]))
            shift = float(np.mean(np.abs(np.asarray(outputs["score"], float) - np.asarray(base["score"], float))))
            data.update(decision_agreement_with_stable=round(agree, 4), mean_abs_score_change=round(shift, 4))
            detail += f"; vs stable: {agree:.0%} same decisions, mean |score change| {shift:.3f}"
        except Exception:  # noqa: BLE001 - informational only
            pass
    report.add("golden", PASS, detail, **data)
    return outputs


def _auc_on(predictor, df, vertical) -> float:
    from sklearn.metrics import roc_auc_score

    columns = {f.name: df[f.name].astype(object).where(df[f.name].notna(), None).tolist()
               for f in vertical.features}
    scores = predictor.predict(columns, len(df)).outputs["score"]
    return float(roc_auc_score(df[vertical.target].to_numpy(), scores))


def _check_quality(manifest: dict[str, Any], predictor, stable: tuple[dict, Any] | None, tolerance: float,
                   config: Config, report: Report, eval_data: Path | None = None) -> None:
    candidate_auc = float(manifest["metrics"]["holdout"]["roc_auc"])
    source = "held-out ROC-AUC from the manifests"
    stable_auc = None
    if eval_data is not None:
        from training.data import DataError, load_table

        vertical = config.vertical(manifest["vertical"])
        try:
            df = load_table(eval_data, vertical)
            candidate_auc = _auc_on(predictor, df, vertical)
            if stable is not None:
                stable_auc = _auc_on(stable[1], df, vertical)
        except (DataError, ValueError) as e:
            report.add("quality", FAIL, f"cannot evaluate on {eval_data}: {e}")
            return
        source = f"ROC-AUC on {eval_data} ({len(df)} rows)"
    elif stable is not None:
        stable_auc = float(stable[0]["metrics"]["holdout"]["roc_auc"])
    if stable is None:
        report.add("quality", PASS, f"{source}: {candidate_auc:.4f}; no stable version to compare with (first "
                   "version of the vertical)", candidate_roc_auc=candidate_auc)
        return
    stable_version = stable[0]["version"]
    data = dict(candidate_roc_auc=round(candidate_auc, 6), stable_roc_auc=round(stable_auc, 6),
                stable_version=stable_version, tolerance=tolerance)
    floor = stable_auc - tolerance
    if candidate_auc + 1e-12 < floor:
        report.add("quality", FAIL, f"{source}: {candidate_auc:.4f} is worse than stable {stable_version}'s "
                   f"{stable_auc:.4f} by more than the tolerance {tolerance} (floor {floor:.4f})", **data)
    else:
        report.add("quality", PASS, f"{source}: {candidate_auc:.4f} vs stable {stable_version} {stable_auc:.4f} "
                   f"(tolerance {tolerance})", **data)


def _check_latency(predictor, report: Report, budget_ms: float, calls: int) -> None:
    golden = golden_examples(predictor.manifest["vertical"])
    row = golden["rows"][0]
    now = datetime.now(timezone.utc)
    columns = rows_to_columns([row], [f.name for f in predictor.features])
    for _ in range(3):  # warm-up
        predictor.predict(columns, 1, now=now)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        predictor.predict(columns, 1, now=now)
        samples.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(samples)
    data = dict(median_ms=round(median, 3), max_ms=round(max(samples), 3), calls=calls, budget_ms=budget_ms)
    if median > budget_ms:
        report.add("latency", FAIL, f"single-row median {median:.2f} ms over {calls} in-process calls exceeds the "
                   f"budget of {budget_ms:g} ms", **data)
    else:
        report.add("latency", PASS, f"single-row median {median:.2f} ms over {calls} in-process calls "
                   f"(budget {budget_ms:g} ms)", **data)


def validate(path: str | Path, *, stable: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
             latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS, latency_calls: int = DEFAULT_LATENCY_CALLS,
             eval_data: str | Path | None = None, config: Config | None = None) -> Report:
    """Run every check on the bundle folder `path`; `stable` is the bundle folder of the current
    stable version (None: no comparison). Never raises for a bad bundle: the report says why."""
    from predictors.predictor import PREDICTORS
    from predictors.bundle import load_model

    folder = Path(path)
    report = Report(bundle=str(folder))
    if not folder.is_dir():
        report.add("format", FAIL, f"{folder}: no such bundle folder")
        return report
    config = config or load_config()
    if not _check_format(folder, report):
        return report
    manifest = _check_manifest(folder, report)
    if manifest is None or not _check_integrity(folder, manifest, report):
        return report
    if not _check_contract(manifest, config, report):
        return report
    try:
        model = load_model(folder, manifest)
        predictor = PREDICTORS[manifest["task"]](manifest, model, config)
    except (BundleError, ValueError, KeyError) as e:
        report.add("load", FAIL, str(e))
        return report
    report.add("load", PASS, f"{manifest['framework']} model loaded")

    stable_pair = None
    if stable is not None and Path(stable).resolve() != folder.resolve():
        try:
            s_manifest = read_manifest(stable)
            verify_files(stable, s_manifest)
            s_predictor = PREDICTORS[s_manifest["task"]](s_manifest, load_model(stable, s_manifest), config)
            stable_pair = (s_manifest, s_predictor)
        except (BundleError, ValueError, KeyError) as e:
            report.add("stable", FAIL, f"the stable bundle {stable} cannot be opened for the comparison: {e}")
    if _check_golden(predictor, report, stable_pair[1] if stable_pair else None) is None:
        return report
    _check_quality(manifest, predictor, stable_pair, tolerance, config, report,
                   Path(eval_data) if eval_data else None)
    _check_latency(predictor, report, latency_budget_ms, latency_calls)
    return report


__all__ = ["Check", "Report", "validate", "golden_examples", "rows_to_columns", "MANIFEST"]
