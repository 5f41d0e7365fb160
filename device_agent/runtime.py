"""Runtime backends and the model runner.

A backend is a registered object that knows how to build a TFLite interpreter and load a delegate. They are tried
in registration order by ``backend="auto"``: ai-edge-litert first, tflite-runtime second, and ``tf.lite`` last. The
``tf.lite`` backend exists only for machines that carry TensorFlow anyway; it is imported by module name through
:mod:`importlib` at the moment it is chosen, never when this module is imported, and ``auto`` only reaches it when
neither of the light runtimes is installed.

:class:`Runner` wraps one interpreter. ``invoke`` is serialised by a lock, so one runner can be shared by the threads
of the local API; it copies outputs so callers never see a buffer the next call overwrites.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import (BackendError, DelegateError, InvalidInputError, InterpreterLoadError, NoBackendError,
                     RunnerClosedError)

# --- delegates -------------------------------------------------------------------------------------------------------

EDGETPU_LIBRARY = {"linux": "libedgetpu.so.1", "darwin": "libedgetpu.1.dylib", "win32": "edgetpu.dll"}


def edgetpu_library() -> str:
    return EDGETPU_LIBRARY.get(sys.platform, "libedgetpu.so.1")


@dataclass(frozen=True)
class Target:
    """A bundle target (``manifest.target``): which delegate it needs, if any, and which runtime runs it."""

    name: str
    delegate_library: Callable[[], str] | None = None
    runtime: str = "litert"  # litert (a TFLite backend below) | onnxruntime (device_agent/ort_runtime.py)


TARGETS: dict[str, Target] = {
    "cpu": Target("cpu"),
    "edgetpu": Target("edgetpu", edgetpu_library),
    "gpu": Target("gpu", runtime="onnxruntime"),
}


# --- backends --------------------------------------------------------------------------------------------------------


class Backend:
    """One TFLite runtime. Subclasses name the module that provides ``Interpreter`` and ``load_delegate``."""

    name: str = ""
    module: str = ""
    package_hint: str = ""

    def available(self) -> bool:
        """True when the runtime's module can be found (without importing it)."""
        try:
            return importlib.util.find_spec(self.module.split(".")[0]) is not None
        except (ImportError, ValueError):
            return False

    def _module(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise BackendError(f"runtime backend {self.name!r} is not installed (cannot import {self.module})",
                               hint=self.package_hint) from exc

    def interpreter_class(self) -> Any:
        return self._module().Interpreter

    def load_delegate(self, library: str) -> Any:
        return self._module().load_delegate(library)

    def version(self) -> str:
        top = self.module.split(".")[0]
        mod = sys.modules.get(top)
        return str(getattr(mod, "__version__", "")) if mod else ""


class LiteRTBackend(Backend):
    name = "ai-edge-litert"
    module = "ai_edge_litert.interpreter"
    package_hint = "install it with: pip install ai-edge-litert"

    def version(self) -> str:
        try:
            from importlib.metadata import version
            return version("ai-edge-litert")
        except Exception:  # noqa: BLE001 - metadata is informative only
            return ""


class TFLiteRuntimeBackend(Backend):
    name = "tflite-runtime"
    module = "tflite_runtime.interpreter"
    package_hint = "install it with: pip install tflite-runtime (needs numpy<2)"


class TFLiteBackend(Backend):
    """``tf.lite`` from a full TensorFlow: only for machines that have it; imported by name when chosen."""

    name = "tf.lite"
    module = "tensorflow"
    package_hint = "install TensorFlow, or better the light ai-edge-litert runtime"

    def interpreter_class(self) -> Any:
        return self._module().lite.Interpreter

    def load_delegate(self, library: str) -> Any:
        return self._module().lite.experimental.load_delegate(library)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend; ``auto`` tries backends in registration order."""
    BACKENDS[backend.name] = backend
    return backend


for _b in (LiteRTBackend(), TFLiteRuntimeBackend(), TFLiteBackend()):
    register_backend(_b)


def choose_backend(name: str = "auto") -> Backend:
    if name == "auto":
        for backend in BACKENDS.values():
            if backend.available():
                return backend
        raise NoBackendError("no TFLite runtime is installed (tried " + ", ".join(BACKENDS) + ")")
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown runtime backend {name!r}",
                           hint=f"use auto or one of {', '.join(BACKENDS)}") from None
    if not backend.available():
        raise BackendError(f"runtime backend {name!r} is not installed", hint=backend.package_hint)
    return backend


def available_backends() -> list[str]:
    return [b.name for b in BACKENDS.values() if b.available()]


# --- the runner ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    index: int
    dtype: np.dtype
    shape: tuple[int, ...]
    quantization: tuple[float, int] = (0.0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.name, "shape": list(self.shape),
                "quantization": {"scale": self.quantization[0], "zero_point": self.quantization[1]}}


def _specs(details: list[dict[str, Any]]) -> list[TensorSpec]:
    out = []
    for d in details:
        q = d.get("quantization") or (0.0, 0)
        out.append(TensorSpec(str(d["name"]), int(d["index"]), np.dtype(d["dtype"]),
                              tuple(int(x) for x in d["shape"]), (float(q[0]), int(q[1]))))
    return out


@dataclass
class Runner:
    """A loaded model. ``invoke`` is thread-safe (one lock per runner)."""

    interpreter: Any
    backend: str
    target: str = "cpu"
    threads: int = 1
    delegates: list[str] = field(default_factory=list)
    cpu_fallback: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.inputs: list[TensorSpec] = _specs(self.interpreter.get_input_details())
        self.outputs: list[TensorSpec] = _specs(self.interpreter.get_output_details())
        self._in = [(s.index, s.dtype, s.shape) for s in self.inputs]
        self._out = [s.index for s in self.outputs]
        self._one = ((self._in[0][0], self._in[0][1], self._in[0][2], self._out[0])
                     if len(self._in) == 1 and len(self._out) == 1 else None)
        self.closed = False

    def check_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        if len(inputs) != len(self._in):
            raise InvalidInputError(f"the model takes {len(self._in)} input(s), got {len(inputs)}")
        for spec, arr in zip(self.inputs, inputs):
            if arr.dtype != spec.dtype:
                raise InvalidInputError(f"input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
            if tuple(arr.shape) != spec.shape:
                raise InvalidInputError(
                    f"input {spec.name!r} has shape {list(arr.shape)}, the model expects {list(spec.shape)}")

    def invoke(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one inference; inputs must match ``self.inputs`` exactly (dtype and shape)."""
        one = self._one
        if one is not None and len(inputs) == 1:
            # the common one-input, one-output model: as little Python as possible around invoke (every
            # bytecode here runs with caches the model has just evicted)
            arr = inputs[0]
            index, dtype, shape, out = one
            if arr.shape == shape and arr.dtype == dtype:
                with self._lock:
                    interp = self.interpreter
                    if interp is None:
                        raise RunnerClosedError("this model was unloaded")
                    interp.set_tensor(index, arr)
                    interp.invoke()
                    return [interp.get_tensor(out)]
        ins = self._in
        if len(inputs) != len(ins):
            self.check_inputs(inputs)
        for (_, dtype, shape), arr in zip(ins, inputs):
            if arr.dtype != dtype or arr.shape != shape:
                self.check_inputs(inputs)
        interp = self.interpreter
        with self._lock:
            if self.closed:
                raise RunnerClosedError("this model was unloaded")
            for (index, _, _), arr in zip(ins, inputs):
                interp.set_tensor(index, arr)
            interp.invoke()
            return [interp.get_tensor(i) for i in self._out]  # get_tensor returns a copy

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.target, "threads": self.threads,
                "delegates": list(self.delegates), "cpu_fallback": self.cpu_fallback,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.interpreter = None


def _load_delegate(backend: Backend, library: str, into: list[Any]) -> str | None:
    """Load a delegate into ``into``; return why it failed, or None.

    The library is probed with ctypes first: when it is missing, the runtimes' ``load_delegate`` leaves a half-built
    Delegate whose ``__del__`` raises later, during some unrelated garbage collection (in CPython 3.11 that can even
    break a concurrent ``ast.parse``). No traceback is kept, so nothing holds such an object alive.
    """
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        return str(exc).strip() or "not found"
    try:
        into.append(backend.load_delegate(library))
    except (ValueError, OSError, RuntimeError) as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def load_runner(model: bytes | str | os.PathLike, *, backend: str = "auto", threads: int = 1, target: str = "cpu",
                allow_cpu_fallback: bool = False) -> Runner:
    """Build an interpreter for ``model`` (bytes or a .tflite path) on ``backend`` and allocate its tensors.

    For a target that needs a delegate (``edgetpu``) the delegate library is loaded first; when that fails the
    call raises :class:`DelegateError`, unless ``allow_cpu_fallback`` is set, in which case the model runs on the CPU
    and ``Runner.cpu_fallback`` is True.
    """
    if not isinstance(threads, int) or threads < 1:
        raise BackendError(f"threads must be a positive integer, got {threads!r}")
    tgt = TARGETS.get(target)
    if tgt is None:
        raise BackendError(f"unknown target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    if tgt.runtime == "onnxruntime":
        return _load_onnx(model, threads, target, allow_cpu_fallback)
    be = choose_backend(backend)
    cls = be.interpreter_class()
    delegates: list[Any] = []
    delegate_names: list[str] = []
    fallback = False
    if tgt.delegate_library is not None:
        lib = tgt.delegate_library()
        problem = _load_delegate(be, lib, delegates)
        if problem is None:
            delegate_names.append(lib)
        elif not allow_cpu_fallback:
            raise DelegateError(f"the bundle targets {target} but the delegate {lib} cannot be loaded ({problem})")
        else:
            fallback = True
    kwargs: dict[str, Any] = {"num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    try:
        if isinstance(model, (bytes, bytearray, memoryview)):
            interp = cls(model_content=bytes(model), **kwargs)
        else:
            path = Path(model)
            if not path.is_file():
                raise InterpreterLoadError(f"model file {path} does not exist")
            interp = cls(model_path=str(path), **kwargs)
        interp.allocate_tensors()
    except InterpreterLoadError:
        raise
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InterpreterLoadError(f"the {be.name} interpreter cannot load the model: {first}") from exc
    return Runner(interp, be.name, target, threads, delegate_names, fallback)


def _load_onnx(model, threads: int, target: str, allow_cpu_fallback: bool) -> Any:
    """Target ``gpu``: onnxruntime (imported now, not before) on the device's best execution providers. Without a
    GPU provider the model only runs when the policy allows the CPU, as for a missing Edge TPU delegate."""
    from . import ort_runtime

    runner = ort_runtime.load_ort_runner(model, threads=threads, target=target)
    if runner.cpu_fallback and not allow_cpu_fallback:
        providers = ", ".join(runner.providers)
        runner.close()
        raise DelegateError(f"the bundle targets {target} but onnxruntime has no GPU execution provider here "
                            f"({providers})", hint="install the onnxruntime-gpu build for this device "
                            "(docs/agent.md), or set runtime.allow_cpu_fallback = true")
    return runner
