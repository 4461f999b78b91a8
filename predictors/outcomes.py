"""Ground truth sent back for earlier predictions, and rolling quality metrics (framework-free).

A prediction is identified by the V2 request ``id`` and the row index inside that request
(the response repeats the request's ``id``; MLServer generates a UUID when the request has
none) and its owner (the credential or tenant that made it: outcomes match only the owner's own
predictions). A prediction log remembers, per model version, the scores of up to ``capacity``
scored rows (over the bound the owner holding the most rows loses its oldest first) and the
outcomes matched to them:

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

import heapq
import math
import sqlite3
import threading
from collections import OrderedDict, deque
from itertools import islice
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .versions import semver_key

DEFAULT_CAPACITY = 100_000
METRICS = ("roc_auc", "precision", "recall", "f1", "accuracy")

# One row per scored row and per matched outcome, keyed by owner (runtime/auth.py) and version.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scored (
  model TEXT NOT NULL, version TEXT NOT NULL, owner TEXT NOT NULL, request_id TEXT NOT NULL,
  row INTEGER NOT NULL, score REAL NOT NULL,
  PRIMARY KEY (model, owner, request_id, row, version));
CREATE INDEX IF NOT EXISTS scored_by_version ON scored (model, version, owner);
CREATE TABLE IF NOT EXISTS matched (
  model TEXT NOT NULL, version TEXT NOT NULL, owner TEXT NOT NULL, request_id TEXT NOT NULL,
  row INTEGER NOT NULL, score REAL NOT NULL, outcome INTEGER NOT NULL,
  PRIMARY KEY (model, version, owner, request_id, row));
"""
#: Delete the oldest ?4 rows of one owner in one version.
_TRIM_OWNER = ("DELETE FROM scored WHERE rowid IN (SELECT rowid FROM scored WHERE model = ?1 AND version = ?2 "
               "AND owner = ?3 ORDER BY rowid LIMIT ?4)")
_TRIM_OUTCOMES = ("DELETE FROM matched WHERE rowid IN (SELECT rowid FROM matched WHERE model = ?1 AND version = ?2 "
                  "ORDER BY rowid DESC LIMIT -1 OFFSET ?3)")


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


class _VersionStore:
    """The remembered predictions of one model version: (owner, request id) -> scores, bounded
    to ``capacity`` rows. Over the bound, whole requests of the owner holding the most rows go
    first, oldest first: a caller flooding the store evicts its own predictions before anyone
    else's (with one owner, e.g. authentication off, this is plain oldest-first)."""

    __slots__ = ("capacity", "predictions", "orders", "owner_rows", "rows")

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.predictions: dict[tuple[str, str], np.ndarray] = {}
        self.orders: dict[str, deque] = {}  # owner -> its (key, scores), oldest first
        self.owner_rows: dict[str, int] = {}
        self.rows = 0

    @property
    def order(self) -> deque:  # every owner's queue entries (tests)
        return deque(e for q in self.orders.values() for e in q)

    def record(self, key: tuple[str, str], scores: np.ndarray) -> int:
        """Remember; returns the number of rows evicted to stay within capacity."""
        owner = key[0]
        old = self.predictions.pop(key, None)
        if old is not None:  # the same owner and id again: replaces it (its queue entry is skipped later)
            self.rows -= len(old)
            self.owner_rows[owner] -= len(old)
        self.predictions[key] = scores
        queue = self.orders.get(owner)
        if queue is None:
            queue = self.orders[owner] = deque()
        queue.append((key, scores))
        self.rows += len(scores)
        self.owner_rows[owner] = self.owner_rows.get(owner, 0) + len(scores)
        evicted = 0
        while self.rows > self.capacity and len(self.predictions) > 1:
            largest = max(self.owner_rows, key=self.owner_rows.__getitem__)
            q = self.orders[largest]
            k, v = q.popleft()
            if self.predictions.get(k) is v:
                del self.predictions[k]
                self.rows -= len(v)
                self.owner_rows[largest] -= len(v)
                evicted += len(v)
            if not q:
                del self.orders[largest], self.owner_rows[largest]
        if len(queue) > 2 * self.owner_rows.get(owner, 0) + 64:  # many replaced ids: drop their stale entries
            self.orders[owner] = deque(e for e in queue if self.predictions.get(e[0]) is e[1])
        return evicted


