"""`insurance retrain`: decide from Prometheus whether a vertical needs a new model, and say why.

Triggers, on the serving (stable) version; any one makes a retrain due:

  drift     a feature's PSI (ml_feature_drift_psi) above --psi-threshold for the whole
            --psi-window: at the window's start and at every sample in it (min_over_time)
  quality   live ROC-AUC (ml_model_performance{source="live"}, published once enough outcomes
            came back) below the bundle's held-out ROC-AUC by more than --auc-tolerance
  schedule  the serving version is older than --max-age (its registration time, else the
            time it was trained)
  forced    --force

No retrain while a canary of the vertical is in progress (chart values say so): one change at a
time. When due: train a candidate on the latest data (python -m training, a database table or
query, or a file), run the validation gate (lifecycle/validate.py) against the serving version,
register it as the next version (lifecycle/registry.py). It is never rolled out unless
--rollout auto (lifecycle/autorollout.py). The decision and the evidence are printed and written
as a JSON report (--report, default <repository>/.reports/retrain-<vertical>-<time>.json).

Exit codes: 0 not due, or the candidate was registered (and promoted with --rollout auto);
1 the candidate failed the gate, or its canary was rolled back; 2 a usage or environment error.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from predictors.bundle import MANIFEST

from .ab import Prometheus
from .repository import RepositoryError, latest, next_version

DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_PSI_WINDOW = "1h"
DEFAULT_AUC_TOLERANCE = 0.02


class RetrainError(Exception):
    """The retrain cannot run as asked: the message says why."""


def duration_seconds(text: str) -> int:
    """Seconds of a Prometheus-style duration: 90s, 10m, 1h, 30d, 2w."""
    from training.db import parse_duration

    td = parse_duration(text)
    if td is None:
        raise RetrainError(f"duration {text!r}: expected a number and a unit s, m, h, d or w (10m, 1h, 30d)")
    return int(td.total_seconds())


@dataclass
class Trigger:
    name: str  # drift | quality | schedule | forced
    fired: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    vertical: str
    serving_version: str | None
    serving_from: str
    due: bool
    triggers: list[Trigger]
    blocked: str | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0).isoformat())

    @property
    def reasons(self) -> list[str]:
        return [t.detail for t in self.triggers if t.fired]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = self.reasons
        return d

    def text(self) -> str:
        head = (f"retrain {self.vertical}: serving version {self.serving_version or '?'} ({self.serving_from}); "
                f"decided {self.decided_at}")
        lines = [head]
        for t in self.triggers:
            lines.append(f"  [{'FIRED' if t.fired else 'ok   '}] {t.name:<9} {t.detail}")
        if self.blocked:
            lines.append(f"decision: NOT NOW - {self.blocked}")
        elif self.due:
            lines.append("decision: RETRAIN - " + "; ".join(self.reasons))
        else:
            lines.append("decision: NOT DUE - no trigger fired")
        return "\n".join(lines)


def _sel(vertical: str, version: str, extra: str | None) -> str:
    parts = [f'model_name="{vertical}"', f'model_version="{version}"']
    if extra:
        parts.append(extra.strip().strip("{}"))
    return ",".join(parts)


def drift_trigger(prom: Prometheus, vertical: str, version: str, threshold: float, window: str,
                  extra: str | None = None) -> Trigger:
    sel = _sel(vertical, version, extra)
    now = prom.by(f"max by (feature) (ml_feature_drift_psi{{{sel}}})", "feature")
    low = prom.by(f"min by (feature) (min_over_time(ml_feature_drift_psi{{{sel}}}[{window}]))", "feature")
    start = prom.by(f"max by (feature) (ml_feature_drift_psi{{{sel}}} offset {window})", "feature")
    features = {}
    for (f,), value in now.items():
        lo, st = low.get((f,)), start.get((f,))
        held = lo is not None and st is not None and not math.isnan(lo) and lo > threshold and st > threshold
        features[f] = {"psi": round(value, 4), "min_over_window": None if lo is None else round(lo, 4),
                       "at_window_start": None if st is None else round(st, 4), "held": held}
    drifted = sorted((f for f, e in features.items() if e["held"]), key=lambda f: -features[f]["min_over_window"])
    ev = {"threshold": threshold, "window": window, "features": features}
    if not features:
        return Trigger("drift", False, f"no ml_feature_drift_psi series of {vertical} {version} (too few live rows "
                                       "scored yet, or the runtime's drift monitoring is off)", ev)
    if drifted:
        desc = ", ".join(f"{f} (min {features[f]['min_over_window']:.3f})" for f in drifted[:5])
        return Trigger("drift", True, f"PSI above {threshold:g} for the whole {window}: {desc}", ev)
    top = max(features, key=lambda f: features[f]["psi"])
    return Trigger("drift", False, f"no feature's PSI held above {threshold:g} for {window} (highest now: {top} "
                                   f"{features[top]['psi']:.3f})", ev)


def quality_trigger(prom: Prometheus, vertical: str, version: str, holdout_auc: float | None, tolerance: float,
                    extra: str | None = None) -> Trigger:
    sel = _sel(vertical, version, extra)
    live = prom.by(f'max(ml_model_performance{{{sel},metric="roc_auc",source="live"}})')
    value = next(iter(live.values()), None) if live else None
    ev = {"live_roc_auc": value, "holdout_roc_auc": holdout_auc, "tolerance": tolerance}
    if value is None or math.isnan(value):
        return Trigger("quality", False, "no live ROC-AUC yet (published once enough outcomes came back)", ev)
    if holdout_auc is None:
        return Trigger("quality", False, f"live ROC-AUC {value:.3f}, but the bundle records no held-out ROC-AUC", ev)
    if value < holdout_auc - tolerance:
        return Trigger("quality", True, f"live ROC-AUC {value:.3f} < held-out {holdout_auc:.3f} - {tolerance:g}", ev)
    return Trigger("quality", False, f"live ROC-AUC {value:.3f} within {tolerance:g} of held-out {holdout_auc:.3f}",
                   ev)


def schedule_trigger(manifest: dict[str, Any] | None, max_age: str | None, now: datetime | None = None) -> Trigger:
    now = now or datetime.now(timezone.utc)
    if manifest is None:
        return Trigger("schedule", False, "serving bundle not in the repository: age unknown", {"max_age": max_age})
    stamp = (manifest.get("registration") or {}).get("registered") or manifest.get("created")
    try:
        born = datetime.fromisoformat(str(stamp))
        born = born if born.tzinfo else born.replace(tzinfo=timezone.utc)
    except ValueError:
        return Trigger("schedule", False, f"serving bundle's date {stamp!r} unreadable", {"max_age": max_age})
    age = now - born
    ev = {"max_age": max_age, "since": born.isoformat(), "age_days": round(age.total_seconds() / 86400, 2)}
    if not max_age:
        return Trigger("schedule", False, f"serving version is {ev['age_days']:g} days old (no --max-age)", ev)
    limit = timedelta(seconds=duration_seconds(max_age))
    if age > limit:
        return Trigger("schedule", True, f"serving version is {ev['age_days']:g} days old > --max-age {max_age}", ev)
    return Trigger("schedule", False, f"serving version is {ev['age_days']:g} days old <= --max-age {max_age}", ev)


def serving_version(vertical: str, values: dict | None, prom: Prometheus | None, repository: Path | None,
                    window: str, extra: str | None = None) -> tuple[str | None, str, str | None]:
    """(version, where it came from, why retraining must wait or None)."""
    from .rollout import routes

    if values:
        r = routes(values).get(vertical)
        if r is None or not r.enabled:
            raise RepositoryError(f"vertical {vertical!r} is not enabled in the chart values")
        blocked = (f"a canary of {vertical} is in progress ({r.canary} at {r.canary_percent}%): finish it (promote "
                   "or roll back) before training another") if r.canary_active else None
        return r.stable, "chart values", blocked
    if prom is not None:
        parts = [f'model_name="{vertical}"'] + ([extra.strip().strip("{}")] if extra else [])
        traffic = prom.by(f"sum by (model_version) (increase(ml_scoring_latency_seconds_count{{{','.join(parts)}}}"
                          f"[{window}]))", "model_version")
        if traffic:
            return max(traffic, key=lambda k: traffic[k])[0], f"busiest version in Prometheus over {window}", None
    if repository is not None:
        b = latest(repository, vertical)
        if b is not None:
            return b.version, "newest version in the repository", None
    return None, "unknown", None


def decide(vertical: str, prom: Prometheus, *, repository: Path | None, values: dict | None = None,
           version: str | None = None, psi_threshold: float = DEFAULT_PSI_THRESHOLD,
           psi_window: str = DEFAULT_PSI_WINDOW, auc_tolerance: float = DEFAULT_AUC_TOLERANCE,
           max_age: str | None = None, force: bool = False, extra_selector: str | None = None) -> Decision:
    """Query the evidence and decide; raises ABError when Prometheus cannot answer."""
    duration_seconds(psi_window)
    if max_age:
        duration_seconds(max_age)
    blocked = None
    if version:
        source = "--serving-version"
    else:
        version, source, blocked = serving_version(vertical, values, prom, repository, psi_window, extra_selector)
    if version is None:
        raise RepositoryError(f"cannot tell which version of {vertical} serves: pass --values/--release, "
                              "--serving-version, or a --repository holding it")
    manifest = None
    if repository is not None and (repository / vertical / version / MANIFEST).is_file():
        manifest = json.loads((repository / vertical / version / MANIFEST).read_text(encoding="utf-8"))
    holdout = ((manifest or {}).get("metrics") or {}).get("holdout", {}).get("roc_auc")
    triggers = [
        drift_trigger(prom, vertical, version, psi_threshold, psi_window, extra_selector),
        quality_trigger(prom, vertical, version, holdout, auc_tolerance, extra_selector),
        schedule_trigger(manifest, max_age),
    ]
    if force:
        triggers.append(Trigger("forced", True, "--force"))
    due = any(t.fired for t in triggers) and blocked is None
    return Decision(vertical, version, source, due, triggers, blocked)


# ---------------------------------------------------------------- the command
def training_argv(args, vertical: str, version: str, out: Path) -> list[str]:
    """`python -m training` arguments for the candidate (credentials stay in the environment/file)."""
    argv = ["--vertical", vertical, "--version", version, "--out", str(out), "--seed", str(args.seed)]
    for opt in ("data", "table", "query", "data_url_file", "time_column", "since", "until", "order_by"):
        value = getattr(args, opt, None)
        if value is not None:
            argv += [f"--{opt.replace('_', '-')}", str(value)]
    if getattr(args, "chunk_rows", None):
        argv += ["--chunk-rows", str(args.chunk_rows)]
    return argv


def train_candidate(args, vertical: str, version: str, out: Path) -> dict[str, Any]:
    """Train through training/__main__.py; its JSON line is the evidence. Raises RepositoryError."""
    from training.__main__ import main as train

    argv = training_argv(args, vertical, version, out)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = train(argv)
        except SystemExit as e:  # argparse refused the data options
            code = e.code if isinstance(e.code, int) else 2
    if code != 0:
        raise RepositoryError(f"training the candidate failed: {stderr.getvalue().strip() or f'exit code {code}'}")
    lines = [ln for ln in stdout.getvalue().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def default_report_path(repository: Path, vertical: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return repository / ".reports" / f"retrain-{vertical}-{stamp}.json"


def run(args) -> int:
    from . import autorollout
    from .registry import register
    from .repository import resolve

    repository = resolve(args.repository) if args.repository else Path("models")
    if not repository.is_dir():
        raise RepositoryError(f"repository {repository} is not a folder (pass --repository)")
    values = None
    if args.values or args.release:
        from .rollout import load_values_file, release_values

        values = (load_values_file(args.values) if args.values
                  else release_values(args.release, args.namespace, args.helm))
    if not (args.data or args.table or args.query):
        raise RepositoryError("retrain needs the latest data: --table/--query (with --data URL, --data-url-file or "
                              "$INSURANCE_DATABASE_URL) or --data FILE")
    prom = Prometheus(args.prometheus)
    decision = decide(args.vertical, prom, repository=repository, values=values, version=args.serving_version,
                      psi_threshold=args.psi_threshold, psi_window=args.psi_window,
                      auc_tolerance=args.auc_tolerance, max_age=args.max_age, force=args.force,
                      extra_selector=args.selector)
    report: dict[str, Any] = {"decision": decision.to_dict(), "prometheus": args.prometheus,
                              "repository": str(repository)}
    lines = [decision.text()]
    code = 0
    if decision.due and not args.check_only:
        candidate = args.version or next_version(repository, args.vertical, args.bump)
        with tempfile.TemporaryDirectory(prefix=".retrain-", dir=repository) as tmp:
            try:
                trained = train_candidate(args, args.vertical, candidate, Path(tmp))
            except RepositoryError as e:  # the report still says what was decided and why it stopped
                _write_report(args, repository, {**report, "error": str(e), "exit_code": 2})
                raise
            report["training"] = trained
            lines.append(f"trained candidate {args.vertical} {candidate}: held-out ROC-AUC "
                         f"{trained.get('holdout_roc_auc')} (baseline {trained.get('baseline_roc_auc')})")
            stable_values = values or {"verticals": {args.vertical: {"enabled": True, "version":
                                                                     decision.serving_version}}}
            reg = register(Path(tmp) / args.vertical / candidate, repository, version=candidate,
                           values=stable_values, tolerance=args.tolerance, latency_budget_ms=args.latency_budget_ms,
                           latency_calls=args.latency_calls, eval_data=args.eval_data)
        report["registration"] = reg.to_dict()
        lines.append(reg.report.text())
        if not reg.ok:
            lines.append(f"not registered: {args.vertical} {candidate} failed the validation gate against "
                         f"{decision.serving_version}")
            code = 1
        else:
            lines.append(f"registered {args.vertical} {candidate} -> {reg.path}")
            if args.rollout == "auto":
                if not args.rollout_report:
                    args.rollout_report = str(default_report_path(repository, args.vertical)).replace(
                        "retrain-", f"rollout-", 1).replace(".json", f"-{candidate}.json")
                result = autorollout.run_from_args(args, args.vertical, candidate)
                report["rollout"] = result.to_dict()
                lines.append(result.text())
                code = 0 if result.outcome == autorollout.PROMOTED else 1
            else:
                lines.append(f"not rolled out (--rollout none): next `insurance rollout auto --vertical "
                             f"{args.vertical} --version {candidate}` or `insurance rollout canary ...`")
    elif decision.due:
        lines.append("--check-only: nothing trained")
    report["exit_code"] = code
    path = _write_report(args, repository, report)
    lines.append(f"report: {path}")
    if args.json:
        print(json.dumps({**report, "report": str(path)}, indent=2, default=str))
    else:
        print("\n".join(lines))
    return code


def _write_report(args, repository: Path, report: dict[str, Any]) -> Path:
    path = Path(args.report) if args.report else default_report_path(repository, args.vertical)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def add_parser(groups, formatter, add_gate_options, add_values_options) -> None:
    """The `retrain` subcommand (lifecycle/cli.py calls this)."""
    p = groups.add_parser("retrain", help="retrain a vertical when Prometheus says it is due",
                          formatter_class=formatter,
                          description=__doc__)
    p.add_argument("--vertical", required=True, help="model name (the vertical)")
    p.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    p.add_argument("--repository", default=None, help="model repository (default: $INSURANCE_MODEL_REPOSITORY or "
                                                      "./models)")
    p.add_argument("--serving-version", default=None, help="the serving version (default: the chart's stable "
                                                           "version with --values/--release, else the busiest in "
                                                           "Prometheus, else the newest in the repository)")
    p.add_argument("--selector", default=None, help='extra label matchers, e.g. namespace="insurance-serving"')
    t = p.add_argument_group("triggers")
    t.add_argument("--psi-threshold", type=float, default=DEFAULT_PSI_THRESHOLD,
                   help="a feature's PSI above this for the whole window makes a retrain due (%(default)s)")
    t.add_argument("--psi-window", default=DEFAULT_PSI_WINDOW, help="how long the PSI must hold (%(default)s)")
    t.add_argument("--auc-tolerance", type=float, default=DEFAULT_AUC_TOLERANCE,
                   help="live ROC-AUC this far below the bundle's held-out value makes a retrain due (%(default)s)")
    t.add_argument("--max-age", default=None, help="retrain when the serving version is older than this (30d); "
                                                   "default: no schedule")
    t.add_argument("--force", action="store_true", help="retrain whatever the evidence says")
    t.add_argument("--check-only", action="store_true", help="decide and report, never train")
    d = p.add_argument_group("training data (options of python -m training)")
    d.add_argument("--data", default=None, help="postgresql://USER@HOST:PORT/DB (no password) or a CSV/Parquet file")
    d.add_argument("--table", default=None, help="database table")
    d.add_argument("--query", default=None, help="database SELECT")
    d.add_argument("--data-url-file", default=None, help="file holding the database URL (password included)")
    d.add_argument("--time-column", default=None, help="timestamp column of the time window")
    d.add_argument("--since", default=None, help="latest data only: ISO time or duration back from now (180d)")
    d.add_argument("--until", default=None, help="rows before this ISO time or duration back from now")
    d.add_argument("--order-by", default=None, help="columns ordering a --table (default: its primary key)")
    d.add_argument("--chunk-rows", type=int, default=None, help="rows per fetched chunk")
    d.add_argument("--seed", type=int, default=42, help="training seed (%(default)s)")
    c = p.add_argument_group("candidate")
    v = c.add_mutually_exclusive_group()
    v.add_argument("--version", default=None, help="candidate version (default: next by --bump)")
    v.add_argument("--bump", choices=("major", "minor", "patch"), default="minor", help="(%(default)s)")
    c.add_argument("--rollout", choices=("none", "auto"), default="none",
                   help="auto: run `insurance rollout auto` on the registered candidate (default: %(default)s, "
                        "never roll out)")
    p.add_argument("--report", default=None, help="JSON report path (default: <repository>/.reports/"
                                                  "retrain-<vertical>-<time>.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_gate_options(p)
    add_values_options(p, "which version is stable; a canary in progress blocks a retrain")
    from . import autorollout

    autorollout.add_options(p, in_rollout=False)
    p.set_defaults(func=run, default_values=False)
