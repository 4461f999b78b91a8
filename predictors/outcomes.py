"""Ground truth sent back for earlier predictions, and rolling quality metrics (framework-free).

A prediction is identified by the V2 request ``id`` and the row index inside that request
(the response repeats the request's ``id``; MLServer generates a UUID when the request has
none). A prediction log remembers the scores of the most recent ``capacity`` scored rows and
the outcomes matched to them:

* :class:`MemoryPredictionLog` (``open_prediction_log(None)``): dictionaries in the process
  that scores, for a model served in MLServer's server process; recording a request is one
  dictionary insert;
* :class:`PredictionLog` (``open_prediction_log(path)``): a SQLite file shared by MLServer's
  parallel workers, so that an outcome is matched whichever worker scored the row and whichever
  worker receives the outcome. Scores are buffered on the request path (:meth:`record` is an
  append) and written in one transaction by :meth:`flush`, which the runtime calls at most
  once per refresh interval (in a writer thread) and before matching outcomes.

:func:`quality` computes ROC-AUC (rank statistic with ties, no sklearn needed), and
precision, recall, F1 and accuracy at a score threshold, for the rolling window of the
latest outcomes of one model version.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import OrderedDict, deque
from itertools import islice
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

DEFAULT_CAPACITY = 100_000
METRICS = ("roc_auc", "precision", "recall", "f1", "accuracy")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
  model TEXT NOT NULL, request_id TEXT NOT NULL, row INTEGER NOT NULL,
  version TEXT NOT NULL, score REAL NOT NULL,
  PRIMARY KEY (model, request_id, row));
CREATE TABLE IF NOT EXISTS outcomes (
  model TEXT NOT NULL, version TEXT NOT NULL, request_id TEXT NOT NULL, row INTEGER NOT NULL,
  score REAL NOT NULL, outcome INTEGER NOT NULL,
  PRIMARY KEY (model, version, request_id, row));
"""


@dataclass(frozen=True)
class Match:
    version: str
    request_id: str
    row: int
    score: float
    outcome: int


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN for one class."""
    labels = np.asarray(labels).astype(bool)
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return math.nan
    _, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last element of each group of ties (1-based)
    avg_rank = (upper - (counts - 1) / 2.0)[inverse]
    return float((avg_rank[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def quality(scores: Sequence[float], outcomes: Sequence[int], threshold: float) -> dict[str, float]:
    """ROC-AUC and precision/recall/F1/accuracy at ``threshold`` (score >= threshold is positive).

    Like scikit-learn with ``zero_division=0``; ``roc_auc`` is left out while the outcomes hold
    only one class.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(outcomes).astype(bool)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    out = {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": float(np.mean(pred == y)) if len(y) else 0.0,
    }
    auc = roc_auc(s, y)
    if not math.isnan(auc):
        out["roc_auc"] = auc
    return out


def open_prediction_log(path: str | None, capacity: int = DEFAULT_CAPACITY):
    """The in-process log (``path`` None) or the SQLite one shared through ``path``."""
    return MemoryPredictionLog(capacity) if path is None else PredictionLog(path, capacity)


