"""The steps, one module each, in their canonical order. Every module declares what it consumes and produces (artifact
kinds, :mod:`pipelines.artifacts`), its ``Config`` (the TOML section's keys, a dataclass with ``validate()``), its
typed ``Inputs``, and ``run(cfg, inputs, out_dir, env) -> artifact``; optionally ``preflight`` (checks before any
step runs), ``external`` (facts outside the pipeline that belong in the cache key) and ``code_files`` (user code
that belongs in the key). Importing them does not import TensorFlow."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ORDER = ("data", "train", "optimize", "convert", "evaluate", "gate", "sign", "publish", "rollout")


@dataclass(frozen=True)
class StepDef:
    name: str
    module: ModuleType

    @property
    def produces(self) -> str:
        return self.module.PRODUCES

    @property
    def consumes(self) -> dict[str, str]:
        return dict(self.module.CONSUMES)

    @property
    def optional(self) -> dict[str, str]:
        return dict(self.module.OPTIONAL)

    @property
    def config(self) -> type:
        return self.module.Config

    @property
    def main_input(self) -> str | None:
        """The input ``from = "STEP"`` sets: the first one that is not the data."""
        return next((f for f in self.consumes if f != "data"), None)

    @property
    def source(self) -> Path:
        return Path(self.module.__file__ or "")


STEPS: dict[str, StepDef] = {n: StepDef(n, importlib.import_module(f"{__name__}.{n}")) for n in ORDER}
