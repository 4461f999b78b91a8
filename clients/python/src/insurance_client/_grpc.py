"""V2 over gRPC with grpcio and the client's own generated messages (insurance_client/v2).

Imported only when a client is made with ``protocol="grpc"`` (``pip install 'insurance-client[grpc]'``).
The messages live in the proto package ``insurance_client.v2``, so they load beside MLServer's,
tritonclient's or the KServe SDK's ``inference`` messages in one interpreter; the calls go to
the protocol's service path. FP64 tensors cannot carry a null, so rows missing different numeric
fields are sent as separate requests (``_core.groups_without_null_numbers``) and the answers are
put back in row order.
"""

from __future__ import annotations

from typing import Any, Mapping

import grpc

from ._core import InsuranceError, InvalidRequest, ModelNotFound, NOT_READY, ServerError, Timeout, Unavailable, _Retryable
from .v2 import grpc_predict_v2_pb2 as pb

#: The Open Inference Protocol's gRPC service (what servers register, whatever our proto package).
SERVICE = "/inference.GRPCInferenceService/"


class _Stub:
    """ModelMetadata and ModelInfer of the V2 service on a grpc or grpc.aio channel."""

    def __init__(self, channel: Any):
        self.ModelMetadata = channel.unary_unary(SERVICE + "ModelMetadata",
                                                 request_serializer=pb.ModelMetadataRequest.SerializeToString,
                                                 response_deserializer=pb.ModelMetadataResponse.FromString)
        self.ModelInfer = channel.unary_unary(SERVICE + "ModelInfer",
                                              request_serializer=pb.ModelInferRequest.SerializeToString,
                                              response_deserializer=pb.ModelInferResponse.FromString)


def metadata_request(model: str, version: str | None):
    return pb.ModelMetadataRequest(name=model, version=version or "")


def metadata_dict(resp) -> dict[str, Any]:
    tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]  # noqa: E731
    return {"name": resp.name, "versions": list(resp.versions), "platform": resp.platform,
            "inputs": tensors(resp.inputs), "outputs": tensors(resp.outputs)}


def to_proto(model: str, version: str | None, body: dict[str, Any]):
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
        self.timeout = timeout
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.channel = grpc.insecure_channel(_target(url))
        self.stub = _Stub(self.channel)

    def _unary(self, method: Any, model: str, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata or None)
        except grpc.RpcError as e:
            raise classify(model, e, self.timeout) from None

    def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        return metadata_dict(self._unary(self.stub.ModelMetadata, model, metadata_request(model, version)))

    def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return from_proto(self._unary(self.stub.ModelInfer, model, to_proto(model, version, body)))

    def close(self) -> None:
        self.channel.close()


class AsyncGRPCTransport:
    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None):
        self.timeout = timeout
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.channel = grpc.aio.insecure_channel(_target(url))
        self.stub = _Stub(self.channel)

    async def _unary(self, method: Any, model: str, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self.metadata or None)
        except grpc.RpcError as e:
            raise classify(model, e, self.timeout) from None

    async def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        return metadata_dict(await self._unary(self.stub.ModelMetadata, model, metadata_request(model, version)))

    async def infer(self, model: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return from_proto(await self._unary(self.stub.ModelInfer, model, to_proto(model, version, body)))

    async def close(self) -> None:
        await self.channel.close()
