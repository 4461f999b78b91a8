"""Run the kserve SDK's REST client against a server: `python tests/kserve_client.py URL MODEL REQUEST.json`.

A separate process because kserve's generated gRPC protos and tritonclient's register the
same `inference.*` protobuf symbols and cannot be imported into one interpreter.
Prints {"ready": bool, "model_name": ..., "model_version": ..., "outputs": {name: data}}.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

NP_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BYTES": np.object_}


async def main(url: str, model: str, request_file: str) -> dict:
    request = json.load(open(request_file))
    inputs = []
    for spec in request["inputs"]:
        inp = InferInput(spec["name"], spec["shape"], spec["datatype"])
        inp.set_data_from_numpy(np.array(spec["data"], dtype=NP_TYPES[spec["datatype"]]), binary_data=False)
        inputs.append(inp)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    try:
        ready = await client.is_model_ready(url, model)
        response = await client.infer(url, InferRequest(model, inputs, parameters=request.get("parameters")),
                                      model_name=model)
    finally:
        await client.close()
    return {"ready": ready, "model_name": response.model_name, "model_version": response.model_version,
            "outputs": {o.name: list(o.data) for o in response.outputs}}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
