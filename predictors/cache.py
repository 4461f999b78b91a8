"""Optional prediction cache: the outputs of a request reused for an identical request within a TTL.

Off unless a TTL is set (runtime setting ``prediction_cache_ttl``). The key is the request's
raw columns exactly as decoded (every input name and value, in feature order) plus the
predictor's time-dependent state (for lead scoring the market factors in force at the quote
time, e.g. peak hours), so a hit returns exactly what scoring the request again would return.
A request whose values cannot be keyed safely (anything but str, bytes, int, float, None,
e.g. a bool, which is refused as a number) is simply not cached. Errors are never cached: every
request is validated (also on a hit: the validated batch feeds drift accounting) and only a
valid one is stored. Keys and values are strings (the outputs as JSON, whose floats round-trip
exactly), which the garbage collector does not track: a full cache does not lengthen GC pauses.

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
    """Key -> value with a TTL and an LRU bound. Keys and values should be str or bytes: objects
    the garbage collector does not track, so that a full cache adds nothing to GC work (a cache of
    tuples and arrays did: every entry survived into the older generations and brought full
    collections of ~100 ms into the p99)."""

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
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._expires: dict[Hashable, float] = {}  # a separate dict: no (expiry, value) tuple per entry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, key: Hashable) -> Any:
        now = self.clock()
        with self._lock:
            value = self._values.get(key)
            if value is not None and self._expires[key] <= now:
                del self._values[key], self._expires[key]
                value = None
            if value is None:
                self.misses += 1
            else:
                self._values.move_to_end(key)
                self.hits += 1
        if self.on_lookup is not None:
            self.on_lookup(value is not None)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        expires = self.clock() + self.ttl
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            self._expires[key] = expires
            while len(self._values) > self.max_entries:
                old, _ = self._values.popitem(last=False)
                del self._expires[old]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._expires.clear()


_KEYABLE = (str, int, float, bytes, type(None), bool)  # bool: repr "True", never equal to 1's


def request_key(names: Sequence[str], raw: Mapping[str, Sequence[Any]], n: Optional[int],
                state: Hashable) -> Optional[str]:
    """A key of a request's raw columns (`names`: the features, in order), or None when it cannot be
    keyed safely. A str (the repr of the values, which tells 1 from 1.0 from True and str from
    bytes): not tracked by the garbage collector."""
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
            if v.__class__ not in _KEYABLE:  # exact classes, whose repr is their value
                return None
        key.append(tuple(values))
    return repr(key)
