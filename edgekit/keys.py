"""Ed25519 signing keys (PEM: PKCS#8 private, SubjectPublicKeyInfo public)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import FileExistsRefusal, KeyFileError, SignatureError
from .fsutil import atomic_write, create_exclusive


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
    import hashlib

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
