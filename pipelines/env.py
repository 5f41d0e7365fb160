"""What every step sees besides its config and inputs: the run, the pipeline file's directory, the fleet."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError


@dataclass
class StepEnv:
    run_id: str
    pipeline: str                  # the pipeline's name
    model_name: str = ""           # the model's name in bundles and in the fleet ([sign] name, else the pipeline's)
    base_dir: Path = Path(".")     # the pipeline file's directory: relative paths and module:function resolve here
    fleet_dir: Path | None = None
    workdir: Path | None = None    # [pipeline] workdir: the step cache, the runs, the budget search's trials
    quiet: bool = True
    step_keys: dict[str, str] = field(default_factory=dict)  # cache keys of the steps that ran before
    strategy: Any = None           # a tf.distribute strategy made before any step ran (multi-worker ``step train``)
    _fleet: Any = None

    def path(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def fleet(self) -> Any:
        """The fleet's :class:`fleet.config.FleetContext` (``[pipeline] fleet``)."""
        if self._fleet is None:
            if self.fleet_dir is None:
                raise SpecError("this step needs a fleet: set [pipeline] fleet = \"DIR\" (or EDGEKIT_FLEET_DIR)")
            from fleet.config import FleetContext

            if not (self.fleet_dir / "fleet.toml").is_file():
                raise SpecError(f"{self.fleet_dir} is not a fleet directory (no fleet.toml)",
                                hint="create one with 'edgekit fleet init' or fix [pipeline] fleet")
            self._fleet = FleetContext.load(self.fleet_dir)
        return self._fleet

    def importable(self) -> None:
        """Make ``module:function`` names resolve from the pipeline file's directory."""
        base = str(self.base_dir)
        if base not in sys.path:
            sys.path.insert(0, base)


def load_function(spec: str, env: StepEnv, what: str):
    """Import ``module:function`` (from the pipeline file's directory); one-line errors for each failure."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise SpecError(f"{what} {spec!r} is not module:function")
    env.importable()
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SpecError(f"{what} {spec!r}: cannot import {module} ({exc})",
                        hint=f"put {module}.py next to the pipeline file or on PYTHONPATH") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise SpecError(f"{what} {spec!r}: {module} has no function {name}")
    return fn


def module_file(spec: str, env: StepEnv) -> Path | None:
    """The source file of ``module:function`` without importing it (for cache keys)."""
    import importlib.util

    env.importable()
    try:
        found = importlib.util.find_spec(spec.partition(":")[0])
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin else None
