"""The MLServer runtime: loads one bundle, adapts V2 requests to predictors/."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from predictors import BundleError, InputError, load_config, load_predictor

from . import codec
from .settings import RuntimeSettings


class InvalidInput(MLServerError):
    """400 (gRPC INVALID_ARGUMENT) naming the offending input."""

    def __init__(self, error: InputError):
        super().__init__(str(error), status_code=400)


class ModelLoadError(MLServerError):
    def __init__(self, msg: str):
        super().__init__(msg, status_code=500)


class InsuranceModel(MLModel):
    """Lead scoring + pricing (LightGBM) or claims triage (scikit-learn), per the bundle."""

    async def load(self) -> bool:
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        try:
            self.options = RuntimeSettings(**extra)
            folder = await get_model_uri(self._settings)
            self.predictor = load_predictor(folder, load_config(self.options.config_path),
                                            threshold=self.options.decision_threshold)
        except (BundleError, ValueError, OSError) as e:
            raise ModelLoadError(f"model {self.name} {self.version}: {e}") from e
        bundle_version = self.predictor.manifest["version"]
        if self.version is not None and self.version != bundle_version:
            raise ModelLoadError(f"model {self.name}: model-settings version {self.version} but the bundle "
                                 f"is version {bundle_version}")
        self.inputs, self.outputs = codec.metadata(self.predictor.features, self.predictor.outputs)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            raw, n = codec.decode(payload, self.predictor.features, self.options.max_batch_rows)
            prediction = self.predictor.predict(raw, n, now=codec.quote_time(payload))
            wanted = [o.name for o in payload.outputs] if payload.outputs else None
            return codec.encode(self.name, self.version, payload.id, n, prediction.outputs,
                                self.predictor.outputs, wanted)
        except InputError as e:
            raise InvalidInput(e) from e
