"""``convert``: the model through ``converters.pipeline.convert`` (``edgekit convert``), calibrated on the training
split and measured on the test split. A missed ``max_accuracy_drop`` keeps the converter's exit 4."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Data, KerasModel, TFLiteModel
from ..env import StepEnv

NAME = "convert"
PRODUCES = "tflite"
CONSUMES = {"data": "data", "model": "keras"}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    mode: str | None = None
    io: str | None = None
    target: str = "cpu"
    calibration_samples: int = 200
    max_accuracy_drop: float | None = None
    max_float_layers: int = 8
    runs: int = 20

    def validate(self) -> list[tuple[str, str]]:
        from converters.modes import resolve
        from edgekit.errors import EdgekitError

        try:
            resolve(self.target, self.mode, self.io)
        except EdgekitError as exc:
            return [("mode", f"[convert] {exc.message}")]
        return []


@dataclass(frozen=True)
class Inputs:
    data: Data
    model: KerasModel


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> TFLiteModel:
    from converters.pipeline import ConvertOptions, convert

    result = convert(ConvertOptions(model=inp.model.model, output=out, mode=cfg.mode, io=cfg.io, target=cfg.target,
                                    calibration=str(inp.data.train), calibration_samples=cfg.calibration_samples,
                                    eval=str(inp.data.test), max_accuracy_drop=cfg.max_accuracy_drop,
                                    max_float_layers=cfg.max_float_layers, runs=cfg.runs, name="model",
                                    force=True))
    return TFLiteModel(Path(result.files["model"]), Path(result.files["report"]))
