"""The content-addressed model store: ``<root>/<bundle sha256>/`` holds one extracted, verified bundle.

``<root>/current`` and ``<root>/previous`` are symlinks to entries. :meth:`ModelStore.set_current` swaps them
atomically (a symlink under a temporary name, ``os.replace``, then fsync of the directory), so a power cut leaves
either the old or the new pointer, never none. A bundle enters the store only through :meth:`ModelStore.install`,
which verifies its signature with the fleet's public key and all payload hashes first; the extraction itself is
atomic (temporary directory, then rename).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekit.errors import EdgekitError, SignatureError
from edgekit.fsutil import fsync_dir
from edgekit.hashing import file_sha256, sha256_hex
from edgekit.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

from .errors import ModelStoreError

_SHA = re.compile(r"^[0-9a-f]{64}$")
POINTERS = ("current", "previous")

# The signature code (edgekit.keys, edgekit.bundle → cryptography, ~9 MB resident) is imported only when a bundle
# is installed or verified in this process; see device_agent.verifier for verifying in a short-lived child instead.
PublicKey = Any  # an Ed25519PublicKey, or the path of a PEM public key


def _public_key(pubkey: PublicKey):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edgekit import keys as keys_mod

    return pubkey if isinstance(pubkey, Ed25519PublicKey) else keys_mod.load_public_key(pubkey)


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise ModelStoreError(f"{sha!r} is not a sha256 (64 lowercase hex digits)")
    return sha


@dataclass
class StoreEntry:
    """One installed bundle: ``dir`` holds manifest.json, signature and the payload files."""

    sha256: str
    dir: Path
    manifest: Manifest = field(repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def model_path(self) -> Path:
        return self.dir / self.manifest.model_file

    @functools.cached_property
    def stats_key(self) -> str:
        """The key of this model in :class:`~device_agent.stats.InferenceStats` and telemetry: ``name@version``."""
        return f"{self.name}@{self.version}"

    def model_ref(self) -> dict[str, str]:
        return self.manifest.model_ref(self.sha256)

    def golden(self):
        """(inputs, expected outputs, atol, rtol) of the bundle's golden vectors, or None."""
        return self.manifest.golden_vectors(lambda name: (self.dir / name).read_bytes())

    def verify(self, pubkey: PublicKey) -> None:
        """Check again, on disk and before loading it, what a bundle's reader checks: the signature record (bounded,
        canonical, ed25519 only, naming the fleet key) and signature over the raw manifest bytes first, then the
        manifest (bounded) and every payload hash."""
        verify_entry_dir(self.dir, pubkey, self.sha256[:12])


def verify_entry_dir(entry_dir: Path, pubkey: PublicKey, what: str) -> Manifest:
    """:meth:`StoreEntry.verify` of a store directory; returns its manifest (parsed only after the signature)."""
    from edgekit import keys as keys_mod

    pubkey = _public_key(pubkey)
    try:
        raw = (entry_dir / MANIFEST_NAME).read_bytes()
        raw_sig = (entry_dir / SIGNATURE_NAME).read_bytes()
    except OSError as exc:
        raise ModelStoreError(f"stored model {what} is unreadable ({exc})",
                              hint="remove it and install the bundle again") from exc
    try:
        keys_mod.verify_record(pubkey, raw, keys_mod.parse_record(raw_sig))
    except SignatureError as exc:
        raise SignatureError(f"stored model {what} does not verify against the fleet key: {exc.message}",
                             hint="the store was modified or the fleet key changed; reinstall the bundle") from None
    try:
        manifest = Manifest.parse(raw)
    except EdgekitError as exc:
        raise ModelStoreError(f"stored model {what} has a bad manifest: {exc.message}",
                         hint="remove it and install the bundle again") from exc
    for name, meta in manifest.files.items():
        path = entry_dir / name
        if not path.is_file() or path.stat().st_size != meta.size or file_sha256(path) != meta.sha256:
            raise ModelStoreError(f"stored file {name} of model {what} was modified",
                             hint="remove the entry and install the bundle again")
    return manifest


