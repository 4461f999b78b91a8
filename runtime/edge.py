"""The serving edge of the REST server: limits every request meets before MLServer sees it.

MLServer 1.7.1 serves REST through uvicorn with no limit on a request's head or body: it inflates
a gzip body whole (a 1 MB bomb became 3 GB resident), and uvicorn's httptools protocol builds long
URLs and header values by repeated concatenation. This module bounds both, for every route and
every model, whatever `fast_path` says (settings: EdgeSettings in runtime/settings.py):

* the request head, counted in the bytes as they arrive, before the parser does any per-header
  work: request target over `max_url_bytes` -> 414, over `max_header_count` header lines or
  `max_header_bytes` -> 431, a head not complete within `header_timeout_seconds` -> 408 (a
  connection that sent nothing is closed; the timer runs from connecting and from the first bytes of
  a head that does not arrive in one piece); each answer closes the connection;
* the body of every POST/PUT/PATCH: over `max_request_bytes` as received, or after decoding
  `Content-Encoding: gzip` (decoded as it arrives and never past the limit) -> 413 naming the
  setting. A decoded body reaches MLServer without its Content-Encoding, so nothing inflates it
  again; other encodings -> 415.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Optional

import orjson

from .settings import EdgeSettings

logger = logging.getLogger("mlserver.insurance.edge")

#: A body over the limit is read and dropped up to this many times the limit before the 413, so that
#: a client still sending it reads the answer instead of a reset connection; beyond, the connection closes.
DRAIN_FACTOR = 16
#: After a 414/431 the rest of the head is read and dropped for up to this long / this many bytes, so
#: that the client reads the answer; then the connection closes.
HEAD_DRAIN_SECONDS = 1.0
HEAD_DRAIN_BYTES = 4 * 1024 * 1024
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type",
            431: b"Request Header Fields Too Large"}


def _raw_response(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))) + body


def refused(reason: str) -> None:
    """ml_edge_refusals_total{reason} (reasons: a fixed set, never from the request)."""
    try:
        from . import metrics

        metrics.families().edge_refusals.labels(reason=reason).inc()
    except Exception:  # pragma: no cover - metrics must never turn a refusal into a 500
        logger.debug("ml_edge_refusals_total not counted", exc_info=True)


# ---- the request head (uvicorn protocol) --------------------------------------------------------

class HeadGuard:
    """Counts one connection's request head in the raw bytes, before uvicorn's parser sees them."""

    __slots__ = ("limits", "in_head", "head_bytes", "url_bytes", "url_done", "lines", "tail", "timer", "closed")

    def __init__(self, limits: EdgeSettings):
        self.limits = limits
        self.closed = False
        self.timer: Optional[asyncio.TimerHandle] = None
        self.reset()

    def reset(self) -> None:
        self.in_head, self.head_bytes, self.url_bytes, self.url_done, self.lines, self.tail = True, 0, 0, False, 0, b""

    def scan(self, data: bytes) -> Optional[tuple[int, str, str]]:
        """(status, reason, message) when this chunk takes the head over a limit, else None."""
        if not self.in_head:
            return None
        end = (self.tail + data if self.tail else data).find(b"\r\n\r\n")
        stop = len(data) if end < 0 else max(0, end - len(self.tail))
        self.head_bytes += stop
        self.lines += data.count(b"\n", 0, stop)
        limits = self.limits
        if not self.url_done:
            nl = data.find(b"\n", 0, stop)
            self.url_bytes += stop if nl < 0 else nl
            self.url_done = nl >= 0
            if self.url_bytes > limits.max_url_bytes + 32:  # method, spaces, HTTP/1.1
                return 414, "url_too_long", f"the request target is over the limit of {limits.max_url_bytes} bytes (max_url_bytes)"
        if self.lines > limits.max_header_count:
            return 431, "header_count", f"the request has over {limits.max_header_count} header lines (max_header_count)"
        if self.head_bytes - self.url_bytes > limits.max_header_bytes:
            return 431, "header_bytes", f"the request headers are over the limit of {limits.max_header_bytes} bytes (max_header_bytes)"
        if end >= 0:
            self.in_head = False
            self.cancel_timer()
        else:
            self.tail = (self.tail + data[-3:])[-3:]
        return None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _guard(protocol: Any) -> HeadGuard:
    guard = protocol.__dict__.get("_insurance_head")
    if guard is None:
        guard = protocol._insurance_head = HeadGuard(_settings)
    return guard


def _arm_timer(protocol: Any, guard: HeadGuard) -> None:
    guard.cancel_timer()
    guard.timer = protocol.loop.call_later(_settings.header_timeout_seconds, _head_timeout, protocol, guard)


def _head_timeout(protocol: Any, guard: HeadGuard) -> None:
    guard.timer = None
    if not guard.in_head or guard.closed or protocol.transport is None or protocol.transport.is_closing():
        return
    guard.closed = True
    if guard.head_bytes or guard.tail:
        refused("header_timeout")
        protocol.transport.write(_raw_response(408, f"the request headers did not arrive within "
                                                    f"{_settings.header_timeout_seconds:g} s (header_timeout_seconds)"))
    protocol.transport.close()


def _patch_protocol(cls: Any) -> None:
    """Wrap a uvicorn HTTP protocol class: the edge ASGI app per connection, the head counted before
    parsing, the header timer from connect and while a head arrives in pieces."""
    if getattr(cls, "_insurance_edge", False):
        return
    init, made, received, complete = cls.__init__, cls.connection_made, cls.data_received, cls.on_response_complete

    def __init__(self, config, *args, **kwargs):
        init(self, config, *args, **kwargs)
        app = getattr(config, "_insurance_edge_app", None)
        if app is None or getattr(config, "_insurance_edge_source", None) is not config.loaded_app:
            config._insurance_edge_source = config.loaded_app
            app = config._insurance_edge_app = BodyLimit(config.loaded_app, _settings.max_request_bytes)
            _attach(app)
        self.app = app

    def connection_made(self, transport):
        made(self, transport)
        _arm_timer(self, _guard(self))

    def data_received(self, data):
        guard = _guard(self)
        if guard.closed:  # refused: what still arrives is dropped unread, up to HEAD_DRAIN_BYTES
            guard.head_bytes += len(data)
            if guard.head_bytes > HEAD_DRAIN_BYTES and not self.transport.is_closing():
                self.transport.close()
            return
        refusal = guard.scan(data)
        if refusal is None:
            if guard.in_head and guard.timer is None:  # a head arriving in pieces: it gets header_timeout_seconds
                _arm_timer(self, guard)
        else:
            status, reason, message = refusal
            guard.closed = True
            guard.cancel_timer()
            refused(reason)
            self.transport.write(_raw_response(status, message))
            # Closing now would reset the connection under a client still sending its head (it would never
            # read the answer): drop what comes for a moment, then close.
            guard.timer = self.loop.call_later(HEAD_DRAIN_SECONDS, self.transport.close)
            return
        received(self, data)

    def on_response_complete(self):  # the next bytes start a head (an idle connection: uvicorn's keep-alive timeout)
        complete(self)
        _guard(self).reset()

    cls.__init__, cls.connection_made, cls.data_received = __init__, connection_made, data_received
    cls.on_response_complete = on_response_complete
    cls._insurance_edge = True


# ---- the body (ASGI) ----------------------------------------------------------------------------

class TooLarge(Exception):
    def __init__(self, message: str, drained: bool):
        super().__init__(message)
        self.drained = drained


class BodyLimit:
    """ASGI wrapper of the whole REST app: POST/PUT/PATCH bodies bounded as received and as decoded."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        encoding, length, chunked = None, None, True
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                token = value.strip().lower()
                if token not in (b"", b"identity"):
                    if encoding is not None or token not in (b"gzip", b"x-gzip"):
                        refused("bad_encoding")
                        return await _answer(send, 415, "Content-Encoding must be gzip or identity (one of them); got "
                                             f"{value[:40].decode('latin-1')!r}", close=False)
                    encoding = token
            elif name == b"content-length":
                length, chunked = value, False
        limit = self.limit
        if encoding is None and not chunked:  # framed by Content-Length: no copy on the hot path
            if length.isdigit() and int(length) <= limit:
                return await self.app(scope, receive, send)
        try:
            body = await read_body(receive, limit, None if length is None else length.decode("latin-1"),
                                   gzip=encoding is not None)
        except TooLarge as e:
            refused("body_too_large")
            return await _answer(send, 413, str(e), close=not e.drained)
        except BadBody as e:
            refused("bad_encoding")
            return await _answer(send, 400, str(e), close=False)
        except ConnectionAbortedError:
            return
        if encoding is not None:  # MLServer sees the decoded body and inflates nothing itself
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        await self.app(scope, replay(body, receive), send)


