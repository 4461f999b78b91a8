"""`insurance rollout auto`: a canary that steps itself up, promotes or rolls back.

For each step of --steps (default 10,25,50,100 percent of the traffic to the canary):

  1. set the weight: the same `helm upgrade` as `insurance rollout canary` (lifecycle/rollout.py)
  2. wait until the InferenceService has taken it: read through the KServe SDK's KServeClient
     (get / is_isvc_ready / wait_isvc_ready): Ready, observedGeneration caught up with the
     upgrade, the predictor's latest revision ready, and the canary's traffic share as set
     (where the status reports traffic: Knative mode)
  3. wait --interval (looking every --check-every for a roll-back verdict, acted on at once),
     then judge the step with the verdict rules of `insurance ab report`
     (lifecycle/ab.py: error ratio, minimum traffic, p99 latency, live ROC-AUC, score PSI)
       promote   next step; after the last, `rollout promote` (the canary becomes stable)
       roll back `rollout rollback` at once, stop (exit 1)
       hold      judge again after another interval, up to --max-holds times; still held: stop and
                 leave the canary at its weight for a person to look at (exit 3)

Every step is written to the report (--report, JSON) as it happens. Interrupted (Ctrl-C, SIGTERM:
a CronJob's deadline), it stops between helm calls, so the release stays at the last weight
applied, recorded in the report; `--resume` reads the report, checks that the release still
routes that canary, and continues from the interrupted step.

Exit codes: 0 promoted; 1 rolled back; 3 held for review or interrupted; 2 usage or environment
error (nothing changed, or the state is in the report).
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import ab, rollout

PROMOTED, ROLLED_BACK, HELD, INTERRUPTED, RUNNING = "promoted", "rolled back", "held", "interrupted", "running"
STOPPED = "stopped by an error"
DEFAULT_STEPS = "10,25,50,100"
DEFAULT_INTERVAL = "10m"
DEFAULT_READY_TIMEOUT = "10m"
EXIT_CODES = {PROMOTED: 0, ROLLED_BACK: 1, HELD: 3, INTERRUPTED: 3, STOPPED: 2}


class AutoRolloutError(Exception):
    """The automated rollout cannot start or go on: the message says why and in which state it left the release."""


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError as e:
        raise AutoRolloutError(f"--steps {text!r}: expected comma-separated percents, e.g. 10,25,50,100") from e
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise AutoRolloutError(f"--steps {text!r}: percents must be increasing, within 1-100")
    return steps


def seconds(text: str) -> float:
    from .retrain import duration_seconds

    from .retrain import RetrainError

    try:
        return float(duration_seconds(text))
    except RetrainError as e:
        raise AutoRolloutError(str(e)) from e


# ---------------------------------------------------------------- InferenceService status (KServe SDK)
@dataclass
class IsvcStatus:
    """What the rollout needs from an InferenceService's status."""

    name: str
    generation: int | None
    observed_generation: int | None
    ready: bool
    conditions: dict[str, str]
    latest_created: str | None = None
    latest_ready: str | None = None
    canary_percent: int | None = None  # traffic share of the latest revision, where the status reports it
    url: str | None = None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> "IsvcStatus":
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        conditions = {c.get("type", ""): str(c.get("status", "Unknown")) for c in status.get("conditions") or []}
        predictor = (status.get("components") or {}).get("predictor") or {}
        traffic = predictor.get("traffic") or []
        latest = [t for t in traffic if t.get("latestRevision")]
        canary = None
        if latest and len(traffic) > 1:
            canary = int(latest[0].get("percent") or 0)
        elif latest:
            canary = 100
        return cls(name=meta.get("name", ""), generation=meta.get("generation"),
                   observed_generation=status.get("observedGeneration"),
                   ready=conditions.get("Ready", "Unknown").lower() == "true", conditions=conditions,
                   latest_created=predictor.get("latestCreatedRevision"),
                   latest_ready=predictor.get("latestReadyRevision"), canary_percent=canary,
                   url=status.get("url"))

    def settled_at(self, percent: int | None) -> tuple[bool, str]:
        """(True, '') when the status shows the step applied and ready, else (False, what is missing)."""
        if not self.ready:
            bad = [f"{k}={v}" for k, v in self.conditions.items() if v.lower() != "true"]
            return False, f"not Ready ({', '.join(bad) or 'no conditions yet'})"
        if self.generation is not None and self.observed_generation is not None \
                and self.observed_generation < self.generation:
            return False, f"observedGeneration {self.observed_generation} < generation {self.generation}"
        if self.latest_created and self.latest_ready != self.latest_created:
            return False, f"latest revision {self.latest_created} not ready (ready: {self.latest_ready})"
        if percent is not None and self.canary_percent is not None and self.canary_percent != percent:
            return False, f"canary takes {self.canary_percent}% of the traffic, not {percent}% yet"
        return True, ""