class ModelStore:
    """Content-addressed store of verified bundles with atomic ``current``/``previous`` pointers."""

    def __init__(self, root: str | os.PathLike, capabilities: Callable[[], Mapping[str, Any]] | None = None):
        """``capabilities`` describes this device (device_agent/capabilities.py); it is asked only for a bundle
        with several payloads (manifest schema 2), whose entry then shows the payload the device runs."""
        self.root = Path(root)
        self._capabilities = capabilities
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    # --- entries ---------------------------------------------------------------------------------------------

    def _dir(self, sha: str) -> Path:
        return self.root / check_sha(sha)

    def has(self, sha: str) -> bool:
        return (self._dir(sha) / MANIFEST_NAME).is_file()

    def get(self, sha: str) -> StoreEntry:
        d = self._dir(sha)
        try:
            raw = (d / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            raise ModelStoreError(f"model {sha[:12]} is not in the store {self.root}") from None
        try:
            manifest = Manifest.parse(raw)
        except EdgekitError as exc:
            raise ModelStoreError(f"stored model {sha[:12]} has a bad manifest: {exc.message}",
                             hint="remove it and install the bundle again") from exc
        if manifest.multi:
            manifest = self._payload_of(manifest)
        return StoreEntry(sha, d, manifest)

    def _payload_of(self, manifest: Manifest) -> Manifest:
        """The view of the payload this device runs (the first one when it can run none: its load then fails)."""
        from edgekit.payloads import choose_payload

        if self._capabilities is None:
            from . import capabilities as caps_mod

            self._capabilities = caps_mod.local
        chosen = choose_payload(manifest.payload_targets, self._capabilities(), manifest.data["schema_version"])
        return manifest.select(chosen) if chosen else manifest

    def entries(self) -> list[StoreEntry]:
        out = []
        for child in sorted(self.root.iterdir()):
            if _SHA.match(child.name) and child.is_dir() and not child.is_symlink():
                try:
                    out.append(self.get(child.name))
                except ModelStoreError:
                    continue
        return out

    def install(self, bundle_path: str | os.PathLike, pubkey: PublicKey) -> StoreEntry:
        """Verify a bundle (signature, hashes, TFLite payload) and extract it under its sha256.

        Idempotent: a bundle whose sha256 is already stored is not copied again.
        """
        if pubkey is None:
            raise SignatureError("a bundle is installed only after its signature verifies",
                                 hint="set fleet_public_key in the agent config")
        sha = file_sha256(bundle_path) if Path(bundle_path).is_file() else None
        with self._lock:
            if sha is not None and self.has(sha):
                return self.get(sha)
            from edgekit.bundle import extract_bundle, read_bundle

            bundle = read_bundle(bundle_path, _public_key(pubkey))
            if not bundle.signature_verified:  # pragma: no cover - read_bundle verifies when given a key
                raise SignatureError("bundle signature was not verified")
            if self.has(bundle.sha256):
                return self.get(bundle.sha256)
            extract_bundle(bundle, self.root / bundle.sha256)
            return self.get(bundle.sha256)

    def install_bytes(self, data: bytes, pubkey: PublicKey) -> StoreEntry:
        sha = sha256_hex(data)
        if self.has(sha):
            return self.get(sha)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".ekb", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.install(tmp, pubkey)
        finally:
            os.unlink(tmp)

    def remove(self, sha: str, *, force: bool = False) -> None:
        """Delete an entry. The current and previous models are refused unless ``force``."""
        with self._lock:
            if not force and sha in (self._pointer("current"), self._pointer("previous")):
                raise ModelStoreError(f"refusing to remove model {sha[:12]}: it is the current or previous model")
            d = self._dir(sha)
            if not d.exists():
                return
            trash = Path(tempfile.mkdtemp(prefix=".trash.", dir=self.root))
            os.rename(d, trash / "entry")
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)
            for name in POINTERS:
                if self._pointer(name) == sha:
                    (self.root / name).unlink(missing_ok=True)
            fsync_dir(self.root)

    def gc(self, keep: tuple[str, ...] = ()) -> list[str]:
        """Remove every entry except current, previous and ``keep``; return the removed sha256s."""
        with self._lock:
            keep_set = {s for s in (self._pointer("current"), self._pointer("previous"), *keep) if s}
            removed = []
            for entry in self.entries():
                if entry.sha256 not in keep_set:
                    self.remove(entry.sha256)
                    removed.append(entry.sha256)
            for child in self.root.iterdir():  # leftovers of interrupted installs
                if child.name.startswith((".trash.", ".incoming.")) or (
                        child.name.startswith(".") and child.name.endswith(".tmp")):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return removed

    # --- pointers --------------------------------------------------------------------------------------------

    def _pointer(self, name: str) -> str | None:
        try:
            target = os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None
        sha = os.path.basename(target.rstrip("/"))
        return sha if _SHA.match(sha) else None

    def _point(self, name: str, sha: str | None) -> None:
        link = self.root / name
        if sha is None:
            link.unlink(missing_ok=True)
            return
        tmp = self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(sha, tmp)
        os.replace(tmp, link)

    def current(self) -> StoreEntry | None:
        sha = self._pointer("current")
        return self.get(sha) if sha and self.has(sha) else None

    def previous(self) -> StoreEntry | None:
        sha = self._pointer("previous")
        return self.get(sha) if sha and self.has(sha) else None

    def set_current(self, sha: str) -> StoreEntry:
        """Point ``current`` at ``sha`` atomically; the old current becomes ``previous``."""
        with self._lock:
            entry = self.get(sha)
            old = self._pointer("current")
            if old == sha:
                return entry
            if old is not None:
                self._point("previous", old)
            self._point("current", sha)
            fsync_dir(self.root)
            return entry

    def set_previous(self, sha: str | None) -> None:
        with self._lock:
            if sha is not None:
                self.get(sha)
            self._point("previous", sha)
            fsync_dir(self.root)

    def rollback(self) -> StoreEntry:
        """Swap current and previous (both pointers stay valid)."""
        with self._lock:
            prev, cur = self._pointer("previous"), self._pointer("current")
            if prev is None or not self.has(prev):
                raise ModelStoreError("there is no previous model to roll back to")
            self._point("current", prev)
            self._point("previous", cur)
            fsync_dir(self.root)
            return self.get(prev)
