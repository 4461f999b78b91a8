"""Optional prediction cache: the outputs of a request reused for an identical request within a TTL.

Off unless a TTL is set (runtime setting ``prediction_cache_ttl``). The key is the request's
raw columns exactly as decoded (every input name and value, in feature order) plus the
predictor's time-dependent state (for lead scoring the market factors in force at the quote
time, e.g. peak hours), so a hit returns exactly what scoring the request again would return.
A request whose values cannot be keyed safely (a bool, which equals 1 in Python but is
refused as a number; an unhashable value) is simply not cached. Errors are never cached: a
request is validated the first time it is seen and only a valid one is stored.

Bounded: at most ``max_entries`` requests, the least recently used dropped first; an expired
entry is dropped when met. ``hits`` / ``misses`` count lookups (``on_lookup(hit)`` is called
for each, for a metric).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence


class PredictionCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive (0 means no cache: do not build one)")
        self.ttl = float(ttl_seconds)
        self.max_entries = int(max_entries)
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self.on_lookup: Optional[Callable[[bool], None]] = None
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, key: Hashable) -> Any:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= now:
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
        if self.on_lookup is not None:
            self.on_lookup(entry is not None)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        expires = self.clock() + self.ttl
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_KEYABLE = (str, int, float, bytes, type(None))


def request_key(names: Sequence[str], raw: Mapping[str, Sequence[Any]], n: Optional[int],
                state: Hashable) -> Optional[tuple]:
    """A hashable key of a request's raw columns (`names`: the features, in order), or None when
    it cannot be keyed safely."""
    if len(raw.keys() - set(names)):
        return None  # an unknown input: validation refuses it
    key: list[Any] = [n, state]
    for name in names:
        values = raw.get(name)
        if values is None:
            key.append(None)
            continue
        if not isinstance(values, (list, tuple)):
            return None
        for v in values:
            if v.__class__ not in _KEYABLE:  # exact classes: a bool is not an int here
                return None
        key.append(tuple(values))
    return tuple(key)