class StatusReader:
    """InferenceService status through kserve.KServeClient (which is built on the kubernetes client)."""

    def __init__(self, namespace: str, kubeconfig: str | None = None, context: str | None = None,
                 config_dict: dict | None = None):
        from kserve import KServeClient

        self.namespace = namespace
        try:
            self.client = KServeClient(config_file=kubeconfig, config_dict=config_dict, context=context)
        except Exception as e:  # kubernetes.config.ConfigException and friends
            raise AutoRolloutError(f"cannot configure the Kubernetes client (kubeconfig {kubeconfig or 'default'}"
                                   f"{', context ' + context if context else ''}): {e}") from e

    def get(self, name: str) -> IsvcStatus:
        try:
            return IsvcStatus.from_object(self.client.get(name, namespace=self.namespace))
        except Exception as e:  # ApiException (as RuntimeError), urllib3 connection errors: the API is the boundary
            raise AutoRolloutError(f"cannot read InferenceService {self.namespace}/{name}: "
                                   f"{str(e).strip()[:400]}") from e

    def wait(self, name: str, percent: int | None, timeout: float, poll: float = 2.0,
             stop: Callable[[], bool] = lambda: False) -> tuple[IsvcStatus, float]:
        """Wait until the status shows the step applied and ready; (status, seconds waited)."""
        start = time.monotonic()
        try:
            self.client.wait_isvc_ready(name, namespace=self.namespace, timeout_seconds=max(timeout, poll),
                                        polling_interval=poll)
        except Exception as e:  # timeout (RuntimeError) or the API unreachable
            raise AutoRolloutError(f"InferenceService {self.namespace}/{name} not Ready within {timeout:g} s: "
                                   f"{str(e).strip()[:300]}") from e
        why = ""
        while True:
            status = self.get(name)
            ok, why = status.settled_at(percent)
            if ok:
                return status, time.monotonic() - start
            if stop() or time.monotonic() - start > timeout:
                raise AutoRolloutError(f"InferenceService {self.namespace}/{name} did not settle at {percent}% "
                                       f"within {timeout:g} s: {why}")
            time.sleep(poll)


# ---------------------------------------------------------------- the run
@dataclass
class Step:
    percent: int
    applied_at: str | None = None
    helm: str | None = None
    ready_after_s: float | None = None
    status: dict[str, Any] | None = None
    judgements: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    rule: str | None = None


@dataclass
class RolloutReport:
    vertical: str
    version: str
    stable: str
    release: str
    namespace: str
    steps: list[int]
    interval: str
    prometheus: str
    outcome: str = RUNNING
    current_percent: int = 0
    started: str = field(default_factory=_now)
    finished: str | None = None
    history: list[Step] = field(default_factory=list)
    final: dict[str, Any] | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutReport":
        history = [Step(**s) for s in d.pop("history", [])]
        return cls(**d, history=history)

    def text(self) -> str:
        lines = [f"rollout auto {self.vertical} {self.version} (stable {self.stable}), steps "
                 f"{','.join(map(str, self.steps))}% every {self.interval}"]
        for s in self.history:
            verdicts = " -> ".join(j["verdict"].upper() + (" (early check)" if j.get("early") else "")
                                   for j in s.judgements) or "-"
            lines.append(f"  {s.percent:>3}%  applied {s.applied_at or '-'}  ready after "
                         f"{'-' if s.ready_after_s is None else f'{s.ready_after_s:.1f} s'}  verdict {verdicts}"
                         + (f" - {s.rule}" if s.rule else ""))
        lines.append(f"outcome: {self.outcome.upper()}" + (f" - {self.message}" if self.message else ""))
        return "\n".join(lines)


