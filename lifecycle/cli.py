"""`insurance`: the model lifecycle from a training output to a promoted canary.

Exit codes: 0 success; 1 a gate failed (validation, registration, upload refused); 2 a usage
or environment error (bad arguments, unreachable server, missing folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import ab, autorollout, retrain, rollout
from .repository import BUMPS, REPOSITORY_ENV, RepositoryError, find_bundle, list_bundles, resolve
from .validate import DEFAULT_LATENCY_BUDGET_MS, DEFAULT_LATENCY_CALLS, DEFAULT_TOLERANCE

PROG = "insurance"
DEFAULT_VALUES = Path(rollout.DEFAULT_CHART) / "values.yaml"


class UsageError(Exception):
    pass


def _out(args, text: str, data: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


#: Environment variables with the credential of the admin commands (load, unload, upload, list --url):
#: the runtime's repository API needs an `admin` API key or a JWT with the admin role (docs/security.md).
ADMIN_KEY_ENV, ADMIN_TOKEN_ENV = "INSURANCE_ADMIN_API_KEY", "INSURANCE_ADMIN_TOKEN"


def _secret(path: Any, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {path}: cannot read it ({type(e).__name__})") from e
    if not value or "\n" in value:
        raise UsageError(f"{what} {path}: expected exactly one credential on one line")
    return value


def _credential(args) -> dict[str, str]:
    """The admin credential: --api-key-file / --token-file, else $INSURANCE_ADMIN_API_KEY /
    $INSURANCE_ADMIN_TOKEN (files and variables, never argv: a command line is visible to every
    user of the machine). At most one."""
    key = _secret(args.api_key_file, "--api-key-file") if getattr(args, "api_key_file", None) else None
    token = _secret(args.token_file, "--token-file") if getattr(args, "token_file", None) else None
    if key is None and token is None:
        key, token = os.environ.get(ADMIN_KEY_ENV) or None, os.environ.get(ADMIN_TOKEN_ENV) or None
    if key is not None and token is not None:
        raise UsageError("give one credential: an API key or a token, not both (the server refuses two)")
    if key is not None:
        return {"X-API-Key": key}
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def _headers(args, credential: bool = True) -> dict[str, str]:
    """--header values, plus the admin credential for calls to the inference server."""
    out = _credential(args) if credential else {}
    for h in getattr(args, "header", None) or []:
        name, sep, value = h.partition(":")
        if not sep:
            raise UsageError(f"--header {h!r}: expected NAME:VALUE")
        if out and name.strip().lower() in ("x-api-key", "authorization"):
            raise UsageError(f"--header {name.strip()}: a credential is already given (--api-key-file, --token-file "
                             f"or ${ADMIN_KEY_ENV} / ${ADMIN_TOKEN_ENV})")
        out[name.strip()] = value.strip()
    return out


def _values(args) -> tuple[dict | None, str | None]:
    """Chart values for routing: --values FILE, --release (helm get values), or the chart's defaults."""
    if getattr(args, "values", None):
        return rollout.load_values_file(args.values), str(args.values)
    if getattr(args, "release", None):
        return (rollout.release_values(args.release, args.namespace, args.helm),
                f"helm release {args.release} in {args.namespace}")
    if getattr(args, "default_values", True) and DEFAULT_VALUES.is_file():
        return rollout.load_values_file(DEFAULT_VALUES), f"chart defaults {DEFAULT_VALUES}"
    return None, None


def _repository_or_none(location) -> Path | None:
    if location is None:
        location = os.environ.get(REPOSITORY_ENV)
        if location is None:
            return Path("models") if Path("models").is_dir() else None
    return resolve(location)


def _gate(args) -> dict[str, Any]:
    return {"tolerance": args.tolerance, "latency_budget_ms": args.latency_budget_ms,
            "latency_calls": args.latency_calls, "eval_data": args.eval_data}


