"""``python -m runtime.precompile``: byte-compile the installed packages the server imports.

The image's root is read-only and its Python writes no bytecode, so without this every start
compiles every imported module again (measured: 1.5 s of imports instead of 0.4 s, most of a cold
start; docs/performance.md). The image build runs it once: it imports what ``insurance-mlserver
start`` imports, then compiles those packages whole (their lazily imported submodules too; not
their tests), as unchecked-hash .pyc files: the image never changes its sources.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import sys
import sysconfig

from .main import import_server

SKIP = re.compile(r"[/\\](tests?|testing)[/\\]")


def packages(site: str) -> list[str]:
    """Top-level files and folders under `site` of every module imported so far."""
    roots = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.abspath(path).startswith(site + os.sep):
            roots.add(os.path.join(site, os.path.relpath(os.path.abspath(path), site).split(os.sep)[0]))
    return sorted(roots)


def main() -> int:
    import_server()
    site = os.path.abspath(sysconfig.get_paths()["purelib"])
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    roots = packages(site)
    for root in roots:  # a file that does not compile (compileall names it) only stays slower to import
        if os.path.isdir(root):
            compileall.compile_dir(root, quiet=1, workers=0, rx=SKIP, invalidation_mode=mode)
        elif root.endswith(".py"):
            compileall.compile_file(root, quiet=1, invalidation_mode=mode)
    print(f"precompiled {len(roots)} packages under {site}: {', '.join(os.path.basename(r) for r in roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
