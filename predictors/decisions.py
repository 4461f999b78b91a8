"""Decision records: what a model decided for each scored row, without the personal data.

One record per row: request id, row index, time, model name and version, the bundle's sha256
(of its manifest.json, which holds the sha256 of every file of the bundle), a digest of the
row's inputs, the outputs, and the reasons when the request computed them. Inputs are not
recorded by default (``decision_log.inputs``); when they are, each feature follows its
``personal`` policy in verticals.yaml: ``clear`` (as sent), ``hashed`` (keyed SHA-256) or
``dropped``. The same policy applies to the values quoted in reasons (the anomaly reason too).
Default policy: numeric and categorical features ``clear``, text features (names, addresses,
free text) ``dropped``. runtime/decision_log.py writes the records.

``inputs_sha256`` lets an auditor who holds a row's inputs prove it is the row that was decided:
sha256 of the compact JSON object {feature: value} over every feature of the bundle in the bundle's
order, numbers as floats, text and categories as the string sent, missing as null
(``inputs_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .spec import CATEGORICAL, NUMERIC, TEXT, ConfigError, Vertical

CLEAR, HASHED, DROPPED = "clear", "hashed", "dropped"
#: A categorical value outside the feature's categories, in a record (it may be anything, a name too).
UNSEEN = "<unseen>"
POLICIES = (CLEAR, HASHED, DROPPED)
FORMATS = ("json", "cloudevents")
EVENT_TYPE = "io.insurance-serving.decision"  # CloudEvents `type` of a record


def default_policy(kind: str) -> str:
    """Free text may hold names, addresses, health details: never in a log unless configured."""
    return DROPPED if kind == TEXT else CLEAR


@dataclass(frozen=True)
class DecisionLogOptions:
    """verticals.yaml ``decision_log`` (top level, overridden per vertical) and the features' ``personal``."""

    enabled: bool = False
    format: str = "json"
    inputs: bool = False
    personal: Mapping[str, str] = field(default_factory=dict)  # feature -> clear | hashed | dropped

    @classmethod
    def parse(cls, vertical: Vertical, raw: Mapping[str, Any] | None) -> "DecisionLogOptions":
        raw = dict(raw or {})
        unknown = set(raw) - {"enabled", "format", "inputs"}
        if unknown:
            raise ConfigError(f"vertical {vertical.name!r}: decision_log has unknown keys {sorted(unknown)}; "
                              "allowed: enabled, format, inputs")
        fmt = str(raw.get("format", "json"))
        if fmt not in FORMATS:
            raise ConfigError(f"vertical {vertical.name!r}: decision_log.format {fmt!r}; allowed: {', '.join(FORMATS)}")
        personal = {}
        for f in vertical.raw_features:
            policy = f.get("personal", default_policy(f.get("kind")))
            if policy not in POLICIES:
                raise ConfigError(f"vertical {vertical.name!r}: feature {f.get('name')!r} has personal {policy!r}; "
                                  f"allowed: {', '.join(POLICIES)}")
            personal[f["name"]] = policy
        return cls(enabled=bool(raw.get("enabled", False)), format=fmt, inputs=bool(raw.get("inputs", False)),
                   personal=personal)


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if hasattr(v, "item"):
        return v.item()
    return v


def digest_value(kind: str, v: Any) -> Any:
    v = _plain(v)
    if v is None:
        return None
    if kind == NUMERIC:
        v = float(v)
        return v if math.isfinite(v) else None
    return str(v)


def inputs_digest(features: Sequence[Any], raw: Mapping[str, Sequence[Any]], i: int) -> str:
    """sha256 of row i's inputs (see the module docstring for the recipe)."""
    row = {f.name: digest_value(f.kind, raw[f.name][i]) if f.name in raw else None for f in features}
    return hashlib.sha256(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


class Recorder:
    """Builds the decision records of one model version."""

    def __init__(self, name: str, version: str | None, bundle_sha256: str, features: Sequence[Any],
                 options: DecisionLogOptions, hash_key: bytes | None = None):
        self.name, self.version, self.bundle_sha256 = name, version, bundle_sha256
        self.features = tuple(features)
        self.options = options
        self.policy = {f.name: options.personal.get(f.name, default_policy(f.kind)) for f in self.features}
        self.hash_key = hash_key
        self.categories = {f.name: frozenset(f.categories) for f in self.features if f.kind == CATEGORICAL}

    def protect(self, feature: str, value: Any) -> tuple[bool, Any]:
        """(keep?, value) for a value of `feature` under its personal-data policy; a categorical value
        in clear only when it is one of the feature's categories (else UNSEEN)."""
        policy = self.policy.get(feature, DROPPED)
        if value is None:
            return True, None
        if policy == CLEAR:
            known = self.categories.get(feature)
            if known is not None and str(value).strip().lower() not in known:
                return True, UNSEEN
            return True, value
        if policy == HASHED:
            data = str(value).encode("utf-8")
            if self.hash_key:
                return True, "hmac-sha256:" + hmac.new(self.hash_key, data, hashlib.sha256).hexdigest()
            return True, "sha256:" + hashlib.sha256(data).hexdigest()
        return False, None

    def _reason_item(self, item: dict) -> dict:
        if item and "feature" in item and "value" in item:
            keep, value = self.protect(item["feature"], item["value"])
            item = dict(item)
            if keep:
                item["value"] = value
            else:
                del item["value"]
        return item

    def reasons(self, text: str) -> Any:
        """A row's reasons JSON with the quoted values under the personal-data policy."""
        doc = json.loads(text)
        for key in ("up", "down", "top"):
            if key in doc:
                doc[key] = [self._reason_item(x) for x in doc[key]]
        if doc.get("anomaly"):
            doc["anomaly"] = self._reason_item(doc["anomaly"])
        return doc

    def records(self, request_id: str | None, n: int, raw: Mapping[str, Sequence[Any]],
                outputs: Mapping[str, Any], reasons: Sequence[str] | None = None,
                now: datetime | None = None) -> list[dict[str, Any]]:
        when = (now or datetime.now(timezone.utc)).isoformat(timespec="microseconds")
        columns = {name: (v.tolist() if hasattr(v, "tolist") else list(v)) for name, v in outputs.items()}
        out = []
        for i in range(n):
            rec: dict[str, Any] = {
                "request_id": request_id, "row": i, "time": when, "model": self.name,
                "model_version": self.version, "bundle_sha256": self.bundle_sha256,
                "inputs_sha256": inputs_digest(self.features, raw, i),
                "outputs": {name: values[i] for name, values in columns.items()},
            }
            if reasons is not None:
                rec["reasons"] = self.reasons(reasons[i])
            if self.options.inputs:
                inputs = {}
                for f in self.features:
                    if f.name not in raw:
                        continue
                    keep, value = self.protect(f.name, digest_value(f.kind, raw[f.name][i]))
                    if keep:
                        inputs[f.name] = value
                rec["inputs"] = inputs
            if self.options.format == "cloudevents":
                rec = {"specversion": "1.0", "type": EVENT_TYPE, "source": f"/v2/models/{self.name}",
                       "id": f"{request_id}/{i}", "time": when, "datacontenttype": "application/json",
                       "subject": str(self.version or ""), "data": rec}
            out.append(rec)
        return out