# ---------------------------------------------------------------- models
def cmd_list(args) -> int:
    root = resolve(args.repository)
    bundles = list_bundles(root, args.vertical)
    values, source = _values(args)
    route_of = rollout.routes(values) if values else {}
    served: dict[tuple[str, str], str] = {}
    if args.url:
        from .server import ServerAPI

        for item in ServerAPI(args.url, headers=_headers(args)).index():
            served[(item.get("name"), str(item.get("version")))] = item.get("state", "")
    rows = []
    for b in bundles:
        r = route_of.get(b.vertical)
        role = ""
        if r and r.enabled:
            if b.version == r.stable:
                role = f"stable ({100 - (r.canary_percent or 0)}%)"
            elif b.version == r.canary:
                role = f"canary ({r.canary_percent or 0}%)"
        m = b.key_metrics()
        rows.append({"vertical": b.vertical, "version": b.version, "framework": b.framework,
                     "created": b.created, **m, "route": role, "served": served.get((b.vertical, b.version)),
                     "path": str(b.path), "error": b.error})
    present = {(b.vertical, b.version) for b in bundles}
    missing = []
    for name, r in sorted(route_of.items()):
        if not r.enabled or (args.vertical and name != args.vertical):
            continue
        for role, version in (("stable", r.stable), ("canary", r.canary)):
            if version and (name, version) not in present:
                missing.append({"vertical": name, "version": version, "route": role})
    if args.json:
        print(json.dumps({"repository": str(root), "routes_from": source, "bundles": rows,
                          "routed_but_missing": missing}, indent=2))
        return 0

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    header = ["VERTICAL", "VERSION", "FRAMEWORK", "CREATED", "AUC", "CV AUC", "BASELINE", "F1", "ROUTE"]
    if args.url:
        header.append("SERVED")
    table = [header]
    for r in rows:
        line = [r["vertical"], r["version"], r["framework"], (r["created"] or "?")[:19], f(r["holdout_roc_auc"]),
                f(r["cv_roc_auc"]), f(r["baseline_roc_auc"]), f(r["f1"]), r["route"] or "-"]
        if args.url:
            line.append(r["served"] or "-")
        if r["error"]:
            line[2] = "BROKEN"
        table.append(line)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    print(f"repository: {root}" + (f"   routes: {source}" if source else "   routes: (no chart values)"))
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for r in rows:
        if r["error"]:
            print(f"broken bundle {r['vertical']} {r['version']}: {r['error']}")
    for m in missing:
        print(f"warning: the chart routes {m['vertical']} {m['version']} as {m['route']}, "
              "but the repository has no such bundle")
    return 0


def cmd_validate(args) -> int:
    from .registry import stable_bundle
    from .validate import validate

    path = Path(args.path)
    try:
        path = find_bundle(path)
    except RepositoryError as e:
        raise UsageError(str(e)) from e
    stable = Path(args.stable) if args.stable else None
    if stable is None and not args.no_compare:
        repo = _repository_or_none(args.repository)
        try:
            vertical = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("vertical")
        except (OSError, ValueError):
            vertical = None
        if repo is not None and vertical:
            values, _ = _values(args)
            stable = stable_bundle(repo, vertical, values if (args.values or args.release) else None, exclude=path)
    report = validate(path, stable=stable, **_gate(args))
    data = report.to_dict()
    data["stable"] = str(stable) if stable else None
    text = report.text()
    if stable is None and not args.no_compare:
        text = text.replace("RESULT:", "note: no stable bundle found to compare with (pass --stable or "
                                       "--repository)\nRESULT:", 1)
    _out(args, text, data)
    return 0 if report.ok else 1


def cmd_register(args) -> int:
    from .registry import register

    repo = Path(args.repository) if args.repository else Path(os.environ.get(REPOSITORY_ENV, "models"))
    values, _ = _values(args) if (args.values or args.release) else (None, None)
    reg = register(args.training_output, repo, version=args.version, bump=args.bump, values=values, **_gate(args))
    text = reg.report.text()
    if reg.ok:
        text += f"\nregistered {reg.vertical} {reg.version} -> {reg.path}"
    else:
        text += f"\nnot registered: {reg.vertical or '?'} {reg.version or ''} failed validation"
    _out(args, text, reg.to_dict())
    return 0 if reg.ok else 1


