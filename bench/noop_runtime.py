"""Server M, the MLServer floor for this runtime's traffic: an MLServer runtime that takes A's
requests (nine feature tensors) and answers A's five outputs with constants, computing nothing.
The gap between A and M is what the business path costs inside MLServer; the gap between M and
D is what MLServer itself (FastAPI, pydantic, middleware) costs over a bare ASGI app."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse

OUTPUTS = (("score", "FP64", 0.5), ("confidence", "FP64", 0.5), ("price", "FP64", 1200.0),
           ("market_factors", "BYTES", '{"peak_hours": 1.0, "low_intent_discount": 1.0}'),
           ("decision", "BYTES", "reject"))


class FixedAnswer(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        n = payload.inputs[0].shape[0]
        return InferenceResponse.model_validate({
            "model_name": self.name, "model_version": self.version, "id": payload.id,
            "outputs": [{"name": name, "shape": [n], "datatype": dt, "data": [value] * n} for name, dt, value in OUTPUTS],
        })
