"""V2 over gRPC (``inference.GRPCInferenceService``) with grpcio and MLServer's generated stubs.

Imported only when a client is made with ``protocol="grpc"``. FP64 tensors cannot carry a null,
so rows missing different numeric fields are sent as separate requests (see
``_core.groups_without_null_numbers``) and the answers are put back in row order.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import grpc

from ._core import InsuranceError, InvalidRequest, ModelNotFound, NOT_READY, ServerError, Timeout, Unavailable, _Retryable


def _stubs():
    """The generated V2 (KServe ``inference`` package) messages and stub.

    MLServer's (``mlserver.grpc``) and tritonclient's (``tritonclient.grpc``) generated modules
    describe the same protocol but cannot both be loaded into protobuf's default pool in one
    process ("duplicate symbol 'inference.ServerLiveRequest'"): use whichever the process loaded
    first, so the client works beside either library."""
    if "tritonclient.grpc.service_pb2" in sys.modules:
        from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

        return pb, pb_grpc
    try:
        from mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as pb_grpc
    except TypeError:  # the same descriptors are registered already under tritonclient's module names
        from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc
    return pb, pb_grpc


def to_proto(model: str, version: str | None, body: dict[str, Any]):
    pb, _ = _stubs()
    req = pb.ModelInferRequest(model_name=model, model_version=version or "", id=body.get("id", ""))
    for inp in body["inputs"]:
        t = req.inputs.add(name=inp["name"], datatype=inp["datatype"], shape=inp["shape"])
        if inp["datatype"] == "BYTES":
            t.contents.bytes_contents.extend(v.encode("utf-8") for v in inp["data"])
        else:
            t.contents.fp64_contents.extend(float(v) for v in inp["data"])
    for k, v in (body.get("parameters") or {}).items():
        req.parameters[k].string_param = str(v)
    return req


def from_proto(resp) -> dict[str, Any]:
    outputs = []
    for o in resp.outputs:
        if o.datatype == "BYTES":
            data = [b.decode("utf-8") for b in o.contents.bytes_contents]
        elif o.datatype in ("FP64", "FP32"):
            data = list(o.contents.fp64_contents if o.datatype == "FP64" else o.contents.fp32_contents)
        else:
            data = list(o.contents.int64_contents or o.contents.int_contents)
        outputs.append({"name": o.name, "datatype": o.datatype, "data": data})
    return {"model_name": resp.model_name, "model_version": resp.model_version or None, "outputs": outputs}


def classify(model: str, e: grpc.RpcError, timeout: float) -> Exception:
    code, details = e.code(), (e.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return _Retryable(Unavailable(f"{model}: cannot reach the server (gRPC UNAVAILABLE): {details}"))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"{model}: no answer within {timeout:g} s (gRPC DEADLINE_EXCEEDED)")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        if NOT_READY.search(details):
            return _Retryable(Unavailable(f"{model}: {details}"))
        return InvalidRequest(details, None, model)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(f"{model}: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return InsuranceError(f"{model}: not authorised ({code.name}): {details}")
    return ServerError(f"{model}: gRPC {code.name}: {details}")


def _target(url: str) -> str:
    for prefix in ("grpc://", "http://"):
        if url.startswith(prefix):
            return url[len(prefix):]
    return url


class GRPCTransport:
    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None):
        _, pb_grpc = _stubs()
        self.timeout = timeout
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.channel = grpc.insecure_channel(_target(url))
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self.stub.ModelInfer(to_proto(model, version, body), timeout=self.timeout,
                                        metadata=self.metadata or None)
        except grpc.RpcError as e:
            raise classify(model, e, self.timeout) from None
        return from_proto(resp)

    def close(self) -> None:
        self.channel.close()


class AsyncGRPCTransport:
    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None):
        _, pb_grpc = _stubs()
        self.timeout = timeout
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.channel = grpc.aio.insecure_channel(_target(url))
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    async def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self.stub.ModelInfer(to_proto(model, version, body), timeout=self.timeout,
                                              metadata=self.metadata or None)
        except grpc.RpcError as e:
            raise classify(model, e, self.timeout) from None
        return from_proto(resp)

    async def close(self) -> None:
        await self.channel.close()
