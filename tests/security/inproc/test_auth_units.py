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


# ---- roles, tenants and rates in the keys file (issue 12, finding 2) -----------------------------

from runtime.auth import ADMIN, INFERENCE, OUTCOMES, Forbidden  # noqa: E402


def test_keys_file_stays_backward_compatible_one_key_per_line_is_inference():
    entries = parse_keys("# old format\nk-one\nk-two, k-three\n")
    assert len(entries) == 3 and all(e.roles == {INFERENCE} and e.tenant is None and e.rate is None
                                     for e in entries.values())


def test_keys_file_roles_tenant_and_rate():
    entries = parse_keys("adm admin\nfeed outcomes tenant=acme\napp inference outcomes tenant=acme rate=2/5\n"
                         "slow rate=0.5\n")
    by_key = {k: entries[hashlib.sha256(k.encode()).digest()] for k in ("adm", "feed", "app", "slow")}
    assert by_key["adm"].roles == {ADMIN}, "a key marked admin is not an inference key"
    assert by_key["feed"].roles == {OUTCOMES} and by_key["feed"].tenant == "acme"
    assert by_key["app"].roles == {INFERENCE, OUTCOMES} and by_key["app"].rate == (2.0, 5.0)
    assert by_key["slow"].roles == {INFERENCE} and by_key["slow"].rate == (0.5, 1.0)


@pytest.mark.parametrize("line", ["k-1 superuser", "k-1 rate=fast", "k-1 tenant=", "k-1 rate=1/0"])
def test_keys_file_unknown_words_are_refused_without_echo(line):
    with pytest.raises(ValueError) as e:
        parse_keys("sk-SECRET-1 inference\n" + line)
    assert "line 2" in str(e.value) and "SECRET" not in str(e.value) and "superuser" not in str(e.value)


