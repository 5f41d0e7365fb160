"""VERIFYING, in a child process: check the downloaded artifact and install it into the content-addressed store.

``python -m device_agent.update.install`` reads ``{"artifact", "store", "pubkey", "sha256", "size", "expect"}`` and
answers ``{"ok": true}`` or ``{"ok": false, "reason", "message", "hint"}``. :func:`verify_and_install` is the
parent's side and raises :class:`~.errors.UpdateFailed` with the reason code.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from .. import child
from .errors import UpdateFailed
from .machine import Reason


def verify_and_install(artifact: str, store_root: str, pubkey_path: str, *, sha256: str, size: int | None,
                       expect: dict[str, Any] | None, timeout: float = 120.0) -> None:
    res = child.run("device_agent.update.install", {"artifact": str(artifact), "store": str(store_root),
                                                     "pubkey": str(pubkey_path), "sha256": sha256, "size": size,
                                                     "expect": expect or {}}, timeout)
    doc = res.doc
    if doc is None:
        what = f"died by {res.signal_name}" if res.signal_name else (
            "timed out" if res.returncode is None else f"failed (exit {res.returncode}): {res.stderr_tail}")
        raise UpdateFailed(Reason.INTERNAL, f"the verifier {what}")
    if not doc.get("ok"):
        raise UpdateFailed(doc.get("reason") or Reason.BUNDLE_INVALID.value, doc.get("message", "verification failed"),
                           hint=doc.get("hint") or None)


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    from edgekit.errors import EdgekitError

    from ..store import ModelStore
    from .download import verify_artifact

    try:
        verify_artifact(req["artifact"], sha256=req["sha256"], size=req.get("size"), pubkey=req["pubkey"],
                        expect=req.get("expect"))
        entry = ModelStore(req["store"]).install(req["artifact"], req["pubkey"])
    except UpdateFailed as exc:
        return {"ok": False, "reason": exc.reason, "message": exc.message, "hint": exc.hint}
    except EdgekitError as exc:
        return {"ok": False, "reason": Reason.BUNDLE_INVALID.value, "message": exc.message, "hint": exc.hint}
    except OSError as exc:
        reason = Reason.DISK_FULL if exc.errno == errno.ENOSPC else Reason.INTERNAL
        return {"ok": False, "reason": reason.value, "message": f"cannot install the bundle into the store: {exc}"}
    return {"ok": True, "sha256": entry.sha256}


if __name__ == "__main__":
    sys.exit(child.serve(_handle))
