"""Runtime settings of the insurance models.

Read per model from ``parameters.extra`` of its model-settings.json (MLServer also fills
that from the MLSERVER_MODEL_EXTRA JSON variable), falling back to INSURANCE_* environment
variables, then to the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSURANCE_", extra="forbid")

    #: Lead scoring: "accept" at or above this score; default: the vertical's decision_threshold in
    #: verticals.yaml (0.65). Claims triage keeps its own thresholds (verticals.yaml `triage`).
    decision_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    #: Largest batch (rows) one request may carry; larger requests get a 400 naming the limit.
    max_batch_rows: int = Field(10_000, ge=1)
    #: Path of an alternative verticals.yaml (business rules); default: the packaged one.
    config_path: Optional[Path] = None
