"""The ONNX Runtime backend: runs a bundle's ONNX payload (target ``gpu``) next to LiteRT, without TensorFlow.

onnxruntime is imported only when such a model is loaded (or the device's execution providers are asked for), never
when the agent starts: a device without it (``pip install 'edgekit[agent]'``) starts as fast and as small as before.
Execution providers come from the device, in the order TensorRT → CUDA → CPU (:func:`choose_providers`, pure):
``onnxruntime.get_available_providers()`` says which of them the installed wheel carries. On a Jetson the GPU wheels
come from NVIDIA (JetPack), not from the package registry (docs/agent.md).

:class:`OrtRunner` has the interface of :class:`device_agent.runtime.Runner` (``inputs``, ``outputs``, ``invoke``,
``describe``, ``close``), so the golden self-test, probation, latency telemetry and rollback use it unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BackendError, InterpreterLoadError, InvalidInputError, RunnerClosedError

NAME = "onnxruntime"
MODULE = "onnxruntime"
PACKAGE_HINT = ("install it with: pip install 'edgekit[agent-onnx]' (CPU); on a Jetson, NVIDIA's onnxruntime-gpu "
                "wheel for its JetPack (docs/agent.md)")
# the order in which execution providers are preferred (fastest first); CPU is always the last resort
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"

# ONNX tensor type names as onnxruntime reports them → numpy dtypes
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def available() -> bool:
    """True when onnxruntime can be found (without importing it)."""
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):
        return False


def _module() -> Any:
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:
        raise BackendError("the ONNX Runtime backend is not installed (cannot import onnxruntime)",
                           hint=PACKAGE_HINT) from exc


def choose_providers(available_providers: Sequence[str], allowed: Sequence[str] | None = None) -> list[str]:
    """The execution providers to use, best first: those of :data:`PROVIDER_ORDER` the device has (and the config
    allows, when ``allowed`` is given), always ending with the CPU. Pure."""
    have = set(available_providers)
    keep = set(allowed) if allowed is not None else set(PROVIDER_ORDER)
    chosen = [p for p in PROVIDER_ORDER if p in have and p in keep and p != CPU]
    return [*chosen, CPU]


def provider_options(providers: Sequence[str]) -> list[Any]:
    """What to hand ``InferenceSession(providers=...)``: TensorRT with fp16 enabled (the golden tolerance of a gpu
    payload made by ``edgekit convert`` allows fp16), the others with their defaults. Pure."""
    out: list[Any] = []
    for p in providers:
        out.append((p, {"trt_fp16_enable": True}) if p == PROVIDER_ORDER[0] else p)
    return out


def has_gpu(available_providers: Sequence[str]) -> bool:
    """Whether a GPU execution provider is present (what target ``gpu`` needs to be worth running). Pure."""
    return any(p in available_providers for p in PROVIDER_ORDER if p != CPU)


def device_providers() -> list[str]:
    """``onnxruntime.get_available_providers()`` of this device (imports onnxruntime); [] when it is absent."""
    if not available():
        return []
    return list(_module().get_available_providers())


def _specs(args) -> list:
    from .runtime import TensorSpec

    out = []
    for i, a in enumerate(args):
        dtype = np.dtype(_ORT_DTYPES.get(a.type, "float32"))
        shape = tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in a.shape)  # a symbolic batch runs as 1
        out.append(TensorSpec(str(a.name), i, dtype, shape))
    return out


class OrtRunner:
    """One onnxruntime session. ``invoke`` is serialised by a lock, like :class:`device_agent.runtime.Runner`."""

    def __init__(self, session: Any, *, threads: int = 1, target: str = "gpu", providers: Sequence[str] = ()):
        self.session = session
        self.backend = NAME
        self.target = target
        self.threads = threads
        self.delegates: list[str] = []
        self.providers = list(providers)
        self.cpu_fallback = not has_gpu(self.providers)
        self.inputs = _specs(session.get_inputs())
        self.outputs = _specs(session.get_outputs())
        self._names = [s.name for s in self.inputs]
        self._in = [(s.dtype, s.shape) for s in self.inputs]
        self._one = self._names[0] if len(self._names) == 1 else None
        self._run = session.run
        self._lock = threading.Lock()
        self.closed = False

    def check_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        if len(inputs) != len(self.inputs):
            raise InvalidInputError(f"the model takes {len(self.inputs)} input(s), got {len(inputs)}")
        for spec, arr in zip(self.inputs, inputs):
            if arr.dtype != spec.dtype:
                raise InvalidInputError(f"input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
            if tuple(arr.shape) != spec.shape:
                raise InvalidInputError(
                    f"input {spec.name!r} has shape {list(arr.shape)}, the model expects {list(spec.shape)}")

    def invoke(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one inference; inputs must match ``self.inputs`` exactly (dtype and shape). Outputs are new arrays."""
        one = self._one
        if one is not None and len(inputs) == 1:
            arr = inputs[0]
            dtype, shape = self._in[0]
            if arr.dtype == dtype and arr.shape == shape:
                with self._lock:
                    if self.closed:
                        raise RunnerClosedError("this model was unloaded")
                    return self._run(None, {one: arr})
        if len(inputs) != len(self._in) or any(a.dtype != d or a.shape != s for (d, s), a in zip(self._in, inputs)):
            self.check_inputs(inputs)
        with self._lock:
            if self.closed:
                raise RunnerClosedError("this model was unloaded")
            return self._run(None, dict(zip(self._names, inputs)))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.target, "threads": self.threads,
                "delegates": list(self.delegates), "execution_providers": list(self.providers),
                "cpu_fallback": self.cpu_fallback,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.session = None
            self._run = _closed


def _closed(*_a, **_k):
    raise RunnerClosedError("this model was unloaded")


def load_ort_runner(model: bytes | str | os.PathLike, *, threads: int = 1, target: str = "gpu",
                    allowed_providers: Sequence[str] | None = None) -> OrtRunner:
    """An onnxruntime session for ``model`` (bytes or an .onnx path) on the best execution providers of the device.

    A missing onnxruntime is a :class:`BackendError` with what to install; a model it cannot load is an
    :class:`InterpreterLoadError` (the self-test turns both into ``incompatible_model``).
    """
    ort = _module()
    providers = choose_providers(ort.get_available_providers(), allowed_providers)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not isinstance(model, (bytes, bytearray, memoryview)):
        path = Path(model)
        if not path.is_file():
            raise InterpreterLoadError(f"model file {path} does not exist")
        model = path.read_bytes()
    try:
        session = ort.InferenceSession(bytes(model), opts, providers=provider_options(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InterpreterLoadError(f"onnxruntime cannot load the model: {first}") from exc
    return OrtRunner(session, threads=threads, target=target, providers=session.get_providers())
