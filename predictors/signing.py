"""Ed25519 signatures of bundle manifests (`manifest.sig` beside `manifest.json`).

The manifest holds the sha256 of every bundle file and the runtime checks those on load, so
a valid signature of the manifest's exact bytes vouches for the whole bundle. When the runtime
has a public key configured (INSURANCE_BUNDLE_PUBLIC_KEY_FILE), a bundle without a
signature, or whose signature no configured key verifies, is refused before its model file is
read.

    python -m predictors.signing keygen --out keys/bundle          # keys/bundle.key (private, 0600) + keys/bundle.pub
    python -m predictors.signing sign models/auto/1.0.0 --key keys/bundle.key
    python -m predictors.signing verify models/auto/1.0.0 --public-key keys/bundle.pub

`manifest.sig` is JSON: {"algorithm": "ed25519", "key_id": <first 16 hex digits of the
sha256 of the raw public key>, "signature": <base64 of the 64-byte signature>}. A public key
file may hold several PEM keys (rotation: sign with the new key once every runtime trusts both).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .bundle import MANIFEST, BundleError

SIGNATURE = "manifest.sig"
ALGORITHM = "ed25519"
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def _crypto():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair() -> tuple[bytes, bytes]:
    """(private key PEM (PKCS#8, unencrypted), public key PEM)."""
    ed25519, serialization, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def load_private_key(data: bytes):
    ed25519, serialization, _ = _crypto()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_keys(path: str | Path) -> list:
    """Every Ed25519 public key (PEM) in a file."""
    ed25519, serialization, _ = _crypto()
    data = Path(path).read_bytes()
    keys = []
    for block in _PEM_PUBLIC.findall(data):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError(f"{path}: a key is not Ed25519")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: no PEM public key ('-----BEGIN PUBLIC KEY-----')")
    return keys


def sign_bundle(folder: str | Path, private_key) -> Path:
    """Write folder/manifest.sig: the signature of folder/manifest.json's exact bytes."""
    folder = Path(folder)
    manifest = (folder / MANIFEST).read_bytes()
    signature = private_key.sign(manifest)
    out = folder / SIGNATURE
    out.write_text(json.dumps({"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
                               "signature": base64.b64encode(signature).decode("ascii")}, indent=2) + "\n",
                   encoding="utf-8")
    return out


def verify_bundle(folder: str | Path, public_keys: Sequence) -> str:
    """Check folder/manifest.sig against folder/manifest.json; return the key id that verified it.
    Raises BundleError naming the file and the reason."""
    _, _, InvalidSignature = _crypto()
    folder = Path(folder)
    sig_path, manifest_path = folder / SIGNATURE, folder / MANIFEST
    if not sig_path.is_file():
        raise BundleError(f"{sig_path}: missing; bundles must be signed when a bundle public key is configured "
                          "(python -m predictors.signing sign)")
    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        if doc.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {doc.get('algorithm')!r}, expected {ALGORITHM!r}")
        signature = base64.b64decode(doc["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise BundleError(f"{sig_path}: unreadable signature file: {e}") from e
    try:
        manifest = manifest_path.read_bytes()
    except OSError as e:
        raise BundleError(f"{manifest_path}: cannot read the manifest: {e}") from e
    for key in public_keys:
        try:
            key.verify(signature, manifest)
            return key_id(key)
        except InvalidSignature:
            continue
    raise BundleError(f"{sig_path}: the signature of {MANIFEST} does not verify with any configured public key "
                      f"(trusted key ids: {', '.join(key_id(k) for k in public_keys)}; signed by "
                      f"{doc.get('key_id', 'unknown')}); the manifest was changed after signing or signed by "
                      "another key")


def _bundles(paths: Iterable[str]) -> list[Path]:
    """Bundle folders: each path is a bundle or a folder searched for manifest.json files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / MANIFEST).is_file():
            out.append(p)
        else:
            found = sorted(m.parent for m in p.rglob(MANIFEST))
            if not found:
                raise SystemExit(f"error: {p}: no {MANIFEST} in it or below it")
            out.extend(found)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m predictors.signing", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write an Ed25519 key pair: OUT.key (private, mode 0600) and OUT.pub")
    k.add_argument("--out", required=True, type=Path, help="path prefix of the two files")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    s = sub.add_parser("sign", help="write manifest.sig into each bundle")
    s.add_argument("bundles", nargs="+", help="bundle folders, or folders searched for bundles")
    s.add_argument("--key", required=True, type=Path, help="private key PEM (keygen's OUT.key)")
    v = sub.add_parser("verify", help="check manifest.sig and every file hash of each bundle")
    v.add_argument("bundles", nargs="+", help="bundle folders, or folders searched for bundles")
    v.add_argument("--public-key", required=True, type=Path, help="PEM file with one or more public keys")
    args = p.parse_args(argv)

    if args.command == "keygen":
        private_path, public_path = args.out.with_suffix(".key"), args.out.with_suffix(".pub")
        existing = [str(x) for x in (private_path, public_path) if x.exists()]
        if existing and not args.force:
            print(f"error: {', '.join(existing)} exist(s); use --force to overwrite", file=sys.stderr)
            return 2
        private_pem, public_pem = generate_keypair()
        private_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        os.chmod(private_path, 0o600)
        public_path.write_bytes(public_pem)
        print(f"private key {private_path} (keep it secret), public key {public_path} "
              f"(key id {key_id(load_public_keys(public_path)[0])})")
        return 0
    if args.command == "sign":
        from .bundle import read_manifest, verify_files

        key = load_private_key(args.key.read_bytes())
        for bundle in _bundles(args.bundles):
            try:
                verify_files(bundle, read_manifest(bundle))  # never vouch for files that do not match
            except BundleError as e:
                print(f"error: not signed: {e}", file=sys.stderr)
                return 1
            print(f"signed {sign_bundle(bundle, key)} (key id {key_id(key.public_key())})")
        return 0
    from .bundle import read_manifest, verify_files

    keys = load_public_keys(args.public_key)
    failed = 0
    for bundle in _bundles(args.bundles):
        try:
            kid = verify_bundle(bundle, keys)
            verify_files(bundle, read_manifest(bundle))
            print(f"ok   {bundle} (key id {kid})")
        except BundleError as e:
            failed += 1
            print(f"FAIL {bundle}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