def cmd_load(args) -> int:
    from .server import ServerAPI, default_version

    api = ServerAPI(args.url, timeout=args.timeout, headers=_headers(args))
    api.load(args.name)
    api.wait_ready(args.name, args.version, timeout=args.timeout)
    versions = api.loaded_versions(args.name)
    if args.version and args.version not in versions:
        print(f"error: {args.name} {args.version} is not among the loaded versions {versions}", file=sys.stderr)
        return 1
    print(f"loaded {args.name}: versions {', '.join(versions) or '(unversioned)'}; "
          f"/v2/models/{args.name}/infer -> {default_version(versions) or 'the unversioned model'}")
    return 0


def cmd_unload(args) -> int:
    from .server import ServerAPI, default_version, unload_version

    api = ServerAPI(args.url, timeout=args.timeout, headers=_headers(args))
    if args.version is None:
        api.unload(args.name)
        print(f"unloaded every version of {args.name}")
        return 0
    if not args.repository:
        raise UsageError("unloading one version needs --repository (the folder the server serves): MLServer 1.7.1's "
                         "repository API unloads whole models, so the version's folder is moved out and the model "
                         "reloaded")
    left = unload_version(api, resolve(args.repository), args.name, args.version, timeout=args.timeout)
    print(f"unloaded {args.name} {args.version} (moved to {args.repository}/.retired/); still served: "
          f"{', '.join(left) or 'nothing'}"
          + (f"; /v2/models/{args.name}/infer -> {default_version(left)}" if left else ""))
    return 0


def cmd_upload(args) -> int:
    from .registry import register
    from .server import ServerAPI, default_version, repository_versions, unload_version

    repo = resolve(args.repository)
    api = ServerAPI(args.url, timeout=args.timeout, headers=_headers(args))
    values, _ = _values(args) if (args.values or args.release) else (None, None)
    version = args.version
    if version is None and args.bump is None:
        try:
            version = json.loads((find_bundle(Path(args.bundle)) / "manifest.json").read_text())["version"]
        except (OSError, ValueError, KeyError, RepositoryError):
            version = None
    reg = register(args.bundle, repo, version=version, bump=args.bump or "minor", values=values, **_gate(args))
    if not reg.ok:
        _out(args, reg.report.text() + "\nrefused: the bundle failed validation; nothing was copied or loaded",
             {"uploaded": False, **reg.to_dict()})
        return 1
    name, version = reg.vertical, reg.version
    api.load(name)
    api.wait_ready(name, version, timeout=args.timeout)
    retired = []
    if args.replace:
        for other in repository_versions(repo, name):
            if other != version:
                unload_version(api, repo, name, other, timeout=args.timeout)
                retired.append(other)
    left = repository_versions(repo, name)
    routed = default_version(left)
    lines = [reg.report.text(), f"uploaded {name} {version} -> {reg.path}; loaded and ready"]
    if retired:
        lines.append(f"retired {', '.join(retired)} (moved to {repo}/.retired/)")
    lines.append(f"/v2/models/{name}/infer -> {routed}")
    _out(args, "\n".join(lines), {"uploaded": True, "served_versions": left, "default_version": routed,
                                 "retired": retired, **reg.to_dict()})
    return 0


# ---------------------------------------------------------------- rollout
def cmd_rollout(args) -> int:
    if args.action == "auto":
        return autorollout.cmd(args)
    values = rollout.release_values(args.release, args.namespace, args.helm, args.values_file)
    if args.action == "canary" and args.repository:
        from .validate import validate

        bundle = resolve(args.repository) / args.vertical / (args.version or "")
        report = validate(bundle, **{"tolerance": args.tolerance, "latency_budget_ms": args.latency_budget_ms})
        if not report.ok:
            print(report.text())
            print(f"refused: {args.vertical} {args.version} failed validation; no helm upgrade was run",
                  file=sys.stderr)
            return 1
    sets = rollout.plan(args.action, values, args.vertical, args.version, args.percent, args.storage_uri)
    cmd = rollout.helm_upgrade_command(sets, args.release, args.namespace, args.chart, args.helm)
    print(shlex.join(cmd))
    if args.action == "rollback" and sets[-1].endswith(".canary.trafficPercent=0"):
        print(f"note: Knative: all traffic is back on the stable revision and the stable bundle is back in the spec; "
              f"once `kubectl -n {args.namespace} get isvc` shows the new revision ready, run rollback again to "
              f"drop the canary entry (one stable revision left)", file=sys.stderr)
    if args.dry_run:
        return 0
    try:
        return subprocess.run(cmd).returncode
    except FileNotFoundError as e:
        raise UsageError(f"`{args.helm}` not found: install helm or pass --helm PATH") from e


