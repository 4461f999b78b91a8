"""``insurance-mlserver``: MLServer's command line, with the start-up seams that must run first.

``insurance-mlserver start FOLDER`` does what ``mlserver start FOLDER`` does (same settings files,
MLSERVER_* variables, logging and event loop), minus two costs a serving pod pays for nothing:
MLServer's pandas codec is imported on first use (runtime/lazy_pandas.py), and the CLI module that
also serves ``mlserver infer`` (tritonclient, aiohttp, gevent) is not imported. Any other command
goes to MLServer's own CLI unchanged. Measured cost of each: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Sequence


def import_server():
    """Install the early seams, then import what `start` runs (also runtime/precompile.py's list)."""
    from . import patches

    patches.install_early()  # before the first `import mlserver`

    from mlserver.logging import configure_logger
    from mlserver.server import MLServer
    from mlserver.utils import install_uvloop_event_loop

    from . import model  # noqa: F401  (the runtime MLServer loads for every bundle)

    return configure_logger, install_uvloop_event_loop, MLServer


def start(folder: str) -> None:
    configure_logger, install_uvloop_event_loop, MLServer = import_server()

    configure_logger()
    install_uvloop_event_loop()

    async def run() -> None:
        settings, models_settings = await load_settings(folder)
        await MLServer(settings).start(models_settings)

    asyncio.run(run())


async def load_settings(folder: str):
    """``mlserver.cli.serve.load_settings``, step for step: importing that module runs
    ``mlserver.cli``'s __init__, which imports the whole CLI (tritonclient, aiohttp, pandas)."""
    from mlserver.repository.factory import ModelRepositoryFactory
    from mlserver.settings import Settings

    sys.path.insert(0, ".")  # as MLServer: the model folder and the working directory hold implementations
    sys.path.insert(0, folder)
    settings_path = os.path.join(folder, "settings.json")
    settings = Settings.parse_file(settings_path) if os.path.isfile(settings_path) else Settings()
    settings.model_repository_root = folder
    models_settings = []
    if settings.load_models_at_startup:
        repository = ModelRepositoryFactory.resolve_model_repository(settings)
        models_settings = await repository.list()
    return settings, models_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "start":  # build, dockerfile, infer, init, --help, --version: MLServer's CLI
        from mlserver.cli.main import main as mlserver_main

        sys.argv = ["mlserver", *args]
        mlserver_main()  # its logging and event loop set up as `mlserver` does, then click (which exits)
        return 0
    parser = argparse.ArgumentParser(prog="insurance-mlserver start",
                                     description="Start serving the model repository FOLDER (as `mlserver start`).")
    parser.add_argument("folder")
    start(parser.parse_args(args[1:]).folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
