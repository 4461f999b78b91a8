"""Per-credential rate limits: a token bucket per API key / JWT subject, off by default.

Each credential (runtime/auth.py's ``Principal.identity``; with authentication off, one bucket
for every caller) holds a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token after it is authenticated and before anything of it is decoded, or is refused
with 429 ``Retry-After`` (gRPC RESOURCE_EXHAUSTED) and counts
``ml_rate_limited_total{model_name, reason}``, reason being which limit applied: ``key`` (the
key's own ``rate=`` in the keys file), ``role`` (``rate_limit_roles``) or ``default``
(``rate_limit``). Buckets live in the process that scores (with parallel workers each worker
has its own: the limit is per worker). At most MAX_BUCKETS are kept; the least recently used go
first, which can only hand a long-idle credential a fresh burst.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

from mlserver.errors import MLServerError


HTTP_TOO_MANY_REQUESTS = 429
MAX_BUCKETS = 100_000
REASONS = ("key", "role", "default")


class RateLimited(MLServerError):
    """429 (gRPC RESOURCE_EXHAUSTED); ``retry_after`` whole seconds go into Retry-After."""

    def __init__(self, retry_after: int, reason: str):
        super().__init__(f"rate limit exceeded ({reason} limit of this credential); retry after {retry_after} s",
                         status_code=HTTP_TOO_MANY_REQUESTS)
        self.retry_after, self.reason = retry_after, reason
        self.headers = (("retry-after", str(retry_after)),)

    def __reduce__(self):  # parallel workers send errors to the server process pickled
        return (type(self), (self.retry_after, self.reason))


class Limiter:
    """Token buckets by identity: identity -> [tokens, last refill (monotonic)]."""

    def __init__(self, max_buckets: int = MAX_BUCKETS):
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, list] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, identity: str, rate: float, burst: float, now: Optional[float] = None) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                bucket = self._buckets[identity] = [burst, now]
                if len(self._buckets) > self.max_buckets:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(identity)
                bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / rate if rate > 0 else math.inf

    def __len__(self) -> int:
        return len(self._buckets)


#: The buckets of this process, shared by its models: a credential's budget covers all of them.
LIMITER = Limiter()


class Policy:
    """A model's limits from its RuntimeSettings; ``enabled`` False when none is configured (then
    keys' own ``rate=`` still apply)."""

    def __init__(self, options: Any):
        self.default, self.roles = options.rate_limits()

    def limit_of(self, principal: Any) -> Optional[tuple[float, float, str]]:
        """(rate, burst, reason) for a principal (None: authentication off), or None: unlimited."""
        if principal is not None:
            own = principal.rate
            if own is not None:
                return (own[0], own[1], "key") if own[0] > 0 else None
            if self.roles:
                limits = [self.roles[r] for r in principal.roles if r in self.roles]
                if limits:
                    rate, burst = max(limits)
                    if min(limits)[0] <= 0:  # a role at rate 0 is unlimited
                        return None
                    return rate, burst, "role"
        if self.default is not None:
            return self.default[0], self.default[1], "default"
        return None

    def admit(self, principal: Any, model_name: str, limiter: Limiter = LIMITER) -> None:
        """Take a token for this request or raise RateLimited (counted)."""
        limit = self.limit_of(principal)
        if limit is None:
            return
        rate, burst, reason = limit
        identity = principal.identity if principal is not None else "anonymous"
        wait = limiter.take(identity, rate, burst)
        if wait > 0.0:
            count(model_name, reason)
            raise RateLimited(max(1, math.ceil(wait)) if math.isfinite(wait) else 3600, reason)


def count(model_name: str, reason: str) -> None:
    """ml_rate_limited_total{model_name, reason} (runtime/metrics.py's families)."""
    from . import metrics

    metrics.families().rate_limited.labels(model_name=model_name, reason=reason).inc()


# ---- 429 over both REST paths and gRPC ---------------------------------------------------------

async def rest_error(request: Any, exc: MLServerError) -> Any:
    """mlserver.rest.errors.handle_mlserver_error, plus the error's own headers (Retry-After)."""
    from mlserver.rest.responses import Response

    headers = dict(getattr(exc, "headers", None) or ())
    if exc.status_code == HTTP_TOO_MANY_REQUESTS and not headers:
        # from a parallel worker: MLServer re-raises a WorkerError with the message and status only
        found = _RETRY.search(str(exc))
        headers = {"retry-after": found.group(1)} if found else {}
    return Response(status_code=exc.status_code, content={"error": str(exc)}, headers=headers)


_RETRY = re.compile(r"retry after (\d+) s")


async def _handler_trampoline(request, exc):  # runs with MLServer's module globals: builtins only
    return await __import__("runtime.ratelimit", fromlist=["ratelimit"]).rest_error(request, exc)


_installed = False


def install() -> None:
    """429 -> gRPC RESOURCE_EXHAUSTED; MLServer's REST error handler adds the error's headers. The
    handler function was registered by reference when the app was built, so its body is replaced."""
    global _installed
    if _installed:
        return
    _installed = True
    import grpc
    from mlserver.grpc import utils
    from mlserver.rest import errors

    utils.STATUS_CODE_MAPPING.setdefault(HTTP_TOO_MANY_REQUESTS, grpc.StatusCode.RESOURCE_EXHAUSTED)
    handler = errors.handle_mlserver_error
    if handler.__code__.co_freevars == () and handler.__code__.co_argcount == 2:
        handler.__code__ = _handler_trampoline.__code__