# ---------------------------------------------------------------- ab
def cmd_ab_report(args) -> int:
    stable, canary = args.stable, args.canary
    if (stable is None or canary is None) and (args.values or args.release):
        values, _ = _values(args)
        r = rollout.routes(values).get(args.vertical)
        if r:
            stable = stable or r.stable
            canary = canary or r.canary
    t = ab.Thresholds(min_requests=args.min_requests, max_error_increase=args.max_error_increase,
                      latency_ratio=args.latency_ratio, auc_tolerance=args.auc_tolerance, psi_hold=args.psi_hold)
    rep = ab.report(args.prometheus, args.vertical, stable=stable, canary=canary, window=args.window,
                    thresholds=t, extra_selector=args.selector, headers=_headers(args, credential=False))
    _out(args, rep.text(), rep.to_dict())
    if args.exit_code:
        return {ab.PROMOTE: 0, ab.ROLLBACK: 1, ab.HOLD: 3}[rep.verdict]
    return 0


# ---------------------------------------------------------------- parser
def _add_gate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validation gate")
    g.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="allowed drop of ROC-AUC below the stable version's (default: %(default)s)")
    g.add_argument("--latency-budget-ms", type=float, default=DEFAULT_LATENCY_BUDGET_MS,
                   help="max median single-row latency in-process, ms (default: %(default)s)")
    g.add_argument("--latency-calls", type=int, default=DEFAULT_LATENCY_CALLS,
                   help="single-row calls whose median is compared with the budget (default: %(default)s)")
    g.add_argument("--eval-data", type=Path, default=None,
                   help="labelled CSV/Parquet to compute both versions' ROC-AUC on the same rows "
                        "(default: each manifest's held-out ROC-AUC)")


def _add_values_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"chart values ({what})")
    g.add_argument("--values", type=Path, default=None, help="Helm values file (YAML/JSON) of the release")
    g.add_argument("--release", default=None, help="read the values of this Helm release (helm get values --all)")
    g.add_argument("--namespace", default=rollout.DEFAULT_NAMESPACE, help="release namespace (default: %(default)s)")
    g.add_argument("--helm", default="helm", help="helm binary (default: %(default)s)")


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="MLServer HTTP address, e.g. http://127.0.0.1:8080")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default: %(default)s)")
    p.add_argument("--header", action="append", metavar="NAME:VALUE", help="extra HTTP header (repeatable)")
    _add_credential_options(p)


