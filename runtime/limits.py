"""Size limits of a request, checked before its inputs are decoded.

The body is parsed (REST JSON, gRPC message) before these checks, so they bound the work a
request causes, not the parse: the request body itself is bounded by the gRPC message limit
(MLSERVER_GRPC_MAX_MESSAGE_LENGTH, 4 MiB by default, decompressed size included) and, over REST on
every route, by `max_request_bytes` at the runtime's edge (runtime/edge.py; docs/security.md).
Rows per request are bounded by `max_batch_rows` in runtime/codec.py; this module bounds every
BYTES element.
"""

from __future__ import annotations

from typing import Any

from predictors.encoding import InputError


def _too_long(value: Any, limit: int) -> int | None:
    """The size in bytes of a str/bytes value longer than `limit`, else None."""
    if isinstance(value, (bytes, bytearray)):
        return len(value) if len(value) > limit else None
    if isinstance(value, str):
        if len(value) > limit:  # at least one byte per character
            return len(value.encode("utf-8", "surrogatepass"))
        if 4 * len(value) <= limit:  # at most four bytes per character
            return None
        size = len(value.encode("utf-8", "surrogatepass"))
        return size if size > limit else None
    return None


#: Longest request `id`. MLServer echoes the id in the `ce-id` / `ce-requestid` response headers
#: (HTTP) and trailing metadata (gRPC): a CR, LF or NUL in it made uvicorn drop the connection
#: without an answer, a character beyond Latin-1 gave a 500, and a 64 KiB one breaks clients.
MAX_ID_LENGTH = 256


def check_request_id(payload: Any) -> None:
    """400 when the request id is not 1-256 printable ASCII characters (see MAX_ID_LENGTH)."""
    rid = getattr(payload, "id", None)
    if rid is None or rid == "":
        return
    if len(rid) > MAX_ID_LENGTH or not (rid.isascii() and rid.isprintable()):
        raise InputError(None, f"the request id must be at most {MAX_ID_LENGTH} printable ASCII characters "
                               f"(it is echoed in response headers); got {len(rid)} characters")


def check(payload: Any, max_string_bytes: int) -> None:
    """Every check of this module."""
    check_request_id(payload)
    check_strings(payload, max_string_bytes)


def _all_short(data: list, limit: int) -> bool:
    """True when `data` is flat str/bytes with every element within `limit` bytes for sure: one pass
    in C (the longest element, at most four bytes per character); else the per-value check decides."""
    kinds = set(map(type, data))
    if not kinds or not kinds <= {str, bytes}:
        return False
    return 4 * max(map(len, data)) <= limit


def check_strings(payload: Any, max_bytes: int) -> None:
    """400 naming the input and row when a BYTES element exceeds `max_bytes`."""
    for inp in payload.inputs or ():
        if getattr(inp.datatype, "value", inp.datatype) != "BYTES":
            continue  # numeric inputs holding strings are refused by the codec and normalize
        data = getattr(inp.data, "root", inp.data)
        if not isinstance(data, list):
            data = [data]
        if _all_short(data, max_bytes):
            continue
        row = 0
        for v in data:
            for w in (v if isinstance(v, list) else (v,)):  # [N] or [N, 1]; deeper nesting is codec's error
                size = _too_long(w, max_bytes)
                if size is not None:
                    raise InputError(inp.name, f"row {row} is {size} bytes, over the limit of {max_bytes} bytes "
                                               "per value (max_string_bytes)")
                row += 1
