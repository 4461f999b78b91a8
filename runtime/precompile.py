"""``python -m runtime.precompile [REPOSITORY]``: byte-compile what the server and its children import.

The image's root is read-only and its Python writes no bytecode, so without this every start
compiles every imported module again (measured: 1.5 s of imports instead of 0.4 s, most of a cold
start; docs/performance.md). The image build runs it once: it imports what ``insurance-mlserver
start`` imports and compiles those packages whole (their lazily imported submodules too; not their
tests); given a model repository, it also does the children's work once in this process (compiled
trees of a LightGBM bundle, the claims translation of a scikit-learn bundle, into a temporary
folder) and compiles every module imported (tests folders included, if something imports them). Unchecked-hash .pyc files: the image never
changes its sources.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import py_compile
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

from .main import import_server

SKIP = re.compile(r"[/\\](tests?|testing)[/\\]")
MODE = py_compile.PycInvalidationMode.UNCHECKED_HASH


def imported_files(site: str) -> list[str]:
    """Source files under `site` of every module imported so far."""
    files = {os.path.abspath(f) for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))}
    return sorted(f for f in files if f.startswith(site + os.sep) and f.endswith(".py"))


def top_level(site: str, files: list[str]) -> list[str]:
    return sorted({os.path.join(site, os.path.relpath(f, site).split(os.sep)[0]) for f in files})


def exercise_children(repository: Path) -> list[str]:
    """Compile one LightGBM bundle's trees and export one claims bundle, as the serving children do."""
    from predictors.bundle import read_manifest
    from predictors.scoring import compile_to, compiled_path, lleaves_available

    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(repository.rglob("manifest.json")):
            folder = path.parent
            manifest = read_manifest(folder)
            if manifest["framework"] == "lightgbm" and "lightgbm" not in done and lleaves_available():
                model = folder / manifest["model_file"]
                compile_to(model, compiled_path(model, tmp))
                done.append("lightgbm")
            elif manifest["framework"] == "sklearn" and "sklearn" not in done:
                from predictors.claims_native import export

                export(folder, tmp)
                done.append("sklearn")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.precompile", description=__doc__.split("\n\n")[0])
    p.add_argument("repository", nargs="?", type=Path, help="model repository whose bundles exercise the children")
    args = p.parse_args(argv)
    site = os.path.abspath(sysconfig.get_paths()["purelib"])
    import_server()
    server = top_level(site, imported_files(site))
    children = exercise_children(args.repository) if args.repository else []
    imported = imported_files(site)  # the server's and the children's, tests folders included
    for root in server:  # a file that does not compile (compileall names it) only stays slower to import
        if os.path.isdir(root):
            compileall.compile_dir(root, quiet=1, workers=0, rx=SKIP, invalidation_mode=MODE)
        else:
            compileall.compile_file(root, quiet=1, invalidation_mode=MODE)
    for path in imported:
        compileall.compile_file(path, quiet=1, invalidation_mode=MODE)
    print(json.dumps({"site": site, "server_packages": [os.path.basename(r) for r in server],
                      "children_exercised": children, "modules_imported": len(imported)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
