"""Importing optional dependencies with an install hint instead of a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

# which extra provides which top-level module
EXTRA_OF = {
    "tensorflow": "convert",
    "kfp": "kfp",
    "tf_keras": "convert",
    "tensorflow_model_optimization": "convert",
    "sklearn": "convert",
    "matplotlib": "convert",
    "onnx": "convert",
    "onnx2tf": "convert",
    "onnxruntime": "agent-onnx",
    "ai_edge_litert": "agent",
    "psutil": "agent",
    "paho": "agent",
    "sqlalchemy": "fleet",
    "alembic": "fleet",
    "psycopg": "fleet",
    "plotext": "fleet",
    "aiomqtt": "fleet",
    "starlette": "fleet",
    "uvicorn": "fleet",
    "argon2": "fleet",
    "prometheus_client": "fleet",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or module).split(".")[0]
        if top != module.split(".")[0] and top not in EXTRA_OF:
            raise  # a genuine bug inside an installed package, not a missing extra
        raise MissingExtraError(extra or EXTRA_OF.get(top, "all"), exc.name or module) from exc


def missing_extra_for(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """Map an import failure of a third-party module to the extra that provides it (None for our own modules)."""
    top = (exc.name or "").split(".")[0]
    if top in EXTRA_OF:
        return MissingExtraError(EXTRA_OF[top], exc.name or top)
    return None
