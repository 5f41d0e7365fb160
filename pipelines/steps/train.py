"""``train``: the user's ``module:function(train, val) -> keras.Model`` (``train`` and ``val`` are ``(x, y)``
tuples; ``[train] params`` are passed as keyword arguments), or fine-tuning an existing ``.keras`` model for
``epochs`` epochs in :func:`pipelines.fit_loop.fine_tune`. Either runs inside a ``tf.distribute`` strategy scope
chosen as ``edgekit optimize`` chooses it (``converters.optimize.strategy``): ``MirroredStrategy`` over the visible
GPUs, else the default strategy, or the ``MultiWorkerMirroredStrategy`` that ``edgekit pipeline step train
--workers`` made before any step ran (``StepEnv.strategy``; fine-tuning only). The model is saved as ``model.keras``
by every worker: only the chief's output directory becomes a cache entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Data, KerasModel
from ..env import StepEnv, load_function, module_file
from ..errors import PipelineError, SpecError

NAME = "train"
PRODUCES = "keras"
CONSUMES = {"data": "data"}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    function: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> list[tuple[str, str]]:
        if (self.function is None) == (self.model is None):
            return [("function", "[train] needs exactly one of function = \"module:function\" (train from scratch) "
                                 "or model = \"base.keras\" (fine-tune)")]
        if self.function is not None and ":" not in self.function:
            return [("function", f"[train] function {self.function!r} is not module:function")]
        if self.epochs < 1 or self.batch_size < 1:
            return [("epochs", "[train] epochs and batch_size must be at least 1")]
        return []


@dataclass(frozen=True)
class Inputs:
    data: Data


def preflight(cfg: Config, env: StepEnv) -> None:
    if cfg.model is not None and not env.path(cfg.model).exists():
        raise SpecError(f"[train] model {cfg.model} does not exist")
    if cfg.function is not None and module_file(cfg.function, env) is None:
        raise SpecError(f"[train] function {cfg.function}: module {cfg.function.partition(':')[0]} not found",
                        hint="put it next to the pipeline file or on PYTHONPATH")


def external(cfg: Config, env: StepEnv) -> dict:
    from edgekit.hashing import file_sha256

    p = env.path(cfg.model) if cfg.model else None
    return {"base_sha256": file_sha256(p)} if p is not None and p.is_file() else {}


def code_files(cfg: Config, env: StepEnv) -> list[Path]:
    f = module_file(cfg.function, env) if cfg.function else None
    return [f] if f else []


def _xy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        return z["x"], (z["y"] if "y" in z.files else None)


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> KerasModel:
    import keras

    from converters.optimize.strategy import make_strategy

    strategy = env.strategy if env.strategy is not None else make_strategy(None)[0]
    keras.utils.set_random_seed(cfg.seed)
    train, val = _xy(inp.data.train), _xy(inp.data.val)
    with strategy.scope():
        model = _train(cfg, train, val, env, strategy)
    model.save(out / "model.keras")
    return KerasModel(out / "model.keras")


def _train(cfg: Config, train: tuple, val: tuple, env: StepEnv, strategy: Any) -> Any:
    import keras

    from ..fit_loop import fine_tune

    if cfg.function is not None:
        fn = load_function(cfg.function, env, "[train] function")
        model = fn(train, val, **cfg.params)
        if not hasattr(model, "save"):
            raise PipelineError(f"{cfg.function} returned {type(model).__name__}, not a keras.Model",
                                hint="return the trained keras.Model")
    else:
        assert cfg.model is not None  # validate(): exactly one of function/model
        model = keras.saving.load_model(env.path(cfg.model))
        if train[1] is None:
            raise PipelineError("fine-tuning needs labels (y) in the data")
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        fine_tune(model, strategy, train[0], train[1], epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    return model
