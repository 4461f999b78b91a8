"""Canary, promote and rollback of one vertical as a values change of the Helm release.

    python scripts/canary.py canary   --vertical auto --version 1.1.0 --percent 10 [--storage-uri URI]
    python scripts/canary.py promote  --vertical auto --version 1.1.0
    python scripts/canary.py rollback --vertical auto

Each action reads the release's current values (`helm get values --all`), checks the request
against them, and runs ONE `helm upgrade --reset-then-reuse-values --set ...` (printed first). With
--dry-run it only prints that command. `make canary|promote|rollback` call this script; the
logic lives in lifecycle/rollout.py, shared with `insurance rollout` (see its docstring for what
each action sets in each deployment mode).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: lifecycle/

from lifecycle.rollout import (  # noqa: E402
    ACTIONS, VERTICALS, RolloutError, helm_upgrade_command, plan, release_values,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=ACTIONS)
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

    try:
        values = release_values(args.release, args.namespace, args.helm, args.values_file)
        sets = plan(args.action, values, args.vertical, args.version, args.percent, args.storage_uri)
    except RolloutError as e:
        print(f"canary: error: {e}", file=sys.stderr)
        return 2
    cmd = helm_upgrade_command(sets, args.release, args.namespace, args.chart, args.helm)
    print(shlex.join(cmd))
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
