"""Server C: a KServe custom predictor (`kserve.Model` + `kserve.ModelServer`, V2 protocol over
HTTP and gRPC) doing the same business path by calling predictors/: what a team would write on
KServe's own Python server instead of this project's MLServer runtime.

`python -m bench.kserve_server --http-port P --grpc-port Q --bundle models/auto/1.0.0`.
Per-request latency and access logging are off, like `debug: false` in MLServer.
"""

from __future__ import annotations

import argparse
import logging
import uuid

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput

from predictors import InputError, load_predictor


class InsurancePredictor(Model):
    def __init__(self, name: str, bundle: str):
        super().__init__(name)
        self.bundle = bundle
        self.ready = False

    def load(self) -> bool:
        self.predictor = load_predictor(self.bundle)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        raw = {}
        for inp in payload.inputs:
            data = inp.data
            if getattr(inp, "_raw_data", None) is not None or not isinstance(data, list):
                data = inp.as_numpy().ravel()  # gRPC raw_input_contents (what tritonclient sends)
                if inp.datatype == "BYTES":
                    data = data.tolist()
            raw[inp.name] = data
        try:
            prediction = self.predictor.predict(raw)
        except InputError as e:
            raise InvalidInput(str(e)) from e
        n = prediction.batch.n
        outputs = []
        for name, datatype in self.predictor.outputs.items():
            value = prediction.outputs[name]
            data = value.tolist() if isinstance(value, np.ndarray) else value
            outputs.append(InferOutput(name=name, shape=[n], datatype=datatype, data=data))
        # KServe's response needs an id; MLServer generates one as well when the request has none
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs)


def loopback_only() -> None:
    """KServe binds 0.0.0.0 / [::] with no option to change it; the benchmark stays on loopback."""
    import uvicorn
    from grpc.aio import _server

    config_init = uvicorn.Config.__init__

    def init(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        config_init(self, *args, **kwargs)

    add_port = _server.Server.add_insecure_port
    uvicorn.Config.__init__ = init
    _server.Server.add_insecure_port = lambda self, address: add_port(self, address.replace("[::]", "127.0.0.1"))


def main() -> None:
    loopback_only()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--name", default="auto")
    args = p.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    model = InsurancePredictor(args.name, args.bundle)
    model.load()
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1, enable_grpc=True,
                         enable_latency_logging=False)
    # no line per request (KServe's logging setup, done by ModelServer(), logs every access at INFO)
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
