"""Server D, the floor: a minimal ASGI app (uvicorn + orjson, no framework) that parses the same
V2 JSON as the runtime, runs the same predictors/ business path and answers V2 JSON.

No validation of shapes and datatypes beyond what predictors/ does, no metrics, no logging:
what is left is the cost of HTTP + JSON + the business path in Python, the floor any server of
this business logic pays. `python -m bench.floor_server --port P --bundle models/auto/1.0.0`.
"""

from __future__ import annotations

import argparse

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bundle", required=True)
    args = p.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.bundle), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