class _Stop:
    """SIGINT/SIGTERM set a flag; the run stops at its next check, between helm calls."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __call__(self) -> bool:
        return self.signal is not None


@dataclass
class Settings:
    vertical: str
    version: str
    prometheus: str
    steps: list[int]
    interval: str
    release: str = rollout.DEFAULT_RELEASE
    namespace: str = rollout.DEFAULT_NAMESPACE
    chart: str = rollout.DEFAULT_CHART
    helm: str = "helm"
    values_file: str | None = None
    storage_uri: str | None = None
    ready_timeout: str = DEFAULT_READY_TIMEOUT
    max_holds: int = 2
    check_every: float = 60.0
    thresholds: ab.Thresholds = field(default_factory=ab.Thresholds)
    selector: str | None = None
    report: Path | None = None
    resume: bool = False
    dry_run: bool = False
    poll: float = 2.0


class AutoRollout:
    def __init__(self, s: Settings, status: StatusReader | None, log: Callable[[str], None] = print):
        self.s = s
        self.status = status
        self.log = log
        self.stop = _Stop()

    # -- helm through lifecycle/rollout.py
    def _values(self) -> dict[str, Any]:
        return rollout.release_values(self.s.release, self.s.namespace, self.s.helm, self.s.values_file)

    def _helm(self, action: str, percent: int | None = None) -> str:
        values = self._values()
        version = self.s.version
        sets = rollout.plan(action, values, self.s.vertical, version, percent,
                            self.s.storage_uri if action == "canary" else None)
        cmd = rollout.helm_upgrade_command(sets, self.s.release, self.s.namespace, self.s.chart, self.s.helm)
        text = shlex.join(cmd)
        self.log(f"$ {text}")
        if self.s.dry_run:
            return text
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise AutoRolloutError(f"`{self.s.helm}` not found: install helm or pass --helm PATH") from e
        if proc.returncode != 0:
            raise AutoRolloutError(f"helm upgrade ({action}) failed with exit code {proc.returncode}: "
                                   f"{proc.stderr.strip()[-600:]}")
        return text

    def _save(self, rep: RolloutReport) -> None:
        if self.s.report is not None:
            self.s.report.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.s.report.with_suffix(".tmp")
            tmp.write_text(json.dumps(rep.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
            tmp.replace(self.s.report)

    def _sleep(self, total: float) -> bool:
        """Sleep `total` seconds unless interrupted; False when interrupted."""
        end = time.monotonic() + total
        while time.monotonic() < end:
            if self.stop():
                return False
            time.sleep(min(0.5, max(end - time.monotonic(), 0)))
        return not self.stop()

    def _wait_ready(self, percent: int | None) -> tuple[float | None, dict | None]:
        if self.status is None:
            return None, None
        st, waited = self.status.wait(self.s.vertical, percent, seconds(self.s.ready_timeout),
                                      poll=self.s.poll, stop=self.stop)
        return round(waited, 2), {"ready": st.ready, "conditions": st.conditions, "canary_percent": st.canary_percent,
                                  "observed_generation": st.observed_generation,
                                  "latest_ready_revision": st.latest_ready}

    # -- start or resume
    def _start(self) -> tuple[RolloutReport, int]:
        values = self._values()
        route = rollout.routes(values).get(self.s.vertical)
        if route is None or not route.enabled:
            raise AutoRolloutError(f"vertical {self.s.vertical!r} is not enabled in release {self.s.release}")
        if self.s.resume:
            if self.s.report is None or not self.s.report.is_file():
                raise AutoRolloutError(f"--resume needs the report of the interrupted run (--report "
                                       f"{self.s.report or 'FILE'}): not found")
            rep = RolloutReport.from_dict(json.loads(self.s.report.read_text(encoding="utf-8")))
            if (rep.vertical, rep.version) != (self.s.vertical, self.s.version):
                raise AutoRolloutError(f"{self.s.report} is the rollout of {rep.vertical} {rep.version}, not "
                                       f"{self.s.vertical} {self.s.version}")
            if rep.outcome in (PROMOTED, ROLLED_BACK):
                raise AutoRolloutError(f"{self.s.report}: that rollout already ended ({rep.outcome})")
            if rep.current_percent and (route.canary != self.s.version
                                        or route.canary_percent != rep.current_percent):
                raise AutoRolloutError(f"release {self.s.release} no longer routes what the report left "
                                       f"({self.s.version} at {rep.current_percent}%): it routes {route.describe()}; "
                                       "start a new rollout instead of --resume")
            done = [h.percent for h in rep.history if h.verdict == ab.PROMOTE]
            rep.outcome, rep.finished, rep.message = RUNNING, None, f"resumed {_now()}"
            rep.history = [h for h in rep.history if h.verdict == ab.PROMOTE]
            start = next((i for i, p in enumerate(rep.steps) if p not in done), len(rep.steps))
            return rep, start
        if route.canary_active and route.canary != self.s.version:
            raise AutoRolloutError(f"another canary of {self.s.vertical} is in progress ({route.describe()}): "
                                   "promote or roll it back first")
        if route.stable == self.s.version:
            raise AutoRolloutError(f"{self.s.version} is already the stable version of {self.s.vertical}")
        rep = RolloutReport(self.s.vertical, self.s.version, route.stable, self.s.release, self.s.namespace,
                            self.s.steps, self.s.interval, self.s.prometheus)
        return rep, 0

    def _end(self, rep: RolloutReport, outcome: str, message: str) -> RolloutReport:
        rep.outcome, rep.message, rep.finished = outcome, message, _now()
        self._save(rep)
        self.log(f"{outcome.upper()}: {message}")
        return rep

    def run(self) -> RolloutReport:
        interval = seconds(self.s.interval)
        with self.stop:
            rep, start = self._start()
            self._save(rep)
            try:
                return self._steps(rep, start, interval)
            except (ab.ABError, AutoRolloutError, rollout.RolloutError) as e:
                if self.stop():
                    return self._interrupted(rep)
                # The release keeps the last weight applied; the report says which, --resume goes on.
                return self._end(rep, STOPPED, f"{e} (the release keeps {rep.version} at {rep.current_percent}%; "
                                               "fix the cause, then `--resume`, or `rollout rollback`)")

    def _steps(self, rep: RolloutReport, start: int, interval: float) -> RolloutReport:
        for percent in rep.steps[start:]:
            if self.stop():
                return self._interrupted(rep)
            step = Step(percent)
            rep.history.append(step)
            step.helm = self._helm("canary", percent)
            step.applied_at = _now()
            applied = time.monotonic()
            rep.current_percent = percent
            self._save(rep)
            self.log(f"step {percent}%: applied; waiting for the InferenceService")
            step.ready_after_s, step.status = self._wait_ready(percent)
            self._save(rep)
            holds = 0
            while True:
                judged, early = self._run_interval(rep, applied, interval)
                if judged is None:
                    return self._interrupted(rep)
                self._record(rep, step, judged, early)
                if judged.verdict != ab.HOLD or holds >= self.s.max_holds:
                    break
                holds += 1
            if step.verdict == ab.ROLLBACK:
                self._helm("rollback")
                rep.current_percent = 0
                rep.final = {"action": "rollback", "at": _now()}
                if self.status is not None:
                    rep.final["ready_after_s"], rep.final["status"] = self._wait_ready(None)
                return self._end(rep, ROLLED_BACK, f"at {percent}%: {step.rule}")
            if step.verdict == ab.HOLD:
                return self._end(rep, HELD, f"still held at {percent}% after {holds + 1} judgements: "
                                            f"{step.rule}. The canary keeps {percent}%: review, then "
                                            "`--resume`, `rollout promote` or `rollout rollback`")
        self._helm("promote")
        rep.final = {"action": "promote", "at": _now()}
        rep.current_percent = 100
        if self.status is not None:
            rep.final["ready_after_s"], rep.final["status"] = self._wait_ready(None)
        return self._end(rep, PROMOTED, f"{rep.version} is the stable version of {rep.vertical}")

    def _judge(self, rep: RolloutReport, applied: float, interval: float) -> ab.ABReport:
        # over the whole time the step has run (a held step is judged on more evidence each time)
        window = max(int(interval), int(time.monotonic() - applied), 1)
        return ab.report(self.s.prometheus, self.s.vertical, stable=rep.stable, canary=rep.version,
                         window=f"{window}s", thresholds=self.s.thresholds, extra_selector=self.s.selector)

    def _record(self, rep: RolloutReport, step: Step, judged: ab.ABReport, early: bool) -> None:
        step.judgements.append({"at": _now(), "verdict": judged.verdict, "rule": judged.rule, "early": early,
                                "ab": judged.to_dict()})
        step.verdict, step.rule = judged.verdict, judged.rule
        self._save(rep)
        self.log(f"step {step.percent}%: {judged.verdict.upper()}{' (early check)' if early else ''} - {judged.rule}")

    def _run_interval(self, rep: RolloutReport, applied: float, interval: float
                      ) -> tuple[ab.ABReport | None, bool]:
        """Wait one interval, checking every --check-every for a roll-back verdict (a failing canary
        is not left at its weight for the rest of the interval); then the step's judgement.
        (judgement, whether it came early); (None, False) when interrupted."""
        end = time.monotonic() + interval
        check = self.s.check_every
        while True:
            left = end - time.monotonic()
            if check <= 0 or left <= check:
                return (self._judge(rep, applied, interval), False) if self._sleep(max(left, 0)) else (None, False)
            if not self._sleep(check):
                return None, False
            judged = self._judge(rep, applied, interval)
            if judged.verdict == ab.ROLLBACK:
                return judged, True

    def _interrupted(self, rep: RolloutReport) -> RolloutReport:
        name = signal.Signals(self.stop.signal).name if self.stop.signal else "stop"
        return self._end(rep, INTERRUPTED, f"{name}: the release keeps {rep.version} at {rep.current_percent}%; "
                                           "`--resume` continues from this step")


# ---------------------------------------------------------------- CLI glue
def add_options(p, *, in_rollout: bool) -> None:
    """Options of the automated canary: on `rollout` (action auto) and on `retrain --rollout auto`."""
    g = p.add_argument_group("automated canary (rollout auto)")
    g.add_argument("--steps", default=DEFAULT_STEPS, help="canary traffic percents, increasing (%(default)s)")
    g.add_argument("--interval", default=DEFAULT_INTERVAL, help="time each step runs before it is judged "
                                                                "(%(default)s)")
    g.add_argument("--ready-timeout", default=DEFAULT_READY_TIMEOUT,
                   help="max wait for the InferenceService to settle after each helm upgrade (%(default)s)")
    g.add_argument("--check-every", default="1m", help="within each interval, look this often for a roll-back "
                                                      "verdict and roll back at once (%(default)s; 0s: only at the "
                                                      "interval's end)")
    g.add_argument("--max-holds", type=int, default=2, help="extra intervals a HOLD verdict may wait before the "
                                                            "rollout stops for review (%(default)s)")
    g.add_argument("--kubeconfig", default=None, help="kubeconfig of the cluster (default: in-cluster, else "
                                                      "~/.kube/config)")
    g.add_argument("--kube-context", default=None, help="kubeconfig context")
    g.add_argument("--no-status", action="store_true", help="do not read InferenceService status (no API access); "
                                                            "the interval alone separates the steps")
    t = ab.Thresholds()
    g.add_argument("--min-requests", type=int, default=t.min_requests, help="canary requests a step needs to be "
                                                                            "judged (%(default)s)")
    g.add_argument("--max-error-increase", type=float, default=t.max_error_increase, help="(%(default)s)")
    g.add_argument("--latency-ratio", type=float, default=t.latency_ratio, help="allowed p99 ratio (%(default)s)")
    g.add_argument("--canary-auc-tolerance", type=float, default=t.auc_tolerance, dest="canary_auc_tolerance",
                   help="allowed live ROC-AUC drop of the canary (%(default)s)")
    g.add_argument("--psi-hold", type=float, default=t.psi_hold, help="hold above this score PSI (%(default)s)")
    if in_rollout:
        g.add_argument("--prometheus", default=None, help="Prometheus base URL (needed by auto)")
        g.add_argument("--selector", default=None, help='extra label matchers, e.g. namespace="insurance-serving"')
        g.add_argument("--report", default=None, help="JSON report, updated at every step (default: "
                                                      "rollout-<vertical>-<version>.json)")
        g.add_argument("--resume", action="store_true", help="continue the rollout recorded in --report")
    else:
        g.add_argument("--chart", default=rollout.DEFAULT_CHART, help="chart for helm upgrade (%(default)s)")
        g.add_argument("--rollout-report", default=None, help="JSON report of the rollout (default: next to the "
                                                              "retrain report)")


def settings_from_args(args, vertical: str, version: str) -> Settings:
    if not getattr(args, "prometheus", None):
        raise AutoRolloutError("rollout auto needs --prometheus URL (the judgements read it)")
    t = ab.Thresholds(min_requests=args.min_requests, max_error_increase=args.max_error_increase,
                      latency_ratio=args.latency_ratio, auc_tolerance=args.canary_auc_tolerance,
                      psi_hold=args.psi_hold)
    report = getattr(args, "report", None) if hasattr(args, "resume") else getattr(args, "rollout_report", None)
    return Settings(vertical=vertical, version=version, prometheus=args.prometheus, steps=parse_steps(args.steps),
                    interval=args.interval, release=getattr(args, "release", None) or rollout.DEFAULT_RELEASE,
                    namespace=args.namespace, chart=args.chart, helm=args.helm,
                    values_file=getattr(args, "values_file", None) or getattr(args, "values", None),
                    storage_uri=getattr(args, "storage_uri", None), ready_timeout=args.ready_timeout,
                    max_holds=args.max_holds, check_every=seconds(args.check_every), thresholds=t,
                    selector=getattr(args, "selector", None),
                    report=Path(report or f"rollout-{vertical}-{version}.json"),
                    resume=bool(getattr(args, "resume", False)), dry_run=bool(getattr(args, "dry_run", False)))


def run_from_args(args, vertical: str, version: str) -> RolloutReport:
    s = settings_from_args(args, vertical, version)
    seconds(s.interval)
    seconds(s.ready_timeout)
    status = None if args.no_status or s.dry_run else StatusReader(s.namespace, args.kubeconfig, args.kube_context)
    return AutoRollout(s, status).run()


def cmd(args) -> int:
    """`insurance rollout auto`."""
    if not args.version:
        raise AutoRolloutError("rollout auto needs --version (the canary version)")
    if args.dry_run:  # the plan and the first step's helm upgrade; nothing is changed, nothing waited for
        s = settings_from_args(args, args.vertical, args.version)
        values = rollout.release_values(s.release, s.namespace, s.helm, s.values_file)
        sets = rollout.plan("canary", values, s.vertical, s.version, s.steps[0], s.storage_uri)
        print(f"plan: {s.vertical} {s.version} at {', '.join(f'{p}%' for p in s.steps)}, each for {s.interval} "
              f"(checked every {args.check_every}), judged by `ab report`'s rules, then promote")
        print(shlex.join(rollout.helm_upgrade_command(sets, s.release, s.namespace, s.chart, s.helm)))
        return 0
    rep = run_from_args(args, args.vertical, args.version)
    print(rep.text())
    print(f"report: {settings_from_args(args, args.vertical, args.version).report}")
    return EXIT_CODES.get(rep.outcome, 2)