def _add_credential_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("credential (the repository API needs the admin role)")
    g.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                   help=f"file holding an admin API key (default: ${ADMIN_KEY_ENV})")
    g.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help=f"file holding a JWT with the admin role (default: ${ADMIN_TOKEN_ENV})")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, formatter_class=_Formatter, description=(
        "Model lifecycle of insurance-serving: list, validate, register, hot-swap, roll out and compare\n"
        "model versions. docs/lifecycle.md walks through training -> validation -> canary -> promotion."))
    groups = ap.add_subparsers(dest="group", metavar="{models,rollout,ab,retrain}", required=True)

    models = groups.add_parser("models", help="bundles: list, validate, register, load, unload, upload",
                               description="Model bundles in a repository and on a running server.")
    mc = models.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = mc.add_parser("list", help="every bundle with metrics and the chart's stable/canary routing",
                      description="List every bundle of a model repository: vertical, version, framework, created "
                                  "date, held-out/CV/baseline ROC-AUC, F1, and which version the chart values route "
                                  "as stable and canary (default values: the chart's values.yaml when run in the "
                                  "repository checkout).")
    p.add_argument("--repository", default=None, help="folder or file:// URI (default: $INSURANCE_MODEL_REPOSITORY or "
                                                      "./models)")
    p.add_argument("--vertical", default=None, help="only this vertical")
    p.add_argument("--url", default=None, help="also show each bundle's state on this MLServer (repository index)")
    p.add_argument("--header", action="append", metavar="NAME:VALUE", help="extra HTTP header for --url")
    _add_credential_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_values_options(p, "routing columns")
    p.set_defaults(func=cmd_list)

    p = mc.add_parser("validate", help="the gate a bundle must pass before rollout", formatter_class=_Formatter,
                      description=(__import__("lifecycle.validate", fromlist=["_"]).__doc__ or "")
                      + "\nExit code 0 when every check passed, 1 when one failed.")
    p.add_argument("path", help="bundle folder (or a training output holding one bundle)")
    p.add_argument("--json", action="store_true", help="machine-readable report (for CI)")
    p.add_argument("--stable", default=None, help="bundle folder of the current stable version to compare with")
    p.add_argument("--repository", default=None, help="find the stable version here (default: "
                                                      "$INSURANCE_MODEL_REPOSITORY or ./models): the chart's stable "
                                                      "version with --values/--release, else the newest other version")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison with a stable version")
    _add_gate_options(p)
    _add_values_options(p, "which version is stable")
    p.set_defaults(func=cmd_validate, default_values=False)

    p = mc.add_parser("register", help="give a training output the next version and add it to a repository if it "
                                       "validates",
                      description="Copy a training output (a bundle folder, or the --out folder of `python -m "
                                  "training` holding one bundle) into the repository as <vertical>/<version>, "
                                  "re-versioned, only if it passes `models validate` against the repository's stable "
                                  "version. Exit code 1 (nothing written) when it fails.")
    p.add_argument("training_output", help="bundle folder or training --out folder")
    p.add_argument("--repository", default=None, help="target repository (default: $INSURANCE_MODEL_REPOSITORY or "
                                                      "./models)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--version", default=None, help="the version to register (default: next by --bump)")
    v.add_argument("--bump", choices=BUMPS, default="minor",
                   help="next version = highest in the repository with this part bumped (default: %(default)s; "
                        "1.0.0 for a new vertical)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_gate_options(p)
    _add_values_options(p, "which version is stable")
    p.set_defaults(func=cmd_register, default_values=False)

    p = mc.add_parser("load", help="load a model's versions on a running MLServer (repository API)",
                      description="POST /v2/repository/models/NAME/load: MLServer loads every version of NAME in "
                                  "the folder it serves (new versions appear, loaded ones reload without a gap, "
                                  "versions whose folder is gone are unloaded), then waits until it is ready.")
    p.add_argument("name", help="model name (the vertical)")
    p.add_argument("--version", default=None, help="wait for this version and fail if it is not loaded")
    _add_server_options(p)
    p.set_defaults(func=cmd_load)

    p = mc.add_parser("unload", help="unload a model, or one version of it, on a running MLServer",
                      description="Without --version: POST /v2/repository/models/NAME/unload (every version). With "
                                  "--version: move that version's folder to <repository>/.retired/ and reload NAME, "
                                  "so MLServer drops just that version (its API has no per-version unload).")
    p.add_argument("name", help="model name (the vertical)")
    p.add_argument("--version", default=None, help="unload only this version (needs --repository)")
    p.add_argument("--repository", default=None, help="the folder the server serves (for --version)")
    _add_server_options(p)
    p.set_defaults(func=cmd_unload)

    p = mc.add_parser("upload", help="validate a bundle, copy it into the served repository and load it",
                      description="Validate BUNDLE (refused with the report when it fails), copy it atomically into "
                                  "the repository the server serves, load it and wait until it is ready. --replace "
                                  "then retires every other version of the model: a hot swap without a restart.")
    p.add_argument("bundle", help="bundle folder or training output")
    p.add_argument("--repository", required=True, help="the folder the server serves (mlserver start FOLDER)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--version", default=None, help="serve it as this version (default: the bundle's own)")
    v.add_argument("--bump", choices=BUMPS, default=None, help="serve it as the next version by this bump")
    p.add_argument("--replace", action="store_true", help="retire the other versions once the new one is ready")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_server_options(p)
    _add_gate_options(p)
    _add_values_options(p, "which version is stable")
    p.set_defaults(func=cmd_upload, default_values=False)

    ro = groups.add_parser("rollout", help="canary / promote / rollback through helm upgrade; auto: all by itself",
                           formatter_class=_Formatter, description=f"{rollout.__doc__}\nauto:\n{autorollout.__doc__}")
    ro.add_argument("action", choices=(*rollout.ACTIONS, "auto"))
    ro.add_argument("--vertical", required=True, choices=rollout.VERTICALS)
    ro.add_argument("--version", default=None, help="canary version (semver); checked on promote/rollback")
    ro.add_argument("--percent", type=int, default=None, help="canary traffic percent, 0-100")
    ro.add_argument("--storage-uri", default=None, help="canary bundle URI (default: the stable one with the "
                                                        "version swapped)")
    ro.add_argument("--release", default=rollout.DEFAULT_RELEASE, help="Helm release (default: %(default)s)")
    ro.add_argument("--namespace", default=rollout.DEFAULT_NAMESPACE, help="namespace (default: %(default)s)")
    ro.add_argument("--chart", default=os.environ.get("INSURANCE_CHART", rollout.DEFAULT_CHART),
                    help="chart path or reference (default: $INSURANCE_CHART or %(default)s)")
    ro.add_argument("--helm", default="helm", help="helm binary (default: %(default)s)")
    ro.add_argument("--values-file", default=None, help="read the current values from this file, not the cluster")
    ro.add_argument("--dry-run", action="store_true", help="print the helm upgrade, do not run it")
    ro.add_argument("--repository", default=None, help="canary only: validate <repository>/<vertical>/<version> "
                                                       "first and refuse when it fails")
    ro.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help=argparse.SUPPRESS)
    ro.add_argument("--latency-budget-ms", type=float, default=DEFAULT_LATENCY_BUDGET_MS, help=argparse.SUPPRESS)
    autorollout.add_options(ro, in_rollout=True)
    ro.set_defaults(func=cmd_rollout)

    abp = groups.add_parser("ab", help="A/B comparison of stable and canary from Prometheus",
                            description="A/B comparison of a vertical's stable and canary versions.")
    abc = abp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = abc.add_parser("report", help="stable vs canary side by side, with a verdict", formatter_class=_Formatter,
                       description=ab.__doc__)
    p.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--vertical", required=True, help="model name (the vertical)")
    p.add_argument("--stable", default=None, help="stable version (default: from --values/--release, else the "
                                                  "busier version)")
    p.add_argument("--canary", default=None, help="canary version (default: from --values/--release, else the "
                                                  "other version)")
    p.add_argument("--window", default="1h", help="PromQL range of the comparison (default: %(default)s)")
    p.add_argument("--selector", default=None, help='extra label matchers, e.g. namespace="insurance-serving"')
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--exit-code", action="store_true", help="exit 0 promote, 1 roll back, 3 hold")
    p.add_argument("--header", action="append", metavar="NAME:VALUE", help="extra HTTP header for Prometheus")
    t = ab.Thresholds()
    g = p.add_argument_group("verdict thresholds")
    g.add_argument("--min-requests", type=int, default=t.min_requests, help="canary requests needed (%(default)s)")
    g.add_argument("--max-error-increase", type=float, default=t.max_error_increase,
                   help="allowed error ratio above stable's (%(default)s)")
    g.add_argument("--latency-ratio", type=float, default=t.latency_ratio, help="allowed p99 ratio (%(default)s)")
    g.add_argument("--auc-tolerance", type=float, default=t.auc_tolerance,
                   help="allowed live ROC-AUC drop (%(default)s)")
    g.add_argument("--psi-hold", type=float, default=t.psi_hold, help="hold above this score PSI (%(default)s)")
    _add_values_options(p, "which versions are stable and canary")
    p.set_defaults(func=cmd_ab_report, default_values=False)

    retrain.add_parser(groups, _Formatter, _add_gate_options, _add_values_options)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .server import ServerError
    from .validate import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, RepositoryError, rollout.RolloutError, ServerError, ab.ABError, ConfigError,
            FileNotFoundError, autorollout.AutoRolloutError, retrain.RetrainError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
