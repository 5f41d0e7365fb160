"""Ed25519 signing keys (PEM: PKCS#8 private, SubjectPublicKeyInfo public) and the bundle's signature record.

The record is ``{"alg": "ed25519", "key_id": "<16 hex>", "sig": "<base64>"}`` in one canonical layout
(``json.dumps(record, sort_keys=True)``). :func:`parse_record` accepts only that layout, byte for byte, so that no
byte of the record can change unnoticed; :func:`verify_record` derives the key id from the verifying key and
refuses a record that names another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import jsonlimits
from .errors import FileExistsRefusal, KeyFileError, SignatureError
from .fsutil import atomic_write, create_exclusive

#: the one signature algorithm edgekit signs and verifies
ALGORITHM = "ed25519"
#: a record is about 130 bytes; anything much larger is not one
MAX_RECORD_BYTES = 1024
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_FIELDS = ("alg", "key_id", "sig")
_TAMPERED_HINT = "rebuild the bundle or fetch it again from a trusted source"


def public_path_for(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def generate_keypair(private_path: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair: the private key with mode 0600 and ``<private>.pub``. Never overwrites without force."""
    priv_path = Path(private_path)
    pub_path = public_path_for(priv_path)
    if not force:
        for p in (priv_path, pub_path):
            if p.exists():
                raise FileExistsRefusal(f"{p} already exists; refusing to overwrite a key")
    if not priv_path.parent.is_dir():
        raise KeyFileError(f"directory {priv_path.parent} does not exist", hint="create it first")
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if force:
        atomic_write(priv_path, priv_pem, mode=0o600)
    else:
        create_exclusive(priv_path, priv_pem, mode=0o600)
    atomic_write(pub_path, pub_pem, mode=0o644)
    return priv_path, pub_path


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist",
                           hint="create one with 'edgekit keys generate' or pass the right path") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key",
                           hint="pass the private key written by 'edgekit keys generate'") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key", hint="generate one with 'edgekit keys generate'")
    return key


def load_public_key(path_or_pem: str | os.PathLike | bytes) -> Ed25519PublicKey:
    data = path_or_pem if isinstance(path_or_pem, bytes) else _read(path_or_pem, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError("public key is not a PEM public key",
                           hint="pass the .pub file written by 'edgekit keys generate'") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("public key is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Short fingerprint of a public key: first 16 hex chars of sha256 over its raw bytes."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(key: Ed25519PublicKey, data: bytes, signature: bytes) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError("signature does not verify: wrong key, or the manifest was modified") from None


# --- the signature record -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureRecord:
    alg: str
    key_id: str
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"alg": self.alg, "key_id": self.key_id, "sig": base64.b64encode(self.sig).decode()}

    def encode(self) -> bytes:
        """The canonical bytes: what the writer stores and the only layout :func:`parse_record` accepts."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()


def sign_record(key: Ed25519PrivateKey, message: bytes) -> SignatureRecord:
    return SignatureRecord(ALGORITHM, key_id(key), sign(key, message))


def _malformed(why: str) -> SignatureError:
    return SignatureError(f"bundle signature record is malformed: {why}", hint=_TAMPERED_HINT)


def parse_record(raw: bytes) -> SignatureRecord:
    """Read a signature record (untrusted bytes, bounded); refuse other algorithms by name and any byte that is not
    the canonical layout of what was read."""
    doc = jsonlimits.loads(raw, what="bundle signature record", max_bytes=MAX_RECORD_BYTES, max_depth=1,
                           error=SignatureError, hint=_TAMPERED_HINT)
    if not isinstance(doc, dict):
        raise _malformed("not a JSON object")
    if "alg" in doc and doc["alg"] != ALGORITHM:
        raise SignatureError(f"bundle is signed with algorithm {repr(doc['alg'])[:40]}; edgekit verifies only "
                             f"{ALGORITHM!r} signatures", hint="re-sign the bundle with 'edgekit bundle create'")
    missing = [f for f in _FIELDS if f not in doc]
    extra = sorted(set(doc) - set(_FIELDS))
    if missing or extra:
        raise _malformed(f"missing {', '.join(missing)}" if missing else f"unexpected field {', '.join(extra)}")
    kid, text = doc["key_id"], doc["sig"]
    if not isinstance(kid, str) or not _KEY_ID.match(kid):
        raise _malformed(f"key id {kid!r} is not 16 lowercase hex digits")
    try:
        sig = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        sig = b""
    if len(sig) != 64:
        raise _malformed("sig is not the base64 of a 64-byte Ed25519 signature")
    record = SignatureRecord(ALGORITHM, kid, sig)
    if record.encode() != raw:
        raise SignatureError("bundle signature record is not in canonical form: it was modified after signing",
                             hint=_TAMPERED_HINT)
    return record


def verify_record(pubkey: Ed25519PublicKey, message: bytes, record: SignatureRecord) -> None:
    """Check ``record``'s signature over ``message`` with ``pubkey``, and that the record names that key."""
    given = key_id(pubkey)
    try:
        verify(pubkey, message, record.sig)
    except SignatureError:
        if record.key_id != given:  # the recorded signer tells a wrong key from a tampered manifest
            raise SignatureError(f"bundle was signed by key {record.key_id}, not by the given key {given}",
                                 hint="verify with the public key of the fleet that signed it") from None
        raise SignatureError("manifest does not match its signature: the bundle was tampered with",
                             hint=_TAMPERED_HINT) from None
    if record.key_id != given:
        raise SignatureError(f"bundle signature record names key {record.key_id}, but the signature is by key "
                             f"{given}: the record was modified", hint=_TAMPERED_HINT)
