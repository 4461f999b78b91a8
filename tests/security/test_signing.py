"""Ed25519 signatures of bundle manifests: `python -m predictors.signing keygen|sign|verify`
and the library functions the runtime uses (the runtime's refusal is tested in
inproc/test_runtime_units.py)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys

import pytest

from predictors.bundle import BundleError
from predictors.signing import (SIGNATURE, generate_keypair, load_private_key, load_public_keys, sign_bundle,
                                verify_bundle)

from ..conftest import ROOT, shipped_bundle


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "predictors.signing", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture()
def bundles(tmp_path):
    out = tmp_path / "models"
    for name in ("auto", "claims"):
        src = shipped_bundle(name)
        shutil.copytree(src, out / name / src.name)
    return out


def test_keygen_sign_verify_round_trip(tmp_path, bundles):
    prefix = tmp_path / "keys" / "bundle"
    p = cli("keygen", "--out", prefix)
    assert p.returncode == 0, p.stderr
    key, pub = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in pub.read_bytes() and b"PRIVATE KEY" in key.read_bytes()
    assert cli("keygen", "--out", prefix).returncode == 2, "never overwrites a key silently"
    p = cli("sign", bundles, "--key", key)
    assert p.returncode == 0 and p.stdout.count("signed ") == 2, p.stdout + p.stderr
    doc = json.loads((bundles / "auto" / "1.0.0" / SIGNATURE).read_text())
    assert doc["algorithm"] == "ed25519" and len(doc["key_id"]) == 16
    p = cli("verify", bundles, "--public-key", pub)
    assert p.returncode == 0 and p.stdout.count("ok ") == 2, p.stdout


def test_tampering_is_detected(tmp_path, bundles):
    private_pem, public_pem = generate_keypair()
    key = load_private_key(private_pem)
    (tmp_path / "k.pub").write_bytes(public_pem)
    keys = load_public_keys(tmp_path / "k.pub")
    auto = bundles / "auto" / "1.0.0"
    sign_bundle(auto, key)
    assert verify_bundle(auto, keys)
    manifest = auto / "manifest.json"
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b'"version": "1.0.0"', b'"version": "1.0.1"', 1))
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(auto, keys)
    manifest.write_bytes(original + b" ")  # even whitespace
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(auto, keys)
    manifest.write_bytes(original)
    (auto / SIGNATURE).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable signature"):
        verify_bundle(auto, keys)
    (auto / SIGNATURE).unlink()
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(auto, keys)
    # a changed model file keeps the manifest's signature valid but fails its sha256: verify says so
    sign_bundle(auto, key)
    (auto / "model.txt").write_text((auto / "model.txt").read_text() + "\n")
    p = cli("verify", auto, "--public-key", tmp_path / "k.pub")
    assert p.returncode == 1 and "sha256" in p.stdout
    assert cli("sign", auto, "--key", tmp_path / "nope.key").returncode != 0


def test_rotation_trusts_every_key_in_the_file(tmp_path, bundles):
    old_priv, old_pub = generate_keypair()
    new_priv, new_pub = generate_keypair()
    (tmp_path / "both.pub").write_bytes(old_pub + new_pub)
    keys = load_public_keys(tmp_path / "both.pub")
    assert len(keys) == 2
    auto, claims = bundles / "auto" / "1.0.0", bundles / "claims" / "1.0.0"
    sign_bundle(auto, load_private_key(old_priv))
    sign_bundle(claims, load_private_key(new_priv))
    assert verify_bundle(auto, keys) != verify_bundle(claims, keys)
    with pytest.raises(ValueError, match="no PEM public key"):
        (tmp_path / "empty.pub").write_text("nothing")
        load_public_keys(tmp_path / "empty.pub")