def test_a_broken_keys_file_keeps_the_last_good_roles(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("adm admin\n")
    a = Authenticator(_options(api_keys_file=keys))
    keys.write_text("adm admin\nnew superuser\n")  # a typo: the last good file stays in force
    assert a.authenticate({"x-api-key": "adm"}, ADMIN).roles == {ADMIN}
    assert _reason(a, x_api_key="new") == "invalid_api_key"


def _forbidden(a: Authenticator, role: str, **headers) -> Forbidden:
    with pytest.raises(Forbidden) as e:
        a.authenticate({k.lower().replace("_", "-"): v for k, v in headers.items()}, role)
    return e.value


def test_roles_are_enforced_403_not_401():
    a = Authenticator(_options(api_keys="inf\nadm admin\nfeed outcomes\nboth inference outcomes"))
    assert a.authenticate({"x-api-key": "inf"}).roles == {INFERENCE}
    e = _forbidden(a, ADMIN, x_api_key="inf")
    assert e.status_code == 403 and "'admin' role" in str(e) and e.reason == "forbidden"
    _forbidden(a, INFERENCE, x_api_key="adm")
    _forbidden(a, OUTCOMES, authorization="Bearer inf")
    assert a.authenticate({"x-api-key": "feed"}, OUTCOMES).roles == {OUTCOMES}
    assert a.authenticate({"x-api-key": "both"}, INFERENCE) and a.authenticate({"x-api-key": "both"}, OUTCOMES)
    assert _reason(a, x_api_key="nope") == "invalid_api_key", "a wrong key stays 401"
    # an admin key next to an invalid bearer: the valid credential decides
    assert a.authenticate({"x-api-key": "adm", "authorization": "Bearer wrong"}, ADMIN).roles == {ADMIN}


def test_check_headers_counts_forbidden(monkeypatch):
    seen = []
    monkeypatch.setattr(auth_mod, "count_failure", lambda model, reason: seen.append((model, reason)))
    a = Authenticator(_options(api_keys="adm admin"))
    with pytest.raises(Forbidden):
        a.check_headers({"x-api-key": "adm"}, "auto")
    assert seen == [("auto", "forbidden")]


def test_owner_is_the_tenant_or_the_credential_never_the_key():
    a = Authenticator(_options(api_keys="sk-SECRET-a\nsk-SECRET-b\nsk-SECRET-c inference tenant=acme\n"
                                         "sk-SECRET-d outcomes tenant=acme"))
    owners = {k: a.authenticate({"x-api-key": k}, INFERENCE if k[-1] != "d" else OUTCOMES).owner
              for k in ("sk-SECRET-a", "sk-SECRET-b", "sk-SECRET-c", "sk-SECRET-d")}
    assert owners["sk-SECRET-a"] != owners["sk-SECRET-b"]
    assert owners["sk-SECRET-c"] == owners["sk-SECRET-d"] == "tenant:acme"
    assert not any("SECRET" in o for o in owners.values())


# ---- roles and tenants in JWTs ------------------------------------------------------------------

@pytest.mark.parametrize("claims, expected", [
    ({}, {INFERENCE}),
    ({"roles": ["admin"]}, {ADMIN}),
    ({"roles": "outcomes inference"}, {OUTCOMES, INFERENCE}),
    ({"roles": "admin,outcomes"}, {ADMIN, OUTCOMES}),
    ({"roles": ["claims-adjuster"]}, {INFERENCE}),  # another application's roles: not this service's
    ({"roles": 7}, {INFERENCE}),
])
def test_jwt_roles_claim(jwt_auth, credentials, claims, expected):
    p = _authenticate(jwt_auth, authorization=f"Bearer {credentials.token(**claims)}") if INFERENCE in expected \
        else jwt_auth.authenticate({"authorization": f"Bearer {credentials.token(**claims)}"}, sorted(expected)[0])
    assert p.roles == expected


def test_jwt_roles_and_tenant_claims_are_settings(credentials):
    a = Authenticator(_options(jwt_jwks_file=credentials.jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                               jwt_roles_claim="scope", jwt_tenant_claim="org"))
    p = a.authenticate({"authorization": f"Bearer {credentials.token(scope='admin', org='acme')}"}, ADMIN)
    assert p.roles == {ADMIN} and p.owner == "tenant:acme"
    _forbidden(a, ADMIN, authorization=f"Bearer {credentials.token(roles=['admin'])}")  # not the configured claim
    other = a.authenticate({"authorization": f"Bearer {credentials.token(sub='client-2')}"})
    assert other.owner != a.authenticate({"authorization": f"Bearer {credentials.token()}"}).owner


# ---- key sources: empty revokes, kid must match (finding 10) -------------------------------------

def _pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("empty", [b"", b"\n  \n"])
def test_an_emptied_pem_file_revokes(tmp_path, credentials, empty):
    pem = tmp_path / "jwt.pem"
    pem.write_bytes(_pem(credentials.private_key))
    a = Authenticator(_options(jwt_public_key_file=pem, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    token = credentials.token()
    assert _authenticate(a, authorization=f"Bearer {token}").method == "jwt"
    pem.write_bytes(empty)
    assert _reason(a, authorization=f"Bearer {token}") == "invalid_token"


@pytest.mark.parametrize("empty", ['{"keys": []}', ""])
def test_an_empty_jwks_revokes(tmp_path, credentials, empty):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(credentials.private_key.public_key(), "k1")))
    a = Authenticator(_options(jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    token = credentials.token()
    assert _authenticate(a, authorization=f"Bearer {token}").method == "jwt"
    jwks.write_text(empty)
    assert _reason(a, authorization=f"Bearer {token}") == "invalid_token"


def test_a_broken_or_deleted_jwks_keeps_the_last_good_keys(tmp_path, credentials):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(credentials.private_key.public_key(), "k1")))
    a = Authenticator(_options(jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    token = credentials.token()
    jwks.write_text('{"keys": [')
    assert _authenticate(a, authorization=f"Bearer {token}").method == "jwt"
    jwks.unlink()
    assert _authenticate(a, authorization=f"Bearer {token}").method == "jwt"


def test_with_pem_and_jwks_a_kid_must_match_the_jwks(tmp_path, credentials):
    """A key removed from the JWKS is revoked even when it is also in the PEM file."""
    pem = tmp_path / "jwt.pem"
    pem.write_bytes(_pem(credentials.other_key))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(credentials.private_key.public_key(), "k1")))
    a = Authenticator(_options(jwt_public_key_file=pem, jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert _authenticate(a, authorization=f"Bearer {credentials.token()}").method == "jwt"  # kid k1, JWKS key
    removed = credentials.token(key=credentials.other_key, kid="k2")  # k2 was removed from the JWKS
    assert _reason(a, authorization=f"Bearer {removed}") == "invalid_token"
    import jwt as pyjwt

    now = int(time.time())
    no_kid = pyjwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}, credentials.other_key, algorithm="RS256")
    assert _authenticate(a, authorization=f"Bearer {no_kid}").method == "jwt", "no kid: the PEM keys check it"


# ---- duplicate credential headers (finding 10) ---------------------------------------------------

def test_duplicated_credential_headers():
    assert auth_mod.duplicated(["x-api-key", "authorization", "content-type"]) is False
    assert auth_mod.duplicated(["x-api-key", "accept", "x-api-key"]) is True
    assert auth_mod.duplicated(["authorization", "authorization"]) is True


def test_grpc_metadata_with_a_credential_twice_is_refused_only_with_auth_on(monkeypatch):
    md = [types.SimpleNamespace(key="x-api-key", value="a"), types.SimpleNamespace(key="x-api-key", value="b")]
    context = types.SimpleNamespace(invocation_metadata=lambda: md)
    monkeypatch.setattr(auth_mod, "_env_auth", [])
    monkeypatch.setattr(auth_mod, "_model_auths", {})
    monkeypatch.setattr(auth_mod, "_edge_on", False)
    auth_mod._refresh_edge()  # what register/unregister do
    assert auth_mod.grpc_headers(context) == {"x-api-key": "b"}, "authentication off: nothing changes"
    monkeypatch.setattr(auth_mod, "_model_auths", {("auto", "1"): Authenticator(_options(api_keys="a"))})
    auth_mod._refresh_edge()
    monkeypatch.setattr(auth_mod, "count_failure", lambda *a: None)
    with pytest.raises(Unauthenticated) as e:
        auth_mod.grpc_headers(context)
    assert e.value.reason == "duplicate_credential"


def test_repository_needs_admin_of_any_configuration_and_unloading_never_opens_it(monkeypatch):
    monkeypatch.setattr(auth_mod, "count_failure", lambda *a: None)
    monkeypatch.setattr(auth_mod, "_env_auth", [Authenticator(_options())])  # environment: auth off
    monkeypatch.setattr(auth_mod, "_model_auths", {})
    assert auth_mod.authorize_repository({}) is None, "authentication configured nowhere: open"
    model = types.SimpleNamespace(name="auto", version="1.0.0", auth=Authenticator(_options(api_keys="inf\nadm admin")))
    auth_mod.register_model(model)
    with pytest.raises(Unauthenticated):
        auth_mod.authorize_repository({})
    with pytest.raises(Forbidden):
        auth_mod.authorize_repository({"x-api-key": "inf"})
    assert auth_mod.authorize_repository({"x-api-key": "adm"}).roles == {ADMIN}
    auth_mod.unregister_model(model)  # the last configured model unloaded: still closed
    with pytest.raises(Unauthenticated):
        auth_mod.authorize_repository({})


# ---- errors cross the worker boundary pickled --------------------------------------------------

def test_errors_survive_pickling():
    import pickle

    from runtime.ratelimit import RateLimited

    for err in (Unauthenticated("missing", "no credential"), Forbidden(ADMIN, "the model repository API"),
                RateLimited(3, "key")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.status_code == err.status_code
    assert pickle.loads(pickle.dumps(RateLimited(3, "key"))).headers == (("retry-after", "3"),)


# ---- rate limits (finding 3) --------------------------------------------------------------------

from runtime.ratelimit import Limiter, Policy, RateLimited  # noqa: E402


def test_token_bucket_burst_then_rate():
    lim = Limiter()
    assert [lim.take("c", 2.0, 3.0, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take("c", 2.0, 3.0, now=0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert lim.take("c", 2.0, 3.0, now=0.5) == 0.0
    assert lim.take("other", 2.0, 3.0, now=0.5) == 0.0, "buckets are per credential"
    assert lim.take("c", 2.0, 3.0, now=100.0) == 0.0 and lim._buckets["c"][0] == 2.0, "refill stops at the burst"


def test_buckets_are_bounded():
    lim = Limiter(max_buckets=10)
    for i in range(100):
        lim.take(f"c{i}", 1.0, 1.0, now=0.0)
    assert len(lim) == 10


def test_policy_is_off_by_default_and_key_beats_role_beats_default():
    assert Policy(_options()).limit_of(None) is None
    assert Policy(_options()).limit_of(auth_mod.Principal("api_key", identity="k")) is None
    p = Policy(_options(rate_limit=10, rate_limit_roles={"outcomes": "1/2", "admin": "0.5"}))
    plain = auth_mod.Principal("api_key", identity="k")
    feeder = auth_mod.Principal("api_key", roles=frozenset({OUTCOMES}), identity="f")
    own = auth_mod.Principal("api_key", roles=frozenset({OUTCOMES}), identity="o", rate=(100.0, 200.0))
    assert p.limit_of(plain) == (10.0, 10.0, "default")
    assert p.limit_of(feeder) == (1.0, 2.0, "role")
    assert p.limit_of(own) == (100.0, 200.0, "key")
    assert p.limit_of(None) == (10.0, 10.0, "default"), "authentication off: one bucket for the server"
    with pytest.raises(ValueError, match="unknown role"):
        _options(rate_limit_roles={"root": "1"})


def test_a_role_at_rate_zero_is_unlimited_not_the_default():
    p = Policy(_options(rate_limit=10, rate_limit_roles={"admin": "0", "outcomes": "1/2"}))
    admin = auth_mod.Principal("api_key", roles=frozenset({"admin"}), identity="a")
    both = auth_mod.Principal("api_key", roles=frozenset({"admin", OUTCOMES}), identity="b")
    assert p.limit_of(admin) is None
    assert p.limit_of(both) is None, "the highest of a credential's roles: unlimited"
    assert p.limit_of(auth_mod.Principal("api_key", identity="k")) == (10.0, 10.0, "default")


def test_admit_raises_429_with_retry_after_and_counts(monkeypatch):
    seen = []
    monkeypatch.setattr("runtime.ratelimit.count", lambda model, reason: seen.append((model, reason)))
    p = Policy(_options(rate_limit=0.5, rate_limit_burst=1))
    who = auth_mod.Principal("api_key", identity="unit-429")
    lim = Limiter()
    p.admit(who, "auto", lim)
    with pytest.raises(RateLimited) as e:
        p.admit(who, "auto", lim)
    assert e.value.status_code == 429 and e.value.headers == (("retry-after", "2"),)
    assert seen == [("auto", "default")]


# ---- load errors keep key-file paths and bytes in the log (finding 10) ----------------------------

def test_load_error_hides_key_file_paths_and_contents(tmp_path, caplog):
    import asyncio
    import shutil

    from mlserver.settings import ModelParameters, ModelSettings

    from runtime.model import InsuranceModel

    from ...conftest import shipped_bundle

    bundle = tmp_path / "auto" / "1.0.0"
    shutil.copytree(shipped_bundle("auto"), bundle)
    secret_dir = tmp_path / "secret-mount-XYZ"
    secret_dir.mkdir()
    for name, content in (("jwks.json", b'{"keys": [{"kty": "RSA", "n": "SECRETBYTES"}]}'),
                          ("keys", b"\xff\xfeSECRETBYTES")):
        (secret_dir / name).write_bytes(content)
    cases = ({"jwt_jwks_file": str(secret_dir / "jwks.json"), "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE},
             {"api_keys_file": str(secret_dir / "keys")},
             {"api_keys_file": str(secret_dir / "missing")})
    for extra in cases:
        params = ModelParameters(uri=str(bundle), version="1.0.0", extra=extra)
        m = InsuranceModel(ModelSettings(name="auto", implementation=InsuranceModel, parameters=params))
        with caplog.at_level("ERROR"):
            assert asyncio.run(m.load()) is False
        meta = asyncio.run(m.metadata())
        shown = json.dumps(meta.model_dump(mode="json"))
        assert "load_error" in shown and "could not be read" in shown
        assert "secret-mount" not in shown and "SECRETBYTES" not in shown and str(tmp_path) not in shown
        assert "secret-mount-XYZ" in caplog.text, "the details are in the log"


# ---- what held up in the review, kept with tests (issue 12) ----------------------------------------

def test_api_keys_are_exact_and_case_sensitive():
    a = Authenticator(_options(api_keys="Sk-Live-Key-0001"))
    assert _authenticate(a, x_api_key="Sk-Live-Key-0001")
    for near in ("sk-live-key-0001", "SK-LIVE-KEY-0001", "Sk-Live-Key-000", "Sk-Live-Key-00011", "Sk-Live-Key-0001\x00",
                 "Sk-Live-Key-0001 x", "Sk-Live"):
        assert _reason(a, x_api_key=near) == "invalid_api_key", near


def test_jwt_not_before_is_enforced_with_the_leeway(jwt_auth, credentials):
    now = int(time.time())
    assert _reason(jwt_auth, authorization=f"Bearer {credentials.token(nbf=now + 600)}") == "invalid_token"
    assert _authenticate(jwt_auth, authorization=f"Bearer {credentials.token(nbf=now + 10)}"), "within 30 s leeway"


def test_jwt_header_keys_jku_and_embedded_jwk_are_never_used(jwt_auth, credentials):
    """A token carrying its own key (an embedded `jwk`, or a `jku` URL) and signed by that key is refused:
    only the configured keys verify."""
    import jwt as pyjwt

    attacker = credentials.other_key
    public = jwks_of(attacker.public_key(), "k1")["keys"][0]
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300}
    for extra in ({"jwk": public}, {"jku": "http://127.0.0.1:9/jwks.json"}, {"x5u": "http://127.0.0.1:9/cert.pem"}):
        token = pyjwt.encode(claims, attacker, algorithm="RS256", headers={"kid": "k1", **extra})
        assert _reason(jwt_auth, authorization=f"Bearer {token}") == "invalid_token", extra


def test_api_docs_paths_and_the_openapi_switch(monkeypatch):
    monkeypatch.setattr(auth_mod, "_env_auth", [])
    for path in ("/openapi.json", "/docs", "/v2/docs", "/v2/models/auto/docs", "/v2/models/auto/versions/1/docs"):
        assert auth_mod._is_docs(path), path
    for path in ("/v2/docs/dataplane.json", "/v2/models/auto/docs/dataplane.json", "/v2/models/docs/infer", "/v2"):
        assert not auth_mod._is_docs(path), path
    monkeypatch.setenv("INSURANCE_OPENAPI", "true")
    env = Authenticator(auth_mod.server_options())
    env.openapi = auth_mod.server_options().openapi
    monkeypatch.setattr(auth_mod, "_env_auth", [env])
    assert not auth_mod._is_docs("/openapi.json") and auth_mod._is_docs("/v2/docs"), "the swagger pages stay off"