class MemoryPredictionLog:
    """The prediction log of one process, in dictionaries (same interface as PredictionLog).

    Used from one thread (MLServer's event loop). Evicts whole requests, oldest first, once more
    than ``capacity`` rows are held; about 350 bytes per remembered single-row request.
    """

    path = None
    pending_rows = 0  # nothing is buffered

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = int(capacity)
        self._predictions: dict[tuple[str, str], tuple[str, np.ndarray]] = {}  # (model, id) -> (version, scores)
        self._order: deque[tuple[tuple[str, str], tuple[str, np.ndarray]]] = deque()  # oldest first
        self._rows = 0
        # (model, version) -> (request_id, row) -> (score, outcome), oldest first
        self._outcomes: dict[tuple[str, str], OrderedDict[tuple[str, int], tuple[float, int]]] = {}

    def record(self, model: str, version: str, request_id: str | None, scores: np.ndarray) -> None:
        if not request_id or self.capacity <= 0:
            return
        key, value = (model, request_id), (version, scores)
        old = self._predictions.pop(key, None)
        if old is not None:  # the same id again: replaces it (its queue entry is skipped later)
            self._rows -= len(old[1])
        self._predictions[key] = value
        self._order.append((key, value))
        self._rows += len(scores)
        while self._rows > self.capacity and len(self._order) > 1:
            k, v = self._order.popleft()
            if self._predictions.get(k) is v:
                del self._predictions[k]
                self._rows -= len(v[1])
        if len(self._order) > 2 * len(self._predictions) + 64:  # many replaced ids: drop their stale entries
            self._order = deque(e for e in self._order if self._predictions.get(e[0]) is e[1])

    def flush(self, background: bool = False) -> int:
        return 0

    def close(self) -> None:
        pass

    def add_outcomes(self, model: str, outcomes: Iterable[tuple[str, int, int]]
                     ) -> tuple[list[Match], list[tuple[str, int]]]:
        matched: list[Match] = []
        unknown: list[tuple[str, int]] = []
        for request_id, row, outcome in outcomes:
            found = self._predictions.get((model, request_id))
            row = int(row)
            if found is None or row >= len(found[1]):
                unknown.append((request_id, row))
                continue
            m = Match(found[0], request_id, row, float(found[1][row]), int(outcome))
            matched.append(m)
            store = self._outcomes.setdefault((model, m.version), OrderedDict())
            store.pop((request_id, row), None)  # sending an outcome again replaces it
            store[(request_id, row)] = (m.score, m.outcome)
            while len(store) > max(self.capacity, 1):
                store.popitem(last=False)
        return matched, unknown

    def recent_outcomes(self, model: str, version: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        latest = list(islice(reversed(self._outcomes.get((model, version), {}).values()), int(limit)))
        if not latest:
            return np.empty(0), np.empty(0, dtype=np.int64)
        arr = np.asarray(latest, dtype=np.float64)
        return arr[:, 0], arr[:, 1].astype(np.int64)


class PredictionLog:
    """The prediction log in SQLite, shared by processes through a file (see the module doc)."""

    def __init__(self, path: str | None = None, capacity: int = DEFAULT_CAPACITY):
        self.path = path
        self.capacity = int(capacity)
        self._pending: list[tuple[str, str, str, np.ndarray]] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._last_write: Future | None = None
        self._db = sqlite3.connect(path or ":memory:", timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def _transaction(self, *statements: tuple[str, object, bool]) -> None:
        """Run (sql, parameters, many) statements in one transaction (caller holds the lock)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params, many in statements:
                (self._db.executemany if many else self._db.execute)(sql, params)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ request path

    def record(self, model: str, version: str, request_id: str | None, scores: np.ndarray) -> None:
        """Remember the scores of one request (rows 0..n-1); cheap: written at the next flush."""
        if not request_id or self.capacity <= 0:
            return
        self._pending.append((model, version, request_id, scores))
        self._pending_rows += len(scores)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def flush(self, background: bool = False) -> int:
        """Write the buffered scores (one transaction), keeping the newest ``capacity`` rows.

        ``background=True`` hands the write to the log's writer thread (SQLite releases the GIL
        while it works) so that the caller's event loop does not stall; writes stay in order.
        Returns the number of rows handed over.
        """
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not background:
            self._wait_for_writer()  # what was handed to the writer thread is in the database after this
        if not pending:
            return 0
        rows = sum(len(p[3]) for p in pending)
        if background:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prediction-log")
            self._last_write = self._writer.submit(self._write, pending)
        else:
            self._write(pending)
        return rows

    def _wait_for_writer(self) -> None:
        last, self._last_write = self._last_write, None
        if last is not None:
            last.result()

    def _write(self, pending: list[tuple[str, str, str, np.ndarray]]) -> None:
        rows = [(model, rid, i, version, s)
                for model, version, rid, scores in pending
                for i, s in enumerate(scores.tolist())]
        with self._lock:
            self._transaction(
                ("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)", rows, True),
                ("DELETE FROM predictions WHERE rowid <= (SELECT max(rowid) FROM predictions) - ?",
                 (self.capacity,), False))

    # ------------------------------------------------------------------ outcomes

    def add_outcomes(self, model: str, outcomes: Iterable[tuple[str, int, int]]
                     ) -> tuple[list[Match], list[tuple[str, int]]]:
        """Match (request_id, row, outcome) records to remembered predictions and store them.

        Returns the matches and the (request_id, row) pairs without a remembered prediction
        (never scored, scored too long ago, or scored less than a flush interval ago by another
        worker). Sending an outcome again replaces the earlier one.
        """
        self.flush()
        matched: list[Match] = []
        unknown: list[tuple[str, int]] = []
        with self._lock:
            cur = self._db.cursor()
            for request_id, row, outcome in outcomes:
                found = cur.execute("SELECT version, score FROM predictions WHERE model = ? AND request_id = ? "
                                    "AND row = ?", (model, request_id, int(row))).fetchone()
                if found is None:
                    unknown.append((request_id, int(row)))
                else:
                    matched.append(Match(found[0], request_id, int(row), float(found[1]), int(outcome)))
            if matched:
                self._transaction(
                    ("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)",
                     [(model, m.version, m.request_id, m.row, m.score, m.outcome) for m in matched], True),
                    ("DELETE FROM outcomes WHERE rowid <= (SELECT max(rowid) FROM outcomes) - ?",
                     (max(self.capacity, 1),), False))
        return matched, unknown

    def recent_outcomes(self, model: str, version: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and outcomes of the latest ``limit`` outcomes of one model version."""
        with self._lock:
            rows = self._db.execute("SELECT score, outcome FROM outcomes WHERE model = ? AND version = ? "
                                    "ORDER BY rowid DESC LIMIT ?", (model, version, int(limit))).fetchall()
        if not rows:
            return np.empty(0), np.empty(0, dtype=np.int64)
        arr = np.asarray(rows, dtype=np.float64)
        return arr[:, 0], arr[:, 1].astype(np.int64)
