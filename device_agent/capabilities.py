"""What this device can run: its runtimes, the delegates that load, onnxruntime's execution providers.

``probe()`` answers from a short-lived child process (``python -m device_agent.capabilities``), so that neither
onnxruntime nor a delegate library is loaded into the agent just to describe the device; the agent runs it once in
the background after it starts and republishes its birth certificate with the result. ``local()`` answers in this
process (the self-test child uses it: it is about to load the model anyway).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from typing import Any

from edgekit.manifest import SCHEMA_VERSIONS

from . import ort_runtime
from .runtime import available_backends, edgetpu_library

PROBE_TIMEOUT_S = 30.0


def local(allow_cpu_fallback: bool = False) -> dict[str, Any]:
    runtimes = available_backends() + ([ort_runtime.NAME] if ort_runtime.available() else [])
    delegates = []
    try:
        ctypes.CDLL(edgetpu_library())
        delegates.append("edgetpu")
    except OSError:
        pass
    return {"runtimes": runtimes, "delegates": delegates, "execution_providers": ort_runtime.device_providers(),
            "allow_cpu_fallback": bool(allow_cpu_fallback), "bundle_schemas": list(SCHEMA_VERSIONS)}


def probe(allow_cpu_fallback: bool = False, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """:func:`local` computed in a child process; on any failure, what can be known without it."""
    try:
        res = subprocess.run([sys.executable, "-m", "device_agent.capabilities"], capture_output=True, text=True,
                             timeout=timeout)
        caps = json.loads(res.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        caps = {"runtimes": available_backends() + ([ort_runtime.NAME] if ort_runtime.available() else []),
                "delegates": [], "execution_providers": [], "probe_failed": True,
                "bundle_schemas": list(SCHEMA_VERSIONS)}
    caps["allow_cpu_fallback"] = bool(allow_cpu_fallback)
    return caps


if __name__ == "__main__":
    print(json.dumps(local()))
