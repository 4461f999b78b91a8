"""The decision record in the runtime: one JSON line per scored row (predictors/decisions.py).

Off unless the vertical's `decision_log.enabled` (verticals.yaml) or the runtime setting
`decision_log` switches it on. Lines go through the logger ``insurance.decisions`` (not
propagated to MLServer's log) to the process's stdout, where the cluster's log collector picks
them up, or to `decision_log_file` (appended; reopened when rotated away). Cost per row:
docs/reasons.md.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import orjson

from predictors.bundle import MANIFEST, sha256_file
from predictors.decisions import DecisionLogOptions, Recorder

LOGGER = "insurance.decisions"
_lock = threading.Lock()
_loggers: dict[str, logging.Logger] = {}


def _logger(target: Optional[Path]) -> logging.Logger:
    """One logger per destination (stdout or a file), shared by the models writing there."""
    key = str(target) if target is not None else "-"
    with _lock:
        found = _loggers.get(key)
        if found is not None:
            return found
        log = logging.getLogger(f"{LOGGER}.{len(_loggers)}" if _loggers else LOGGER)
        log.propagate = False
        log.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stdout) if target is None else \
            logging.handlers.WatchedFileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        _loggers[key] = log
        return log


class DecisionLog:
    """Writes the decision records of one model version."""

    def __init__(self, recorder: Recorder, log: logging.Logger):
        self.recorder, self.log = recorder, log

    def write(self, request_id: Optional[str], n: int, raw: Mapping[str, Sequence[Any]],
              outputs: Mapping[str, Any], reasons: Optional[Sequence[str]] = None) -> None:
        # one write per request (a line per row): logging's per-record work is most of the cost otherwise
        self.log.info("%s", b"\n".join(orjson.dumps(r) for r in
                                       self.recorder.records(request_id, n, raw, outputs, reasons)).decode())


def open_for(name: str, version: Optional[str], folder: str | Path, predictor: Any, settings: Any
             ) -> Optional[DecisionLog]:
    """The model's decision log, or None when it is off (runtime settings over verticals.yaml)."""
    options = DecisionLogOptions.parse(predictor.vertical, predictor.vertical.decision_log)
    enabled = options.enabled if settings.decision_log is None else settings.decision_log
    if not enabled:
        return None
    key = settings.decision_log_hash_key
    recorder = Recorder(name, version, sha256_file(Path(folder) / MANIFEST), predictor.features, options,
                        key.get_secret_value().encode() if key is not None else None)
    return DecisionLog(recorder, _logger(settings.decision_log_file))
