"""Framework-free business logic of the insurance models: feature specs, validation,
encoding, scoring post-processing (confidence, price, decision, triage) and bundles.

Nothing here imports MLServer; the runtime, training, benchmarks and tools share it.
"""

from .bundle import BundleError, open_bundle
from .encoding import Batch, InputError
from .predictor import OUTPUTS, Prediction, Predictor, load_predictor
from .spec import Config, ConfigError, load_config

__all__ = [
    "Batch", "BundleError", "Config", "ConfigError", "InputError", "OUTPUTS", "Prediction",
    "Predictor", "load_config", "load_predictor", "open_bundle",
]
