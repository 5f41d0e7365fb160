"""Which payload of a bundle a device runs: pure functions shared by the device agent and the fleet, so that what
the fleet plans is what the device does.

A device describes itself in its birth certificate (``state.runtime.capabilities``): the TFLite runtimes and ONNX
Runtime it has, the delegates that load (``edgetpu``), onnxruntime's execution providers, whether its policy lets a
model run on the CPU when its accelerator is missing, and which manifest schema versions it reads. From that,
:func:`device_targets` ranks the targets it can run, best first, and :func:`choose_payload` picks the first of them
that the bundle has.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: what an agent that does not report capabilities (before schema 2) can run: single-payload bundles on LiteRT
LEGACY_CAPABILITIES: Mapping[str, Any] = {"runtimes": ["ai-edge-litert"], "delegates": [], "execution_providers": [],
                                           "allow_cpu_fallback": False, "bundle_schemas": [1]}


def device_targets(caps: Mapping[str, Any]) -> list[str]:
    """The targets a device can run, best first: an accelerator it has, then the CPU, then (when its policy allows
    the CPU fallback) a gpu model on onnxruntime's CPU provider, and an edgetpu model without its delegate."""
    runtimes = set(caps.get("runtimes") or [])
    tflite = bool(runtimes - {"onnxruntime"})
    ort = "onnxruntime" in runtimes
    gpu = ort and any(p in (caps.get("execution_providers") or []) for p in GPU_PROVIDERS)
    fallback = bool(caps.get("allow_cpu_fallback"))
    out = []
    if tflite and "edgetpu" in (caps.get("delegates") or []):
        out.append("edgetpu")
    if gpu:
        out.append("gpu")
    if tflite:
        out.append("cpu")
    if fallback and ort and not gpu:
        out.append("gpu")
    if fallback and tflite and "edgetpu" not in out:
        out.append("edgetpu")
    return out


def choose_payload(bundle_targets: Sequence[str], caps: Mapping[str, Any], schema_version: int = 1) -> str | None:
    """The payload a device runs: the first of its :func:`device_targets` the bundle has; None when it can run none
    (or cannot read the bundle's manifest schema)."""
    if schema_version not in (caps.get("bundle_schemas") or [1]):
        return None
    have = set(bundle_targets)
    return next((t for t in device_targets(caps) if t in have), None)


def why_none(bundle_targets: Sequence[str], caps: Mapping[str, Any], schema_version: int = 1) -> str:
    """One line saying why :func:`choose_payload` found nothing (for plans and refusals)."""
    schemas = caps.get("bundle_schemas") or [1]
    if schema_version not in schemas:
        return (f"its agent reads manifest schema {', '.join(map(str, schemas))}, the bundle is schema "
                f"{schema_version}: upgrade the agent")
    return (f"the bundle has {', '.join(bundle_targets)} payload(s); the device runs "
            f"{', '.join(device_targets(caps)) or 'nothing'}")
