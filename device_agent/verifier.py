"""Verify a stored bundle in a short-lived child process: ``python -m device_agent.verifier DIR PUBKEY``.

The long-running agent then never carries the signature code (cryptography: about 9 MB resident) just to check a
model once at start; the child checks the manifest's Ed25519 signature against the fleet key and every payload
hash, prints one JSON line and exits (0 = verified). :func:`start` launches it so that it runs while the agent
goes on importing and starting; :meth:`Pending.result` waits and raises the child's error in the parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, SignatureError

from .errors import ModelStoreError

_ERRORS = {"SignatureError": SignatureError}


@dataclass
class Pending:
    proc: subprocess.Popen
    what: str

    def result(self, timeout: float = 60.0) -> None:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise ModelStoreError(f"verifying {self.what} took over {timeout:.0f} s") from None
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            doc = json.loads(lines[-1]) if lines else {}
        except ValueError:
            doc = {}
        if self.proc.returncode == 0 and doc.get("ok"):
            return
        if doc.get("message"):
            cls = _ERRORS.get(doc.get("type", ""), ModelStoreError)
            raise cls(doc["message"], hint=doc.get("hint") or None)
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ModelStoreError(f"the verifier of {self.what} failed (exit {self.proc.returncode}: {tail[0]})")


def start(entry_dir: str | os.PathLike, pubkey_path: str | os.PathLike) -> Pending:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "device_agent.verifier", str(entry_dir), str(pubkey_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    return Pending(proc, Path(entry_dir).name[:12])


def verify(entry_dir: str | os.PathLike, pubkey_path: str | os.PathLike) -> None:
    start(entry_dir, pubkey_path).result()


def main(argv: list[str]) -> int:
    from .store import check_sha, verify_entry_dir

    if len(argv) != 2:
        print(json.dumps({"ok": False, "message": "usage: python -m device_agent.verifier DIR PUBKEY"}))
        return 2
    entry_dir = Path(argv[0])
    try:  # the signature over the raw manifest bytes is checked before the manifest is parsed
        verify_entry_dir(entry_dir, argv[1], check_sha(entry_dir.name)[:12])
    except EdgekitError as exc:
        print(json.dumps({"ok": False, "type": type(exc).__name__, "message": exc.message, "hint": exc.hint}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
