"""What a bundle that fails to load does: not ready with the reason, instead of a dead server.

MLServer 1.7.1 loads the models of the repository at startup with one `asyncio.gather` and,
when any `load()` raises, logs "Some of the models failed to load during startup!" and stops
the whole server, so one corrupt bundle took every vertical down. With ``load_failure:
not-ready`` (the default) a failing `load()` returns False instead: the registry keeps the
model, `/v2/models/<name>/ready` answers 400 (not ready), an inference gets MLServer's "not
ready" error, the reason is logged and exposed as `parameters.load_error` in the model's
metadata (`GET /v2/models/<name>`), and the other models keep serving. Loading it again (the
repository API, or a restart) after fixing the files makes it ready.

A failure falls back to raising, as before, when another version of the same model name is
serving in this process: MLServer then either adds a version (a raise leaves the serving one
as the default) or reloads the same version (a raise keeps the old instance, while a
not-ready one would replace it). A hot swap to a broken bundle never takes a model down.

Parallel workers: the models load inside the workers, and the server process wraps them in
`mlserver.parallel.model.ParallelModel`, whose `load()` always reports ready. `install()`
makes it ask the worker's model for its metadata (one IPC at load) and report not ready when
that carries a load error. This touches MLServer's internals (pinned at 1.7.1) and is tested.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mlserver.types import MetadataModelResponse, Parameters

logger = logging.getLogger("mlserver.insurance")

LOAD_ERROR = "load_error"
_loaded: "weakref.WeakSet[Any]" = weakref.WeakSet()


def loaded(model: Any) -> bool:
    """Record a model that loaded (it serves while MLServer keeps `model.ready` true)."""
    model.load_error = None
    _loaded.add(model)
    return True


def failed(model: Any, error: Exception) -> bool:
    """A load failed with `error`: return False (not ready) or re-raise, per the policy above."""
    options = getattr(model, "options", None)
    policy = getattr(options, "load_failure", "not-ready")
    serving = [m for m in list(_loaded) if m is not model and m.name == model.name and m.ready]
    if policy != "not-ready" or serving:
        raise error
    model.load_error = getattr(error, "public", None) or str(error)  # the open metadata: no key paths or bytes
    logger.error("model %s %s is NOT READY: %s", model.name, model.version or "", error)
    return False


def metadata(model: Any, meta: MetadataModelResponse) -> MetadataModelResponse:
    """Add `parameters.load_error` to a not-loaded model's metadata."""
    error = getattr(model, "load_error", None)
    if error:
        params = meta.parameters.model_dump(exclude_none=True) if meta.parameters is not None else {}
        meta.parameters = Parameters(**params, **{LOAD_ERROR: error})
    return meta


def load_error_of(meta: Any) -> str | None:
    params = getattr(meta, "parameters", None)
    return (params.model_extra or {}).get(LOAD_ERROR) if params is not None else None


def install() -> None:
    """Make ParallelModel.load() report the worker model's readiness (see the module doc)."""
    try:
        from mlserver.parallel.model import ParallelModel
    except ImportError:  # pragma: no cover
        return
    if getattr(ParallelModel, "_insurance_readiness", False):
        return
    original = ParallelModel.load

    async def load(self) -> bool:
        if not getattr(type(self._model), "reports_load_error", False):
            return await original(self)
        meta = await self._send("metadata")
        error = load_error_of(meta)
        if error:
            logger.error("model %s %s is NOT READY in the inference workers: %s", self.name, self.version or "",
                         error)
            return False
        return True

    ParallelModel.load = load
    ParallelModel._insurance_readiness = True
