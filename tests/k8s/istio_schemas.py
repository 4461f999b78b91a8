"""Structural JSON Schemas of the two Istio kinds the chart renders (security.istio.io v1 and
v1beta1: AuthorizationPolicy, RequestAuthentication).

No Istio CRDs are among the CRDs this project was given (../shared/crds has KServe's and
Prometheus Operator's only), so these are written by hand from Istio's API reference
(istio.io/latest/docs/reference/config/security/authorization-policy/ and
.../request_authentication/), covering every field of those messages, closed like
`kubectl apply --validate=strict` (unknown fields are errors), with the enums, the string
types (ports are strings) and Istio's path syntax (exact, `prefix*` or `*suffix`). They are
narrower than Istio's generated CRDs in one way: CEL rules of the real CRDs (e.g. "only one
of jwks and jwksUri") are expressed here as `not: required both` where simple, or not at all.
On a cluster, `kubectl apply --dry-run=server` checks against the real CRDs.
"""

from __future__ import annotations

STRINGS = {"type": "array", "items": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
SELECTOR = {"type": "object", "additionalProperties": False,
            "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}}
TARGET_REF = {"type": "object", "additionalProperties": False, "required": ["kind", "name"],
              "properties": {"group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                             "namespace": {"type": "string"}}}
#: Istio paths: exact, prefix (`/v2/*`), suffix (`*/ready`) or `*`; no `*` elsewhere.
PATHS = {"type": "array", "items": {"type": "string", "pattern": r"^(\*|\*?[^*]+|[^*]+\*)$"}}
PORTS = {"type": "array", "items": {"type": "string", "pattern": r"^[0-9]{1,5}$"}}

SOURCE = {"type": "object", "additionalProperties": False, "properties": {
    k: STRINGS for k in ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                         "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
                         "serviceAccounts", "notServiceAccounts")}}
OPERATION = {"type": "object", "additionalProperties": False, "properties": {
    "hosts": STRINGS, "notHosts": STRINGS, "ports": PORTS, "notPorts": PORTS, "methods": STRINGS,
    "notMethods": STRINGS, "paths": PATHS, "notPaths": PATHS}}
CONDITION = {"type": "object", "additionalProperties": False, "required": ["key"],
             "properties": {"key": {"type": "string"}, "values": STRINGS, "notValues": STRINGS}}
RULE = {"type": "object", "additionalProperties": False, "properties": {
    "from": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                        "properties": {"source": SOURCE}}},
    "to": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                      "properties": {"operation": OPERATION}}},
    "when": {"type": "array", "items": CONDITION}}}

AUTHORIZATION_POLICY_SPEC = {"type": "object", "additionalProperties": False, "properties": {
    "selector": SELECTOR, "targetRef": TARGET_REF, "targetRefs": {"type": "array", "items": TARGET_REF},
    "rules": {"type": "array", "items": RULE},
    "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
    "provider": {"type": "object", "additionalProperties": False, "properties": {"name": {"type": "string"}}}}}

JWT_HEADER = {"type": "object", "additionalProperties": False, "required": ["name"],
              "properties": {"name": {"type": "string"}, "prefix": {"type": "string"}}}
JWT_RULE = {"type": "object", "additionalProperties": False, "required": ["issuer"], "properties": {
    "issuer": {"type": "string", "minLength": 1}, "audiences": STRINGS,
    "jwksUri": {"type": "string", "pattern": "^https?://"}, "jwks": {"type": "string"},
    "fromHeaders": {"type": "array", "items": JWT_HEADER}, "fromParams": STRINGS, "fromCookies": STRINGS,
    "outputPayloadToHeader": {"type": "string"}, "forwardOriginalToken": {"type": "boolean"},
    "outputClaimToHeaders": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                        "properties": {"header": {"type": "string"},
                                                                       "claim": {"type": "string"}}}},
    "timeout": {"type": "string"}},
    "not": {"required": ["jwks", "jwksUri"]}}
REQUEST_AUTHENTICATION_SPEC = {"type": "object", "additionalProperties": False, "properties": {
    "selector": SELECTOR, "targetRef": TARGET_REF, "targetRefs": {"type": "array", "items": TARGET_REF},
    "jwtRules": {"type": "array", "items": JWT_RULE}}}


def _object(kind: str, spec: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"enum": ["security.istio.io/v1", "security.istio.io/v1beta1"]},
                           "kind": {"const": kind}, "metadata": METADATA, "spec": spec}}


SCHEMAS = {"AuthorizationPolicy": _object("AuthorizationPolicy", AUTHORIZATION_POLICY_SPEC),
           "RequestAuthentication": _object("RequestAuthentication", REQUEST_AUTHENTICATION_SPEC)}


def validate_istio(obj: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(SCHEMAS[obj["kind"]])
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


# ---- Istio's authorization semantics, enough to ask "is this request let through?" -------------

def _path_matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def _operation_matches(op: dict, method: str, path: str, port: int) -> bool:
    if "methods" in op and method not in op["methods"]:
        return False
    if "paths" in op and not any(_path_matches(p, path) for p in op["paths"]):
        return False
    if "ports" in op and str(port) not in op["ports"]:
        return False
    return True


def _rule_matches(rule: dict, method: str, path: str, port: int, principal: str | None) -> bool:
    if "from" in rule and not any(
            "requestPrincipals" not in f["source"] or (principal is not None and any(
                p == "*" or p == principal for p in f["source"]["requestPrincipals"]))
            for f in rule["from"]):
        return False
    if "to" in rule and not any(_operation_matches(t["operation"], method, path, port) for t in rule["to"]):
        return False
    return True


def decide(policies: list[dict], method: str, path: str, port: int = 8080, principal: str | None = None) -> str:
    """"allow" or "deny" for a request at a workload all `policies` select (DENY first, then
    ALLOW: with any ALLOW policy present, a request no ALLOW rule matches is denied)."""
    for action in ("DENY", "ALLOW"):
        relevant = [p for p in policies if p["spec"].get("action", "ALLOW") == action]
        matched = any(_rule_matches(r, method, path, port, principal) for p in relevant for r in p["spec"]["rules"])
        if action == "DENY" and matched:
            return "deny"
        if action == "ALLOW" and relevant:
            return "allow" if matched else "deny"
    return "allow"
