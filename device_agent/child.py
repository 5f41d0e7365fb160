"""Short-lived child interpreters: ``python -m <module>`` with a JSON request on stdin and one JSON line on stdout.

The agent runs work there for two reasons: a model that crashes the runtime kills the child, not the agent (the
update's self-test), and the signature code (cryptography, ~10 MB resident) never has to live in the long-running
agent (the verifier at start, verify + install during an update). :func:`start` launches a child that runs while the
caller goes on (:meth:`Child.wait` collects it); :func:`run` does both; :func:`serve` is the child's side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_ROOT = str(Path(__file__).resolve().parents[1])


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

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


@dataclass
class Child:
    proc: subprocess.Popen

    def wait(self, timeout: float) -> ChildResult:
        """Wait for the answer; a child past ``timeout`` is killed (``returncode`` None)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return ChildResult(None, None, "")
        tail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            doc = json.loads(lines[-1]) if lines else None
        except ValueError:
            doc = None
        return ChildResult(doc if isinstance(doc, dict) else None, self.proc.returncode, tail)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate()


def start(module: str, request: dict[str, Any], cwd: str | os.PathLike | None = None) -> Child:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
    assert proc.stdin is not None
    try:  # the request is written now (a few hundred bytes: the pipe holds it), so the child works meanwhile
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except BrokenPipeError:  # the child died at once; wait() reports how
        pass
    proc.stdin = None
    return Child(proc)


def run(module: str, request: dict[str, Any], timeout: float, cwd: str | os.PathLike | None = None) -> ChildResult:
    return start(module, request, cwd).wait(timeout)


def serve(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The child side: read the request, call ``handler(request) -> dict``, print it as one line."""
    request = json.loads(sys.stdin.read())
    result = handler(request)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
