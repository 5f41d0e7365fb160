"""``optimize``: a recipe chain through ``converters.optimize`` (the library call behind ``edgekit optimize``), or a
budget search (``converters.optimize.search``, the library call behind ``edgekit optimize --budget``). Ends like
``convert``: a measured ``.tflite`` and its report card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Data, KerasModel, TFLiteModel
from ..env import StepEnv

NAME = "optimize"
PRODUCES = "tflite"
CONSUMES = {"data": "data", "model": "keras"}
OPTIONAL: dict[str, str] = {}


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
            from converters.optimize.budget import BudgetError, parse_budget  # pure: no TensorFlow

            try:
                parse_budget(self.budget)
            except BudgetError as exc:
                return [("budget", f"[optimize] budget: {exc.message}")]
        return []


@dataclass(frozen=True)
class Inputs:
    data: Data
    model: KerasModel


def budget_search(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> TFLiteModel:
    """``[optimize] budget``: the budget search of ``edgekit optimize --budget``; its trial cache lives beside the
    pipeline's step cache, so a re-run or a widened budget reuses finished trials."""
    from converters.optimize.search import SearchOptions, search

    assert cfg.budget is not None  # run() calls this only with a budget
    result = search(SearchOptions(model=inp.model.model, budget=cfg.budget, train=str(inp.data.train),
                                  val=str(inp.data.val), eval=str(inp.data.test), output=out, name="model",
                                  force=True, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                                  runs=cfg.runs, cache_dir=env.workdir / "search" if env.workdir else None))
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
