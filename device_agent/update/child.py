"""Running one step of an update in a short-lived child interpreter: ``python -m <module>`` with a JSON request on
stdin and one JSON line on stdout.

Steps run there for two reasons: a model that crashes the runtime kills the child, not the agent (the self-test), and
the signature code (cryptography, ~10 MB resident) never has to live in the long-running agent (verify + install).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class ChildResult:
    doc: dict[str, Any] | None    # the JSON line the child printed, or None
    returncode: int | None         # None: killed after the timeout
    stderr_tail: str

    @property
    def signal_name(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            return signal.Signals(-self.returncode).name
        return None


def run(module: str, request: dict[str, Any], timeout: float, cwd: str | os.PathLike | None = None) -> ChildResult:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return ChildResult(None, None, "")
    tail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        doc = None
    return ChildResult(doc if isinstance(doc, dict) else None, proc.returncode, tail)


def serve(handler) -> int:
    """The child side: read the request, call ``handler(request) -> dict``, print it as one line."""
    request = json.loads(sys.stdin.read())
    result = handler(request)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
