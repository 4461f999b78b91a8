"""The unversioned route goes to the newest version in semver order, not MLServer's string order.

MLServer 1.7.1 picks the default version of a model (``/v2/models/<name>/infer`` without
``/versions/<v>``) with ``mlserver.registry._is_newer``, which compares versions as integers or
else as strings, so 1.9.0 wins over 1.10.0. ``install()`` replaces that module-level function
(read by the registry at call time) with one that orders semantic versions by
predictors/versions.py and leaves everything else to MLServer's comparison.
"""

from __future__ import annotations

import logging

from predictors.versions import SEMVER, semver_key

logger = logging.getLogger("mlserver.insurance.versions")
_installed = False


def install() -> bool | None:
    global _installed
    if _installed:
        return
    _installed = True
    from mlserver import registry

    original = getattr(registry, "_is_newer", None)
    if original is None:
        logger.warning("MLServer has no registry._is_newer: the unversioned route keeps MLServer's version order")
        return False

    def _is_newer(a, b) -> int:
        va, vb = getattr(a, "version", None), getattr(b, "version", None)
        if va is not None and vb is not None and SEMVER.match(va) and SEMVER.match(vb):
            ka, kb = semver_key(va), semver_key(vb)
            return (ka > kb) - (ka < kb)
        return original(a, b)

    _is_newer.__wrapped__ = original
    registry._is_newer = _is_newer
