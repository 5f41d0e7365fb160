"""``optimize``: a recipe chain through ``converters.optimize`` (the library call behind ``edgekit optimize``), or a
budget search (:func:`budget_search`, the hook for ``converters.optimize.search``). Ends like ``convert``: a
measured ``.tflite`` and its report card."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Data, KerasModel, TFLiteModel
from ..env import StepEnv
from ..errors import BudgetSearchUnavailableError

NAME = "optimize"
PRODUCES = "tflite"
CONSUMES = {"data": "data", "model": "keras"}
OPTIONAL: dict[str, str] = {}
SEARCH_MODULE = "converters.optimize.search"


@dataclass
class Config:
    recipe: str | None = None
    budget: str | None = None
    epochs: int = 2
    batch_size: int = 32
    mode: str | None = None
    seed: int = 0
    runs: int = 20

    def validate(self) -> list[tuple[str, str]]:
        if (self.recipe is None) == (self.budget is None):
            return [("recipe", "[optimize] needs exactly one of recipe = \"prune:0.5,qat\" or budget = \"...\"")]
        if self.recipe is not None:
            from converters.optimize.recipes import parse_chain  # pure: no TensorFlow
            from edgekit.errors import EdgekitError

            try:
                parse_chain(self.recipe)
            except EdgekitError as exc:
                return [("recipe", f"[optimize] recipe: {exc.message}")]
        if self.budget is not None:
            from ..budget import BudgetSyntaxError, parse_budget

            try:
                parse_budget(self.budget)
            except BudgetSyntaxError as exc:
                return [("budget", f"[optimize] budget: {exc}")]
        return []


@dataclass(frozen=True)
class Inputs:
    data: Data
    model: KerasModel


def search_available() -> bool:
    try:
        return importlib.util.find_spec(SEARCH_MODULE) is not None
    except ImportError:
        return False


def preflight(cfg: Config, env: StepEnv) -> None:
    if cfg.budget is not None and not search_available():
        raise BudgetSearchUnavailableError()


def budget_search(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> TFLiteModel:
    """The hook for ``[optimize] budget``: runs ``converters.optimize.search`` when this edgekit has it."""
    if not search_available():
        raise BudgetSearchUnavailableError()
    search = importlib.import_module(SEARCH_MODULE)
    run_search = getattr(search, "search_for_pipeline", None)
    if run_search is None:
        raise BudgetSearchUnavailableError()
    result = run_search(model=inp.model.model, budget=cfg.budget, train=inp.data.train, val=inp.data.val,
                        eval=inp.data.test, output=out, name="model", epochs=cfg.epochs, seed=cfg.seed)
    return TFLiteModel(Path(result.files["model"]), Path(result.files["report"]))


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> TFLiteModel:
    if cfg.budget is not None:
        return budget_search(cfg, inp, out, env)
    from converters.optimize import OptimizeOptions, optimize

    assert cfg.recipe is not None  # validate() guarantees one of recipe/budget
    result = optimize(OptimizeOptions(model=inp.model.model, recipe=cfg.recipe, train=str(inp.data.train),
                                      val=str(inp.data.val), eval=str(inp.data.test), epochs=cfg.epochs,
                                      batch_size=cfg.batch_size, mode=cfg.mode, seed=cfg.seed, output=out,
                                      name="model", force=True, runs=cfg.runs))
    return TFLiteModel(Path(result.files["model"]), Path(result.files["report"]))
