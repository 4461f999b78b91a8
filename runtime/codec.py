"""V2 (Open Inference Protocol) requests <-> the raw columns predictors/ works on.

Checks done here, before any array is built from a request: known input names, no
duplicates, datatype per feature kind, shape [N] or [N, 1] with N >= 1 and N equal to the
number of data elements and the same for every input, the batch-size limit. Everything
else (values, ranges, UTF-8) is checked by predictors.normalize.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
from mlserver.raw import unpack as mlserver_unpack
from mlserver.types import InferenceResponse, MetadataTensor

from predictors.encoding import InputError
from predictors.spec import NUMERIC, Feature

NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
TEXT_DATATYPES = ("BYTES",)
QUOTE_TIME = "quote_time"  # request parameter: ISO-8601 instant used for time-dependent pricing


def allowed_datatypes(feature: Feature) -> tuple[str, ...]:
    return NUMERIC_DATATYPES if feature.kind == NUMERIC else TEXT_DATATYPES


def _rows(name: str, shape: Sequence[int], max_rows: int) -> int:
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InputError(name, f"shape {list(shape)} is not [N] or [N, 1]")
    n = shape[0]
    if n < 1:
        raise InputError(name, f"shape {list(shape)}: empty batch, at least one row is required")
    if n > max_rows:
        raise InputError(name, f"shape {list(shape)}: {n} rows exceed the limit of {max_rows} per request")
    return n


def _flat(name: str, data: Any, n: int) -> list:
    if not isinstance(data, list):
        data = [data]
    if len(data) == n and list not in set(map(type, data)):  # one C loop: flat already ([N] or [N, 1] flat)
        return data
    flat: list = []
    for v in data:
        if isinstance(v, list):
            if any(isinstance(w, list) for w in v):
                raise InputError(name, "data is nested deeper than the shape [N, 1] allows")
            flat.extend(v)
        else:
            flat.append(v)
        if len(flat) > n:
            break
    if len(flat) != n:
        raise InputError(name, f"shape says {n} rows but data holds {'more' if len(flat) > n else len(flat)} "
                               "elements")
    return flat


def decode(inputs: Sequence[Any], features: Sequence[Feature], max_rows: int) -> tuple[dict[str, list], int]:
    """Request inputs (MLServer's RequestInput or runtime.fastpath.Tensor: name, datatype, shape,
    data) -> raw columns and the number of rows."""
    by_name = {f.name: f for f in features}
    if not inputs:
        raise InputError(None, f"the request has no inputs; send some of: {', '.join(by_name)}")
    raw: dict[str, list] = {}
    n: int | None = None
    first = None
    for inp in inputs:
        feature = by_name.get(inp.name)
        if feature is None:
            raise InputError(inp.name, f"unknown input; allowed inputs: {', '.join(by_name)}")
        if inp.name in raw:
            raise InputError(inp.name, "sent twice")
        allowed = allowed_datatypes(feature)
        datatype = getattr(inp.datatype, "value", inp.datatype)
        if datatype not in allowed:
            raise InputError(inp.name, f"datatype {datatype} is not allowed for a {feature.kind} "
                                       f"feature; allowed: {', '.join(allowed)}")
        rows = _rows(inp.name, inp.shape, max_rows)
        if n is None:
            n, first = rows, inp.name
        elif rows != n:
            raise InputError(inp.name, f"has {rows} rows but input '{first}' has {n}")
        raw[inp.name] = _flat(inp.name, getattr(inp.data, "root", inp.data), rows)
    return raw, n  # type: ignore[return-value]


def quote_time_of(parameters: Mapping[str, Any] | None) -> datetime:
    """The request parameter `quote_time` (now when absent) as an aware UTC datetime."""
    value = (parameters or {}).get(QUOTE_TIME)
    if value is None:
        return datetime.now(timezone.utc)
    try:
        when = datetime.fromisoformat(str(value))
        # in UTC here: an offset that moves the instant past year 1..9999 is a 400, not a 500 later
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError) as e:
        shown = repr(value) if len(str(value)) <= 60 else repr(str(value)[:60]) + "..."  # never echo 10 MB
        raise InputError(None, f"parameter '{QUOTE_TIME}' is {shown}, not an ISO-8601 date-time "
                               "within years 1-9999") from e


def output_names(datatypes: Mapping[str, str], wanted: Sequence[str] | None) -> list[str]:
    """The outputs to answer, in response order: all, or those the request asked for."""
    names = list(datatypes)
    if wanted:
        unknown = [w for w in wanted if w not in datatypes]
        if unknown:
            raise InputError(None, f"requested output '{unknown[0]}' does not exist; outputs: {', '.join(names)}")
        names = [w for w in names if w in wanted]
    return names


def encode(model_name: str, model_version: str | None, request_id: str | None, n: int,
           outputs: Mapping[str, Any], datatypes: Mapping[str, str], names: Sequence[str]) -> InferenceResponse:
    # One validation of plain data in pydantic's core: faster than building ResponseOutput objects
    # one by one (and than model_construct, which is Python); same model, same fields set.
    return InferenceResponse.model_validate({
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id,
        "outputs": [{"name": name, "shape": [n], "datatype": datatypes[name], "data": as_list(outputs[name])}
                    for name in names],
    })


#: MLServer's REST app compresses answers of at least this many bytes when the client accepts gzip
#: (Starlette's GZipMiddleware defaults, level 9); the runtime's path keeps the threshold, its level
#: is the `gzip_level` setting (docs/performance.md).
GZIP_MINIMUM_SIZE = 500
_VARY = ("vary", "Accept-Encoding")


def json_response(model: Any, request_id: str | None, n: int, outputs: Mapping[str, Any], names: Sequence[str],
                  extra: Mapping[str, str], request_headers: Mapping[str, str], gzip_level: int,
                  as_gzip_middleware: int | None = None) -> tuple[bytes, list]:
    """The V2 JSON answer MLServer writes for these outputs (same bytes), and its extra headers.
    float64 outputs go to orjson as arrays (same text as their float lists, no per-value Python).
    Bodies of GZIP_MINIMUM_SIZE bytes and more get `Vary: Accept-Encoding` as MLServer's GZip
    middleware adds it, and, when the client accepts gzip and `gzip_level` > 0, are compressed here
    at that level (the middleware passes an encoded body through; with 0 it compresses at 9).
    `as_gzip_middleware` (the middleware's level) when this answer bypasses that middleware: what it
    would do is done here, `Vary` on every body of that size, level 0 meaning the middleware's."""
    types = model.output_types
    answer = {"model_name": model.name, "model_version": model.version, "id": request_id, "parameters": {},
              "outputs": [{"name": o, "shape": [n], "datatype": types[o], "data": _serializable(outputs[o])}
                          for o in names]}
    if model.version is None:
        del answer["model_version"]
    body = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = list(extra.items())
    if len(body) < GZIP_MINIMUM_SIZE:
        return body, headers
    accepted = "gzip" in request_headers.get("accept-encoding", "")
    if as_gzip_middleware is not None:
        headers.append(_VARY)
        if accepted:
            body = gzip.compress(body, compresslevel=gzip_level or as_gzip_middleware, mtime=0)
            headers.append(("content-encoding", "gzip"))
    elif gzip_level > 0 and accepted:
        body = gzip.compress(body, compresslevel=gzip_level, mtime=0)
        headers += [_VARY, ("content-encoding", "gzip")]
    return body, headers


def unpack(tensor: Any, raw: bytes) -> list:
    """mlserver.raw.unpack (raw gRPC contents -> values), with BYTES split by a leaner loop; anything
    the loop does not read cleanly goes to MLServer's function, which raises its own error."""
    if tensor.datatype == "BYTES":
        values = _split_bytes(raw)
        if values is not None:
            return values
    return mlserver_unpack(tensor, raw)


def _split_bytes(raw: bytes) -> list | None:
    """4-byte little-endian length + bytes, repeated (what MLServer's _unpack_bytes reads with two
    struct calls per element); None when the data ends inside an element."""
    out: list = []
    append = out.append
    frombytes = int.from_bytes
    offset, length = 0, len(raw)
    while offset < length:
        start = offset + 4
        if start > length:
            return None
        offset = start + frombytes(raw[offset:start], "little")
        if offset > length:
            return None
        append(raw[start:offset])
    return out


def packed_bytes(values: Sequence[Any], prefixed: bool) -> Any:
    """BYTES output values as gRPC carries them: UTF-8 bytes (a list), or with `prefixed` the raw
    contents (4-byte length + bytes per element, joined); encoded once per distinct value."""
    distinct = {v: v.encode("utf-8") if isinstance(v, str) else v for v in set(values)}
    if prefixed:
        distinct = {v: len(b).to_bytes(4, "little") + b for v, b in distinct.items()}
        return b"".join(map(distinct.__getitem__, values))
    return list(map(distinct.__getitem__, values))


def _serializable(values: Any) -> Any:
    """What orjson writes without per-value Python: a C-contiguous array (a column of predict_proba
    is strided), or the list of str as is."""
    if isinstance(values, np.ndarray) and not values.flags.c_contiguous:
        return np.ascontiguousarray(values)
    return values


def as_list(values: Any) -> list:
    """A float64 array or a list of str -> a list of Python values (one C call for an array)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def metadata(features: Sequence[Feature], datatypes: Mapping[str, str]) -> tuple[list, list]:
    inputs = [MetadataTensor(name=f.name, datatype="FP64" if f.kind == NUMERIC else "BYTES", shape=[-1])
              for f in features]
    outputs = [MetadataTensor(name=name, datatype=dt, shape=[-1]) for name, dt in datatypes.items()]
    return inputs, outputs