class MemoryPredictionLog:
    """The prediction log of one process, in dictionaries (same interface as PredictionLog).

    Used from one thread (MLServer's event loop). One store per model version, each bounded to
    ``capacity`` rows (so one version's traffic never evicts another's); a prediction is keyed by
    its owner (the credential or tenant that made it, runtime/auth.py) and request id, so an
    outcome matches only predictions of the same owner and a second owner's request with the same
    id replaces nothing. About 350 bytes per remembered single-row request. ``on_evict(model,
    version, rows)`` is called when rows are evicted.
    """

    path = None
    pending_rows = 0  # nothing is buffered

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = int(capacity)
        self.on_evict = None
        self._stores: dict[tuple[str, str], _VersionStore] = {}
        # (model, version) -> (owner, request_id, row) -> (score, outcome), oldest first
        self._outcomes: dict[tuple[str, str], OrderedDict[tuple[str, str, int], tuple[float, int]]] = {}

    def set_capacity(self, model: str, version: str, capacity: int) -> None:
        """The bound of one version's store (its model's outcomes_capacity)."""
        self._store(model, version).capacity = int(capacity)

    def _store(self, model: str, version: str) -> _VersionStore:
        store = self._stores.get((model, version))
        if store is None:
            store = self._stores[(model, version)] = _VersionStore(self.capacity)
        return store

    def record(self, model: str, version: str, request_id: str | None, scores: np.ndarray, owner: str = "") -> None:
        if not request_id or self.capacity <= 0:
            return
        store = self._store(model, version)
        evicted = store.record((owner, request_id), scores)
        if evicted and self.on_evict is not None:
            self.on_evict(model, version, evicted)

    def flush(self, background: bool = False) -> int:
        return 0

    def close(self) -> None:
        pass

    def add_outcomes(self, model: str, outcomes: Iterable[tuple[str, int, int]], owner: str = ""
                     ) -> tuple[list[Match], list[tuple[str, int]]]:
        """Match (request_id, row, outcome) records to predictions ``owner`` made (newest version
        first when several versions remember the id)."""
        matched: list[Match] = []
        unknown: list[tuple[str, int]] = []
        stores = sorted(((v, st) for (m, v), st in self._stores.items() if m == model),
                        key=lambda e: semver_key(e[0]), reverse=True)
        for request_id, row, outcome in outcomes:
            row = int(row)
            found = None
            for version, st in stores:
                scores = st.predictions.get((owner, request_id))
                if scores is not None and row < len(scores):
                    found = (version, scores)
                    break
            if found is None:
                unknown.append((request_id, row))
                continue
            m = Match(found[0], request_id, row, float(found[1][row]), int(outcome))
            matched.append(m)
            store = self._outcomes.setdefault((model, m.version), OrderedDict())
            store.pop((owner, request_id, row), None)  # sending an outcome again replaces it
            store[(owner, request_id, row)] = (m.score, m.outcome)
            while len(store) > max(self._store(model, m.version).capacity, 1):
                store.popitem(last=False)
        return matched, unknown

    def recent_outcomes(self, model: str, version: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        latest = list(islice(reversed(self._outcomes.get((model, version), {}).values()), int(limit)))
        if not latest:
            return np.empty(0), np.empty(0, dtype=np.int64)
        arr = np.asarray(latest, dtype=np.float64)
        return arr[:, 0], arr[:, 1].astype(np.int64)


class PredictionLog:
    """The prediction log in SQLite, shared by processes through a file (see the module doc);
    bounds, owners and versions as MemoryPredictionLog."""

    def __init__(self, path: str | None = None, capacity: int = DEFAULT_CAPACITY):
        self.path = path
        self.capacity = int(capacity)
        self.on_evict = None
        self._capacities: dict[tuple[str, str], int] = {}
        self._pending: list[tuple[str, str, str, str, np.ndarray]] = []
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

    def set_capacity(self, model: str, version: str, capacity: int) -> None:
        self._capacities[(model, version)] = int(capacity)

    def _capacity(self, model: str, version: str) -> int:
        return self._capacities.get((model, version), self.capacity)

    def _transaction(self, *statements: tuple[str, object, bool]) -> list[int]:
        """Run (sql, parameters, many) statements in one transaction (caller holds the lock);
        returns the rows each changed."""
        self._db.execute("BEGIN IMMEDIATE")
        changed = []
        try:
            for sql, params, many in statements:
                changed.append((self._db.executemany if many else self._db.execute)(sql, params).rowcount)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return changed

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ request path

    def record(self, model: str, version: str, request_id: str | None, scores: np.ndarray, owner: str = "") -> None:
        """Remember the scores of one request (rows 0..n-1); cheap: written at the next flush."""
        if not request_id or self.capacity <= 0:
            return
        self._pending.append((model, version, owner, request_id, scores))
        self._pending_rows += len(scores)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def flush(self, background: bool = False) -> int:
        """Write the buffered scores (one transaction), keeping the newest rows of each version.

        ``background=True`` hands the write to the log's writer thread (SQLite releases the GIL
        while it works) so that the caller's event loop does not stall; writes stay in order.
        Returns the number of rows handed over.
        """
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not background:
            self._wait_for_writer()  # what was handed to the writer thread is in the database after this
        if not pending:
            return 0
        rows = sum(len(p[4]) for p in pending)
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

    def _write(self, pending: list[tuple[str, str, str, str, np.ndarray]]) -> None:
        rows = [(model, version, owner, rid, i, s)
                for model, version, owner, rid, scores in pending
                for i, s in enumerate(scores.tolist())]
        versions = sorted({(p[0], p[1]) for p in pending})
        evicted = {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO scored VALUES (?, ?, ?, ?, ?, ?)", rows)
                for m, v in versions:
                    evicted[(m, v)] = self._trim(m, v, self._capacity(m, v))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if self.on_evict is not None:
            for (m, v), n in evicted.items():
                if n > 0:
                    self.on_evict(m, v, n)

    def _trim(self, model: str, version: str, capacity: int) -> int:
        """Keep at most `capacity` rows of a version, taking the oldest rows of the owner holding the
        most first (as MemoryPredictionLog, by rows); returns the rows deleted."""
        db, deleted = self._db, 0
        counts = db.execute("SELECT owner, count(*) FROM scored WHERE model = ? AND version = ? GROUP BY owner",
                            (model, version)).fetchall()
        over = sum(n for _, n in counts) - capacity
        if over <= 0:
            return 0
        # one count per owner, then the rows each loses planned here: the owner holding the most gives one
        # row at a time (a scan per row held the write lock for seconds when owners held alike)
        heap = [(-n, owner) for owner, n in counts]
        heapq.heapify(heap)
        take: dict[str, int] = {}
        for _ in range(over):
            n, owner = heapq.heappop(heap)
            take[owner] = take.get(owner, 0) + 1
            if n + 1 < 0:
                heapq.heappush(heap, (n + 1, owner))
        for owner, k in take.items():
            deleted += db.execute(_TRIM_OWNER, (model, version, owner, k)).rowcount
        return deleted

    # ------------------------------------------------------------------ outcomes

    def add_outcomes(self, model: str, outcomes: Iterable[tuple[str, int, int]], owner: str = ""
                     ) -> tuple[list[Match], list[tuple[str, int]]]:
        """Match (request_id, row, outcome) records to predictions ``owner`` made and store them.

        Returns the matches and the (request_id, row) pairs without a remembered prediction
        (never scored by this owner, scored too long ago, or scored less than a flush interval ago
        by another worker). Sending an outcome again replaces the earlier one.
        """
        self.flush()
        matched: list[Match] = []
        unknown: list[tuple[str, int]] = []
        with self._lock:
            cur = self._db.cursor()
            for request_id, row, outcome in outcomes:
                found = cur.execute("SELECT version, score FROM scored WHERE model = ? AND owner = ? AND request_id = ? "
                                    "AND row = ?", (model, owner, request_id, int(row))).fetchall()
                if not found:
                    unknown.append((request_id, int(row)))
                else:
                    version, score = max(found, key=lambda f: semver_key(f[0]))
                    matched.append(Match(version, request_id, int(row), float(score), int(outcome)))
            if matched:
                versions = sorted({m.version for m in matched})
                self._transaction(
                    ("INSERT OR REPLACE INTO matched VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(model, m.version, owner, m.request_id, m.row, m.score, m.outcome) for m in matched], True),
                    *[(_TRIM_OUTCOMES, (model, v, max(self._capacity(model, v), 1)), False) for v in versions])
        return matched, unknown

    def recent_outcomes(self, model: str, version: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and outcomes of the latest ``limit`` outcomes of one model version."""
        with self._lock:
            rows = self._db.execute("SELECT score, outcome FROM matched WHERE model = ? AND version = ? "
                                    "ORDER BY rowid DESC LIMIT ?", (model, version, int(limit))).fetchall()
        if not rows:
            return np.empty(0), np.empty(0, dtype=np.int64)
        arr = np.asarray(rows, dtype=np.float64)
        return arr[:, 0], arr[:, 1].astype(np.int64)