def too_large(limit: int, decoded: bool) -> str:
    what = "the decoded request body" if decoded else "the request body"
    return f"{what} is over the limit of {limit} bytes (max_request_bytes); send fewer rows per request"


async def read_body(receive: Any, limit: int, declared: Optional[str] = None, gzip: bool = False) -> bytes:
    """The whole body (gzip-decoded with `gzip`), never holding more than `limit` bytes. TooLarge past
    `limit` as received or as decoded, after reading and dropping the rest (or, past DRAIN_FACTOR x limit,
    with `drained` False: the connection must close; a declared Content-Length that large is not read)."""
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise TooLarge(too_large(limit, False), drained=False)
    inflater = Inflater(limit) if gzip else None
    chunks: list[bytes] = []
    size = received = 0
    over: Optional[str] = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionAbortedError("client disconnected")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        received += len(chunk)
        if over is None and received > limit:
            over = too_large(limit, False)
        if over is None and chunk:
            if inflater is None:
                chunks.append(chunk)
                size += len(chunk)
            else:
                size = inflater.feed(chunk, chunks, size)
                if size > limit:
                    over = too_large(limit, True)
        if over is not None:
            chunks.clear()
            if received > DRAIN_FACTOR * limit:
                raise TooLarge(over, drained=not more)
        if not more:
            break
    if over is not None:
        raise TooLarge(over, drained=True)
    if inflater is not None and not inflater.complete(received):
        raise BadBody("the gzip body ends before its end marker (Content-Encoding: gzip)")
    return b"".join(chunks)


