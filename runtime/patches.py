"""Every change the runtime makes to MLServer 1.7.1 and uvicorn, installed from this one place.

``install()`` runs once per process when MLServer imports the runtime (``runtime.model``), at
the first model load of the server start-up, before the REST listener accepts a connection
(uvicorn binds it after that import) and in every parallel worker. Each patch names the MLServer
behaviour it works around; each is applied on its own, and one that cannot be applied logs a
warning and leaves MLServer's stock behaviour. The runtime's request path (runtime/fastpath.py)
is installed only when the pinned MLServer version and every private name it reads are present
(``ml_fast_path_enabled`` says which); otherwise every request takes MLServer's path.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

logger = logging.getLogger("mlserver.insurance.patches")

#: The MLServer version the patches and the request path are written against (pyproject pins it).
PINNED_MLSERVER = "1.7.1"

_installed = False
_lock = threading.Lock()
#: patch name -> True (installed) / False (MLServer's stock behaviour kept; the log says why).
STATE: dict[str, bool] = {}


def _apply(name: str, patch: Callable[[], None]) -> None:
    try:
        # False: the patch found a dependency it does not know and left the stock behaviour (it logged why)
        STATE[name] = patch() is not False
    except Exception as e:  # an MLServer or uvicorn that differs: keep its stock behaviour
        STATE[name] = False
        logger.warning("MLServer patch %r not installed (%s: %s); MLServer's own behaviour applies", name,
                       type(e).__name__, e)


def install_early() -> None:
    """The seams that must precede ``import mlserver`` (the entry point, runtime/main.py, runs them)."""
    from . import lazy_pandas

    # mlserver.codecs imports pandas (~40 MB, ~0.2 s per process) for a codec this runtime never uses.
    _apply("lazy-pandas-codec", lazy_pandas.install)


def _predictors_log() -> None:
    import logging as _logging

    class ToServerLog(_logging.Handler):
        """Hands each record to MLServer's logger at emit time (its handlers may be set up later)."""

        def emit(self, record: _logging.LogRecord) -> None:
            _logging.getLogger("mlserver").handle(record)

    own = _logging.getLogger("predictors")
    if not any(type(h).__name__ == "ToServerLog" for h in own.handlers):
        own.addHandler(ToServerLog())
    own.setLevel(_logging.INFO)
    own.propagate = False


def install() -> None:
    global _installed
    from . import auth, edge, grpc_metrics, hardening, loading, ratelimit, versions
    from .settings import EdgeSettings

    with _lock:
        if _installed:
            return
        limits = EdgeSettings()  # a malformed INSURANCE_* limit fails the start (closed), never drops the limit
        _installed = True

    # predictors/ logs under "predictors.*", which MLServer's logging config leaves to Python's last-resort
    # handler (warnings only): compiled trees in use, fallbacks, refused caches were not in the server log.
    _apply("predictors-log", _predictors_log)
    # gRPC: mlserver.grpc.utils maps only 400/404/422/500 to status codes; 401/403/413 became UNKNOWN.
    _apply("grpc-status-codes", hardening._status_codes)
    # gRPC: malformed raw_input_contents made MLServer's request converter raise -> INTERNAL (now 400).
    _apply("grpc-malformed-raw-contents", hardening._request_converter)
    # gRPC: typed-contents requests failed on BYTES outputs held as str ("expected bytes, str found").
    _apply("grpc-bytes-outputs", hardening._bytes_outputs)
    # REST infer_stream/generate_stream: MLServer starts the stream before the model runs (errors = bare 500).
    _apply("rest-stream-errors", hardening._rest_stream_errors)
    # Parallel workers: ParallelModel.load() reports ready even when the worker's load failed.
    _apply("parallel-load-readiness", loading.install)
    # DataPlane makes model_infer_request_* series from the URL's model name before it checks the model.
    _apply("known-models-first", hardening.known_models_first)
    # GET /v2 names "mlserver" and MLServer's version, not this server.
    _apply("server-metadata", hardening.server_metadata)
    # MLServer.stop() closes the worker pool while the servers still take requests (500s, a hung exit).
    _apply("clean-shutdown", hardening.clean_shutdown)
    # MLServer's repository API (REST and gRPC) is open to anyone; FastAPI's /docs and /openapi.json are on
    # and load swagger-ui from a CDN; a credential header sent twice is read differently by two paths.
    _apply("auth-admin-repository", auth.install)
    # MLServer has no 429: gRPC maps it to UNKNOWN and the REST error handler drops Retry-After.
    _apply("rate-limit-answers", ratelimit.install)
    # mlserver.registry._is_newer orders versions as strings (1.9.0 after 1.10.0) for the unversioned route.
    _apply("semver-default-version", versions.install)
    # py-grpc-prometheus (MLServer's gRPC metrics interceptor) rebuilds its handler and label children per
    # call: the same series from handlers built once (runtime/grpc_metrics.py; cost in docs/performance.md).
    _apply("grpc-metrics-interceptor", grpc_metrics.install)
    # uvicorn/MLServer: no limit on request heads, URLs or (gzip-decoded) bodies; FastAPI's 422/405
    # {"detail"} answers instead of the protocol's {"error"}: runtime/edge.py, on every connection.
    edge.on_app(hardening.oip_errors)
    _apply("rest-edge-limits", lambda: edge.install(limits))
    _fast_path()


def _fast_path() -> None:
    """Install the runtime's request path if MLServer is the pinned version with every name it reads."""
    from . import metrics

    problems = []
    try:
        import mlserver

        if mlserver.__version__ != PINNED_MLSERVER:
            problems.append(f"MLServer is {mlserver.__version__}, the request path is written for {PINNED_MLSERVER}")
        from . import fastpath

        problems += fastpath.missing_names()
    except Exception as e:  # e.g. an import of a name MLServer no longer has
        problems.append(f"{type(e).__name__}: {e}")
    if not problems:
        try:
            fastpath.install()
        except Exception as e:
            problems.append(f"installing it failed: {type(e).__name__}: {e}")
    enabled = not problems
    STATE["fast-path"] = enabled
    metrics.families().fast_path_enabled.set(1 if enabled else 0)
    if not enabled:
        logger.warning("the runtime's request path is OFF, every request takes MLServer's path: %s",
                       "; ".join(problems))
