"""Verify a stored bundle in a short-lived child process (``python -m device_agent.verifier``, a
:mod:`device_agent.child` step: ``{"dir", "pubkey"}`` in, ``{"ok"}`` or ``{"ok": false, "type", "message",
"hint"}`` out).

The long-running agent then never carries the signature code (cryptography: about 9 MB resident) just to check a
model once at start; the child checks the manifest's Ed25519 signature against the fleet key and every payload
hash. :func:`start` launches it so that it runs while the agent goes on importing and starting;
:meth:`Pending.result` waits and raises the child's error in the parent.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, SignatureError

from . import child
from .errors import ModelStoreError

_ERRORS = {"SignatureError": SignatureError}


@dataclass
class Pending:
    child: child.Child
    what: str

    def result(self, timeout: float = 60.0) -> None:
        res = self.child.wait(timeout)
        if res.timed_out:
            raise ModelStoreError(f"verifying {self.what} took over {timeout:.0f} s")
        doc = res.doc or {}
        if res.returncode == 0 and doc.get("ok"):
            return
        if doc.get("message"):
            cls = _ERRORS.get(doc.get("type", ""), ModelStoreError)
            raise cls(doc["message"], hint=doc.get("hint") or None)
        raise ModelStoreError(f"the verifier of {self.what} failed (exit {res.returncode}: {res.stderr_tail})")

    def cancel(self) -> None:
        self.child.kill()


def start(entry_dir: str | os.PathLike, pubkey_path: str | os.PathLike) -> Pending:
    return Pending(child.start("device_agent.verifier", {"dir": str(entry_dir), "pubkey": str(pubkey_path)}),
                   Path(entry_dir).name[:12])


def verify(entry_dir: str | os.PathLike, pubkey_path: str | os.PathLike) -> None:
    start(entry_dir, pubkey_path).result()


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    from .store import check_sha, verify_entry_dir

    entry_dir = Path(req["dir"])
    try:  # the signature over the raw manifest bytes is checked before the manifest is parsed
        verify_entry_dir(entry_dir, req["pubkey"], check_sha(entry_dir.name)[:12])
    except EdgekitError as exc:
        return {"ok": False, "type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"ok": True}


if __name__ == "__main__":
    sys.exit(child.serve(_handle))
