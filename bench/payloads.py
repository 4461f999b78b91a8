"""Request bodies: the same rows of the `auto` vertical for every server.

Rows come from the synthetic generator (training.synthetic, fixed seed), restricted to complete
rows: the stock LightGBM runtime (server B) takes the pre-encoded float matrix as JSON, and JSON
has no NaN, so a row with a missing value could not be sent to it at all.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.encoding import LeadEncoder, normalize
from predictors.spec import NUMERIC, load_config

VERTICAL = "auto"
B_INPUT = "input-0"  # the stock runtime's one input: the encoded matrix


@dataclass
class Rows:
    """`count` complete raw rows as columns, in the vertical's feature order."""

    features: tuple
    columns: dict[str, list]
    count: int

    def slice(self, start: int, size: int) -> dict[str, list]:
        idx = [(start + k) % self.count for k in range(size)]
        return {name: [col[i] for i in idx] for name, col in self.columns.items()}


def load_rows(count: int = 2048, seed: int = 7) -> Rows:
    from training.synthetic import generate

    vertical = load_config().vertical(VERTICAL)
    df = generate(vertical, seed=seed, rows=count * 3)
    names = list(vertical.feature_names)
    df = df[names].dropna().head(count)
    if len(df) < count:
        raise RuntimeError(f"only {len(df)} complete rows generated, wanted {count}")
    columns = {}
    for f in vertical.features:
        values = df[f.name].tolist()
        if f.kind == NUMERIC:  # integral values go as INT64, like a real client's ages and mileages
            values = [int(v) if float(v).is_integer() else float(v) for v in values]
        columns[f.name] = values
    return Rows(features=vertical.features, columns=columns, count=count)


def _numeric_datatype(values: list) -> str:
    return "INT64" if all(isinstance(v, int) for v in values) else "FP64"


def v2_request(raw: dict[str, list], features) -> dict[str, Any]:
    """The business request (servers A, C, D): one tensor per raw feature."""
    n = len(next(iter(raw.values())))
    inputs = []
    for f in features:
        values = raw[f.name]
        datatype = _numeric_datatype(values) if f.kind == NUMERIC else "BYTES"
        inputs.append({"name": f.name, "shape": [n], "datatype": datatype, "data": values})
    return {"inputs": inputs}


def encoded_matrix(raw: dict[str, list], features) -> np.ndarray:
    """What a user of the stock runtime computes client-side: predictors' LeadEncoder matrix."""
    vertical = load_config().vertical(VERTICAL)
    encoder = LeadEncoder(features, load_config().text_hash_buckets)
    assert encoder.features == vertical.features
    return encoder.encode(normalize(features, raw))


def stock_request(raw: dict[str, list], features) -> dict[str, Any]:
    """The stock LightGBM runtime's request (server B): one FP64 tensor [N, columns]."""
    x = encoded_matrix(raw, features)
    if not np.isfinite(x).all():
        raise ValueError("a complete row encoded to NaN: JSON cannot carry it")
    return {"inputs": [{"name": B_INPUT, "shape": list(x.shape), "datatype": "FP64",
                        "data": [float(v) for v in x.ravel()]}]}


def bodies(rows: Rows, size: int, kind: str, count: int = 64) -> list[bytes]:
    """`count` different request bodies of `size` rows each (the load generator cycles them)."""
    out = []
    for k in range(count):
        raw = rows.slice(k * size, size)
        doc = stock_request(raw, rows.features) if kind == "stock" else v2_request(raw, rows.features)
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def repeat_bodies(rows: Rows, count: int, repeat_rate: float, window: int = 200, seed: int = 11) -> list[bytes]:
    """Single-row bodies where a share `repeat_rate` repeats one of the last `window` distinct leads
    (a visitor reloading or re-quoting): the traffic a prediction cache sees. Fresh leads differ in
    annual_mileage / vehicle_age (from a counter that `seed` offsets), so no two fresh leads are equal,
    within a run or across runs with different seeds."""
    rng = random.Random(seed)
    fresh: list[bytes] = []
    out: list[bytes] = []
    for k in range(count):
        if fresh and rng.random() < repeat_rate:
            out.append(rng.choice(fresh[-window:]))
            continue
        unique = seed * count + k
        raw = rows.slice(k, 1)
        raw["annual_mileage"], raw["vehicle_age"] = [1000 + unique % 150_000], [unique // 150_000 % 61]
        body = json.dumps(v2_request(raw, rows.features), separators=(",", ":")).encode()
        fresh.append(body)
        out.append(body)
    return out


def repeat_share(bodies: list[bytes], sent: int) -> float:
    """Share of the first `sent` bodies that repeat an earlier one (the ideal cache hit ratio)."""
    seen: set[bytes] = set()
    repeats = 0
    for body in bodies[:sent]:
        repeats += body in seen
        seen.add(body)
    return repeats / max(min(sent, len(bodies)), 1)


def grpc_inputs(raw: dict[str, list], features, kind: str, module):
    """tritonclient InferInput list for one request (`module` is tritonclient.grpc)."""
    if kind == "stock":
        x = encoded_matrix(raw, features)
        inp = module.InferInput(B_INPUT, list(x.shape), "FP64")
        inp.set_data_from_numpy(x.astype(np.float64))
        return [inp]
    out = []
    for f in features:
        values = raw[f.name]
        if f.kind == NUMERIC:
            dt = _numeric_datatype(values)
            arr = np.asarray(values, dtype=np.int64 if dt == "INT64" else np.float64)
        else:
            dt, arr = "BYTES", np.asarray([str(v).encode() for v in values], dtype=object)
        inp = module.InferInput(f.name, [len(values)], dt)
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out



def grpc_message(raw: dict[str, list], features, kind: str, model: str) -> bytes:
    """One serialized ModelInferRequest, raw tensor contents as tritonclient sends them (numbers
    little-endian, BYTES elements with a 4-byte length prefix)."""
    from tritonclient.grpc import service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model)
    if kind == "stock":
        x = encoded_matrix(raw, features).astype("<f8")
        req.inputs.add(name=B_INPUT, datatype="FP64", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        return req.SerializeToString()
    for f in features:
        values = raw[f.name]
        if f.kind == NUMERIC:
            dt = _numeric_datatype(values)
            data = np.asarray(values, dtype="<i8" if dt == "INT64" else "<f8").tobytes()
        else:
            dt = "BYTES"
            data = b"".join(len(e).to_bytes(4, "little") + e for e in (str(v).encode() for v in values))
        req.inputs.add(name=f.name, datatype=dt, shape=[len(values)])
        req.raw_input_contents.append(data)
    return req.SerializeToString()