class BadBody(Exception):
    """400: a body that cannot be decoded as its Content-Encoding says."""


class Inflater:
    """gzip decoding as the body arrives, never past limit + 1 bytes in total; members may follow each other."""

    def __init__(self, limit: int):
        self.limit = limit
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, out: list, size: int) -> int:
        try:
            while data:
                piece = self.z.decompress(data, self.limit + 1 - size)
                out.append(piece)
                size += len(piece)
                if size > self.limit:
                    return size
                if self.z.unconsumed_tail:
                    data = self.z.unconsumed_tail
                elif self.z.eof and self.z.unused_data:
                    data = self.z.unused_data
                    self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    break
        except zlib.error as e:
            raise BadBody(f"the body is not valid gzip (Content-Encoding: gzip): {e}") from e
        return size

    def complete(self, received: int) -> bool:
        return self.z.eof or received == 0


def replay(body: bytes, receive: Any) -> Any:
    """A receive() that gives `body` first (already read), then whatever the connection sends."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(send: Any, status: int, message: str, close: bool) -> None:
    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- installation -------------------------------------------------------------------------------

_app_hooks: list = []


def on_app(hook: Any) -> None:
    """Call `hook(fastapi_app)` once for MLServer's REST app, before its first request is handled."""
    _app_hooks.append(hook)


_app_wrappers: list = []


def wrap_app(wrapper: Any) -> None:
    """Put `wrapper(fastapi_app)` in place of MLServer's REST app: inside the edge and uvicorn's
    wrappers, in front of the app's own middleware."""
    _app_wrappers.append(wrapper)


def _attach(edge: Any) -> None:
    """Find MLServer's REST app behind the edge and uvicorn's wrappers (each holds the next one as
    .app), run the on_app hooks on it, then put the wrap_app wrappers in its place."""
    from fastapi import FastAPI

    parent, app = edge, getattr(edge, "app", None)
    for _ in range(8):
        if isinstance(app, FastAPI) or app is None:
            break
        parent, app = app, getattr(app, "app", None)
    if not isinstance(app, FastAPI):
        logger.warning("edge: MLServer's REST app not found behind uvicorn's wrappers; its error format stays")
        return
    for hook in _app_hooks:
        try:
            hook(app)
        except Exception as e:
            logger.warning("edge: %s not installed (%s: %s)", getattr(hook, "__name__", hook), type(e).__name__, e)
    for wrapper in _app_wrappers:
        try:
            app = wrapper(app)
        except Exception as e:
            logger.warning("edge: %s not installed (%s: %s)", getattr(wrapper, "__name__", wrapper),
                           type(e).__name__, e)
    parent.app = app


_settings = EdgeSettings.model_construct()  # the defaults until install() has read the environment


def install(settings: Optional[EdgeSettings] = None) -> None:
    """Wrap uvicorn's HTTP protocols (httptools and h11: whichever MLServer's uvicorn picks)."""
    global _settings
    _settings = settings if settings is not None else EdgeSettings()
    from uvicorn.protocols.http.h11_impl import H11Protocol

    _patch_protocol(H11Protocol)
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed: uvicorn uses h11
        return
    _patch_protocol(HttpToolsProtocol)
