"""Canary, promote and rollback of one vertical as a values change of the Helm release.

    python scripts/canary.py canary   --vertical auto --version 1.1.0 --percent 10 [--storage-uri URI]
    python scripts/canary.py promote  --vertical auto --version 1.1.0
    python scripts/canary.py rollback --vertical auto

Each action reads the release's current values (`helm get values --all`), checks the request
against them, and runs ONE `helm upgrade --reset-then-reuse-values --set ...` (printed first). With
--dry-run it only prints that command. `make canary|promote|rollback` call this script.

What each action sets (verticals.<V>. prefix omitted):
  canary    canary.enabled=true, canary.version, canary.storageUri (default: the stable
            storageUri with its trailing /<stable version> replaced by /<VERSION>),
            canary.trafficPercent. Run it again with another PERCENT to shift traffic.
  promote   version and storageUri := the canary's, canary.enabled=false.
            Knative: the canary revision already serves that spec and takes 100 %.
            Standard: the stable Deployment rolls to the canary bundle (maxUnavailable 0,
            gated by the per-version readiness probe), then KServe deletes the canary one.
  rollback  Knative: canary.trafficPercent=0 (KServe routes everything to the last revision
            rolled out at 100 %, at once; the canary spec stays until the next canary).
            Standard: canary.enabled=false (KServe deletes the canary Deployment; the stable
            one kept serving its share all along).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

VERTICALS = ("auto", "home", "health", "life", "claims")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def die(msg: str) -> None:
    print(f"canary: error: {msg}", file=sys.stderr)
    sys.exit(2)


def current_values(args: argparse.Namespace) -> dict:
    if args.values_file:  # offline / tests: the release's values as JSON or YAML
        text = Path(args.values_file).read_text(encoding="utf-8")
        if args.values_file.endswith(".json"):
            return json.loads(text)
        import yaml  # the project's venv has PyYAML

        return yaml.safe_load(text)
    cmd = [args.helm, "get", "values", args.release, "--namespace", args.namespace, "--all", "--output", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"`{shlex.join(cmd)}` failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def plan(action: str, args: argparse.Namespace, values: dict) -> list[str]:
    v = args.vertical
    node = (values.get("verticals") or {}).get(v)
    if not node:
        die(f"vertical {v!r} is not in the release's values")
    if not node.get("enabled", False):
        die(f"vertical {v!r} is disabled in this release")
    mode = values.get("deploymentMode", "Standard")
    knative = mode in ("Knative", "Serverless")
    canary = node.get("canary") or {}
    p = f"verticals.{v}"
    stable_version = str(node.get("version", ""))

    if action == "canary":
        if args.version is None or args.percent is None:
            die("canary needs VERSION and PERCENT")
        if not SEMVER.match(args.version):
            die(f"VERSION {args.version!r} is not a semantic version (e.g. 1.1.0)")
        if not 0 <= args.percent <= 100:
            die(f"PERCENT {args.percent} is not within 0-100")
        if args.version == stable_version:
            die(f"{args.version} is already the stable version of {v}")
        uri = args.storage_uri
        if not uri:
            stable_uri = str(node.get("storageUri", ""))
            suffix = f"/{stable_version}"
            if not stable_uri.rstrip("/").endswith(suffix):
                die(f"cannot derive the canary storageUri from {stable_uri!r} (it does not end in {suffix}); "
                    "pass STORAGE_URI=")
            uri = stable_uri.rstrip("/")[: -len(suffix)] + f"/{args.version}"
        return [f"{p}.canary.enabled=true", f"{p}.canary.version={args.version}",
                f"{p}.canary.storageUri={uri}", f"{p}.canary.trafficPercent={args.percent}"]

    if not canary.get("enabled"):
        die(f"{v} has no canary in this release (nothing to {action})")
    canary_version = str(canary.get("version", ""))

    if action == "promote":
        if args.version is not None and args.version != canary_version:
            die(f"VERSION {args.version} is not the canary of {v} (the canary is {canary_version})")
        return [f"{p}.version={canary_version}", f"{p}.storageUri={canary['storageUri']}",
                f"{p}.canary.enabled=false"]

    if action == "rollback":
        if args.version is not None and args.version != canary_version:
            die(f"VERSION {args.version} is not the canary of {v} (the canary is {canary_version})")
        if knative:
            return [f"{p}.canary.trafficPercent=0"]
        return [f"{p}.canary.enabled=false"]
    raise AssertionError(action)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("canary", "promote", "rollback"))
    ap.add_argument("--vertical", required=True, choices=VERTICALS)
    ap.add_argument("--version", default=None, help="canary version (semver); checked on promote/rollback")
    ap.add_argument("--percent", type=int, default=None, help="canary traffic percent, 0-100")
    ap.add_argument("--storage-uri", default=None, help="canary bundle URI (default: derived from the stable one)")
    ap.add_argument("--release", default="insurance-serving")
    ap.add_argument("--namespace", default="insurance-serving")
    ap.add_argument("--chart", default="helm/insurance-serving")
    ap.add_argument("--helm", default="helm")
    ap.add_argument("--values-file", default=None, help="read current values from this file, not the cluster")
    ap.add_argument("--dry-run", action="store_true", help="print the helm command, do not run it")
    args = ap.parse_args(argv)
    if args.version == "":
        args.version = None

    sets = plan(args.action, args, current_values(args))
    cmd = [args.helm, "upgrade", args.release, args.chart, "--namespace", args.namespace, "--reset-then-reuse-values"]
    for s in sets:  # strings stay strings (a version like 1.10.0 must not become a number)
        key = s.split("=", 1)[0]
        cmd += ["--set-string" if key.endswith((".version", ".storageUri")) else "--set", s]
    print(shlex.join(cmd))
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
