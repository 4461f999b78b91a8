"""In-process unit tests of runtime/auth.py and the security settings (run in a fresh
interpreter by tests/security/test_inproc.py: MLServer's generated gRPC protos cannot share
a process with tritonclient.grpc's, which the server tests import)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import types

import pytest

from runtime import auth as auth_mod
from runtime.auth import Authenticator, Unauthenticated, parse_keys
from runtime.settings import RuntimeSettings

from ..conftest import AUDIENCE, ISSUER, jwks_of


def _options(**kw) -> RuntimeSettings:
    return RuntimeSettings(**{"auth_reload_seconds": 0, **kw})


def _authenticate(a: Authenticator, **headers):
    return a.authenticate({k.lower().replace("_", "-"): v for k, v in headers.items()})


def _reason(a: Authenticator, **headers) -> str:
    with pytest.raises(Unauthenticated) as e:
        _authenticate(a, **headers)
    return e.value.reason


# ---- unit: API keys ---------------------------------------------------------------------------

def test_off_without_configuration(monkeypatch):
    for var in ("INSURANCE_API_KEYS", "INSURANCE_API_KEYS_FILE", "INSURANCE_JWT_JWKS_FILE", "INSURANCE_JWT_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    a = Authenticator(_options())
    assert not a.enabled and a.authenticate({}) is None


def test_api_keys_from_file_and_env_rotate_without_restart(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# comment\nold-key\n\n")
    a = Authenticator(_options(api_keys_file=keys, api_keys="env-key-1, env-key-2"))
    assert _authenticate(a, x_api_key="old-key").method == "api_key"
    assert _authenticate(a, authorization="Bearer env-key-2").method == "api_key"
    assert _authenticate(a, authorization="bearer   old-key  ").method == "api_key"
    assert _reason(a, x_api_key="nope") == "invalid_api_key"
    assert _reason(a) == "missing"
    assert _reason(a, authorization="Basic b2xkLWtleQ==") == "malformed"
    assert _reason(a, authorization="Bearer") == "malformed"
    # rotation: add the new key (both valid), then drop the old one
    keys.write_text("old-key\nnew-key\n")
    assert _authenticate(a, x_api_key="new-key") and _authenticate(a, x_api_key="old-key")
    keys.write_text("new-key\n")
    assert _reason(a, x_api_key="old-key") == "invalid_api_key"
    assert _authenticate(a, x_api_key="new-key")
    # an unreadable file after a good read keeps the last keys (logged), never opens up
    keys.unlink()
    assert _authenticate(a, x_api_key="new-key") and _reason(a, x_api_key="old-key") == "invalid_api_key"


def test_reload_interval_bounds_the_checks(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k1\n")
    a = Authenticator(_options(api_keys_file=keys, auth_reload_seconds=3600))
    keys.write_text("k2\n")
    assert _authenticate(a, x_api_key="k1"), "not re-read before the interval has passed"
    a.keys._file._checked = float("-inf")  # the interval passed
    assert _reason(a, x_api_key="k1") == "invalid_api_key" and _authenticate(a, x_api_key="k2")


def test_empty_key_set_refuses_everything(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n")
    a = Authenticator(_options(api_keys_file=keys))
    assert a.enabled and _reason(a, x_api_key="") == "invalid_api_key"
    assert Authenticator(_options(api_keys="")).enabled, "set but empty is on (refuses all), not off"


def test_only_digests_are_kept_and_every_digest_is_compared(tmp_path, monkeypatch):
    a = Authenticator(_options(api_keys="alpha-key,beta-key,gamma-key"))
    state = repr(vars(a.keys)) + repr(vars(a))
    assert "alpha-key" not in state and "beta-key" not in state
    assert a.keys.digests() == frozenset(parse_keys("alpha-key\nbeta-key\ngamma-key"))
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(auth_mod.hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    for key in ("alpha-key", "gamma-key", "wrong"):
        calls.clear()
        a.keys.matches(key)
        assert len(calls) == 3, "no early exit: the time does not tell which key matched"


def test_settings_errors_never_echo_a_key(monkeypatch):
    monkeypatch.setenv("INSURANCE_API_KEYS", "sk-SECRET-VALUE")
    for bad in ({"max_batch_rows": -1}, {"jwt_jwks_file": "/nowhere"}, {"unknown": 1}):
        with pytest.raises(ValueError) as e:
            RuntimeSettings(**bad)
        assert "SECRET" not in str(e.value)
    assert "SECRET" not in repr(RuntimeSettings())


# ---- unit: JWT --------------------------------------------------------------------------------

@pytest.fixture()
def jwt_auth(credentials) -> Authenticator:
    return Authenticator(_options(jwt_jwks_file=credentials.jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))


def test_jwt_valid_token(jwt_auth, credentials):
    p = _authenticate(jwt_auth, authorization=f"Bearer {credentials.token()}")
    assert p.method == "jwt" and p.subject == "client-1"


@pytest.mark.parametrize("change, reason", [
    ({"exp_in": -120}, "expired_token"),
    ({"iss": "https://evil.test"}, "wrong_issuer"),
    ({"aud": "someone-else"}, "wrong_audience"),
    ({"kid": "unknown"}, "invalid_token"),
])
def test_jwt_refusals(jwt_auth, credentials, change, reason):
    assert _reason(jwt_auth, authorization=f"Bearer {credentials.token(**change)}") == reason


def test_jwt_forgeries_are_refused(jwt_auth, credentials):
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization

    # signed by a key nobody trusts, under the trusted kid
    assert _reason(jwt_auth, authorization=f"Bearer {credentials.token(key=credentials.other_key)}") == "invalid_token"
    # alg none
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    unsigned = pyjwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    assert _reason(jwt_auth, authorization=f"Bearer {unsigned}") == "invalid_token"
    # HS256 with the public key as the shared secret (algorithm confusion)
    pem = credentials.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = pyjwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = pyjwt.utils.base64url_encode(json.dumps(claims).encode())
    sig = pyjwt.utils.base64url_encode(hmac.new(pem, header + b"." + body, hashlib.sha256).digest())
    assert _reason(jwt_auth, authorization=f"Bearer {(header + b'.' + body + b'.' + sig).decode()}") == "invalid_token"
    # no exp
    no_exp = pyjwt.encode({"iss": ISSUER, "aud": AUDIENCE}, credentials.private_key, algorithm="RS256",
                          headers={"kid": "k1"})
    assert _reason(jwt_auth, authorization=f"Bearer {no_exp}") == "invalid_token"
    # garbage shaped like a JWT
    assert _reason(jwt_auth, authorization="Bearer aaa.bbb.ccc") == "invalid_token"


def test_jwks_rotation_without_restart(tmp_path, credentials):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(credentials.private_key.public_key(), "k1")))
    a = Authenticator(_options(jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    new_token = credentials.token(key=credentials.other_key, kid="k2")
    assert _reason(a, authorization=f"Bearer {new_token}") == "invalid_token"
    both = jwks_of(credentials.private_key.public_key(), "k1")["keys"] + jwks_of(credentials.other_key.public_key(), "k2")["keys"]
    jwks.write_text(json.dumps({"keys": both}))
    assert _authenticate(a, authorization=f"Bearer {new_token}").method == "jwt"
    assert _authenticate(a, authorization=f"Bearer {credentials.token()}").method == "jwt"


def test_jwt_with_a_pem_public_key(tmp_path, credentials):
    from cryptography.hazmat.primitives import serialization

    pem = tmp_path / "jwt.pem"
    pem.write_bytes(credentials.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    a = Authenticator(_options(jwt_public_key_file=pem, jwt_issuer=ISSUER, jwt_audience="x," + AUDIENCE))
    assert _authenticate(a, authorization=f"Bearer {credentials.token(kid='any')}").method == "jwt"


def test_jwt_settings_need_issuer_audience_and_asymmetric_algorithms(credentials):
    with pytest.raises(ValueError, match="jwt_issuer and jwt_audience"):
        RuntimeSettings(jwt_jwks_file=credentials.jwks_file, jwt_issuer=ISSUER)
    with pytest.raises(ValueError, match="only asymmetric"):
        RuntimeSettings(jwt_jwks_file=credentials.jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                        jwt_algorithms="RS256,HS256")


def test_either_method_is_enough(credentials):
    a = Authenticator(_options(api_keys="k-1,key.shaped.likeajwt", jwt_jwks_file=credentials.jwks_file,
                               jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert _authenticate(a, authorization="Bearer k-1").method == "api_key"
    assert _authenticate(a, authorization="Bearer key.shaped.likeajwt").method == "api_key"
    assert _reason(a, authorization="Bearer key.shaped.wrong") == "invalid_token"
    assert _authenticate(a, authorization=f"Bearer {credentials.token()}").method == "jwt"
    # a mesh-verified JWT in Authorization plus the runtime's key in X-API-Key
    assert _authenticate(a, authorization=f"Bearer {credentials.token(aud='mesh')}", x_api_key="k-1").method == "api_key"
    assert _reason(a, authorization=f"Bearer {credentials.token(aud='mesh')}", x_api_key="bad") == "invalid_api_key"


def test_check_counts_failures_by_model_and_reason(monkeypatch):
    seen = []
    monkeypatch.setattr(auth_mod, "count_failure", lambda model, reason: seen.append((model, reason)))
    a = Authenticator(_options(api_keys="k"))
    payload = types.SimpleNamespace(parameters=types.SimpleNamespace(headers={"x-api-key": "bad"}))
    with pytest.raises(Unauthenticated):
        a.check(payload, "auto")
    with pytest.raises(Unauthenticated):
        a.check(types.SimpleNamespace(parameters=None), "claims")
    assert seen == [("auto", "invalid_api_key"), ("claims", "missing")]
    assert all(r in auth_mod.REASONS for _, r in seen)
