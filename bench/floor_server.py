"""Server D, the floor: a minimal ASGI app (uvicorn + orjson, no framework) that parses the same
V2 JSON as the runtime, runs the same predictors/ business path and answers V2 JSON; and, with
--grpc-port, a bare grpcio asyncio server in the same process and event loop doing the same for
V2 gRPC `ModelInfer` (raw tensor contents, as tritonclient and h2load send them).

No validation of shapes and datatypes beyond what predictors/ does, no metrics, no logging, no
interceptor: what is left is the cost of HTTP + JSON (or gRPC + protobuf) + the business path in
Python, the floor any server of this business logic pays.
`python -m bench.floor_server --port P [--grpc-port G] --bundle models/auto/1.0.0`.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import orjson

from predictors import InputError, load_predictor

JSON = [(b"content-type", b"application/json")]


def make_app(bundle: str):
    predictor = load_predictor(bundle)
    manifest = predictor.manifest
    name, version = manifest["name"], manifest["version"]
    outputs = predictor.outputs
    ready_paths = {"/v2/health/ready", "/v2/health/live", f"/v2/models/{name}/ready"}
    infer_paths = {f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{version}/infer"}

    async def send_json(send, status: int, doc) -> None:
        body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if scope["method"] == "GET" and path in ready_paths:
            return await send_json(send, 200, {"ready": True})
        if scope["method"] != "POST" or path not in infer_paths:
            return await send_json(send, 404, {"error": "not found"})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            doc = orjson.loads(body)
            raw = {inp["name"]: inp["data"] for inp in doc["inputs"]}
            prediction = predictor.predict(raw)
        except (InputError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            return await send_json(send, 400, {"error": str(e)})
        n = prediction.batch.n
        await send_json(send, 200, {
            "model_name": name, "model_version": version, "id": doc.get("id"),
            "outputs": [{"name": k, "datatype": dt, "shape": [n], "data": prediction.outputs[k]}
                        for k, dt in outputs.items()],
        })

    return app


_NUMERIC = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}


def _raw_column(datatype: str, raw: bytes) -> list:
    if datatype == "BYTES":
        out, i = [], 0
        while i < len(raw):
            size = int.from_bytes(raw[i:i + 4], "little")
            out.append(raw[i + 4:i + 4 + size].decode("utf-8"))
            i += 4 + size
        return out
    return np.frombuffer(raw, dtype=_NUMERIC[datatype]).tolist()


def make_grpc_handler(bundle: str):
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb

    predictor = load_predictor(bundle)
    manifest = predictor.manifest
    name, version = manifest["name"], manifest["version"]
    outputs = predictor.outputs

    async def model_infer(request, context):
        try:
            raw = {inp.name: _raw_column(inp.datatype, request.raw_input_contents[i])
                   for i, inp in enumerate(request.inputs)}
            prediction = predictor.predict(raw)
        except (InputError, KeyError, IndexError, ValueError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        n = prediction.batch.n
        response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id)
        for k, dt in outputs.items():
            response.outputs.add(name=k, datatype=dt, shape=[n])
            values = prediction.outputs[k]
            response.raw_output_contents.append(
                b"".join(len(v).to_bytes(4, "little") + v for v in (x.encode() for x in values)) if dt == "BYTES"
                else np.asarray(values, dtype="<f8").tobytes())
        return response

    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            model_infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString)})


async def serve(args) -> None:
    import uvicorn

    config = uvicorn.Config(make_app(args.bundle), host="127.0.0.1", port=args.port, loop="uvloop",
                            http="httptools", access_log=False, log_level="warning", lifespan="on")
    tasks = [uvicorn.Server(config).serve()]
    if args.grpc_port:
        import grpc

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((make_grpc_handler(args.bundle),))
        server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
        await server.start()
        tasks.append(server.wait_for_termination())
    await asyncio.gather(*tasks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--bundle", required=True)
    args = p.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
