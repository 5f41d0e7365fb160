"""Errors of the device agent, rooted in the edgekit tree (:mod:`edgekit.errors`)."""

from __future__ import annotations

from edgekit.errors import ConfigError, EdgekitError

__all__ = ["AgentError", "BackendError", "NoBackendError", "DelegateError", "InterpreterLoadError",
           "ModelStoreError", "NoModelError", "RunnerClosedError", "InvalidInputError", "ApiError", "AgentConfigError",
           "InstallError"]


class AgentError(EdgekitError):
    """Base of every error the device agent raises on purpose."""


class BackendError(AgentError):
    """A runtime backend is unknown or cannot be used."""


class NoBackendError(BackendError):
    """No TFLite runtime is installed."""

    default_hint = "install the agent extra: pip install 'edgekit[agent]' (it brings ai-edge-litert)"


class DelegateError(AgentError):
    """A hardware delegate (Edge TPU) cannot be loaded and the policy forbids falling back to the CPU."""

    default_hint = ("install libedgetpu (https://coral.ai/software/) and plug in the accelerator, "
                    "or set runtime.allow_cpu_fallback = true")


class InterpreterLoadError(AgentError):
    """The interpreter refuses the model (unsupported op, bad flatbuffer, missing custom op)."""

    default_hint = "check that the bundle was built for this runtime and target"


class RunnerClosedError(InterpreterLoadError):
    """The runner was unloaded (pushed out by model swaps) before this call reached it; retry on the current one."""

    default_hint = "retry: a newer model is serving"


class ModelStoreError(AgentError):
    """The local model store is missing an entry or cannot be changed as asked."""


class NoModelError(AgentError):
    """No model is loaded yet."""

    default_hint = "install a bundle (model.bundle in the config) or wait for the fleet to send one"


class InvalidInputError(AgentError):
    """An inference request does not match the model's inputs (count, dtype, shape, encoding)."""

    default_hint = "GET /v1/model lists the inputs the model expects"


class ApiError(AgentError):
    """The local inference API answered with an error status."""

    def __init__(self, message: str, *, status: int, hint: str | None = None):
        super().__init__(message, hint=hint, code=f"http_{status}")
        self.status = status


class AgentConfigError(ConfigError):
    """An agent configuration key is invalid; ``key`` names it (e.g. ``mqtt.port``)."""


class InstallError(AgentError):
    """``edgekit agent install`` / ``uninstall`` cannot proceed."""
