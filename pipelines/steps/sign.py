"""``sign``: the model as a signed bundle (``edgekit.bundle.create_bundle``) with golden vectors from the test split
and a provenance that names the pipeline run, its step keys and its evaluation. Only a blessed model is signed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import Blessing, Bundle, Data, Evaluation, TFLiteModel
from ..env import StepEnv
from ..errors import PipelineError, SpecError

NAME = "sign"
PRODUCES = "bundle"
CONSUMES = {"data": "data", "model": "tflite"}
OPTIONAL = {"evaluation": "evaluation", "blessing": "blessing"}
GOLDEN_COUNT = 3


@dataclass
class Config:
    name: str | None = None      # default: the pipeline's name
    version: str = "0.1.0"
    key: str | None = None       # default: the fleet's signing key
    labels: str | None = None

    def validate(self) -> list[tuple[str, str]]:
        from edgekit.errors import EdgekitError
        from edgekit.manifest import check_name, check_version

        try:
            check_version(self.version)
            if self.name is not None:
                check_name(self.name)
        except EdgekitError as exc:
            return [("version" if "version" in exc.message else "name", f"[sign] {exc.message}")]
        return []


@dataclass(frozen=True)
class Inputs:
    data: Data
    model: TFLiteModel
    evaluation: Evaluation | None = None
    blessing: Blessing | None = None


def key_path(cfg: Config, env: StepEnv) -> Path:
    return env.path(cfg.key) if cfg.key else env.fleet().signing_key_path


def preflight(cfg: Config, env: StepEnv) -> None:
    if not key_path(cfg, env).is_file():
        raise SpecError(f"[sign] key {key_path(cfg, env)} does not exist",
                        hint="make one with 'edgekit keys generate fleet.key' or set [pipeline] fleet")


def external(cfg: Config, env: StepEnv) -> dict:
    from edgekit.hashing import file_sha256

    return {"key_sha256": file_sha256(key_path(cfg, env))}


def golden_inputs(blob: bytes, x: np.ndarray) -> list[np.ndarray]:
    """The first samples of the test split in the model's input type (quantized for an integer input)."""
    from ai_edge_litert.interpreter import Interpreter

    from converters.evaluate import quantize_input

    d = Interpreter(model_content=blob).get_input_details()[0]
    n = min(GOLDEN_COUNT, len(x))  # one batch-1 input per golden vector
    sample = x[:n].astype(np.float32).reshape(n, *[int(v) for v in d["shape"]])
    return [quantize_input(sample, d)]


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> Bundle:
    from converters.report import summary
    from edgekit.bundle import create_bundle

    if inp.blessing is not None and not json.loads(inp.blessing.blessing.read_text())["blessed"]:
        raise PipelineError("the model is not blessed; refusing to sign it")
    name = cfg.name or env.model_name or env.pipeline
    blob = inp.model.model.read_bytes()
    with np.load(inp.data.test, allow_pickle=False) as z:
        x = z["x"]
    card = json.loads(inp.model.report.read_text())
    evaluation = json.loads(inp.evaluation.evaluation.read_text()) if inp.evaluation else None
    provenance = {
        "pipeline": {"name": env.pipeline, "run": env.run_id, "steps": dict(env.step_keys),
                     "evaluation": {k: evaluation.get(k) for k in ("accuracy", "samples", "size", "drop_vs_float_pp")}
                     if evaluation else None},
        "report": summary(card),
        "mode": (card.get("conversion") or {}).get("mode"),
    }
    path = create_bundle(blob, out / f"{name}-{cfg.version}.ekb", name=name, version=cfg.version,
                         key=key_path(cfg, env), labels=env.path(cfg.labels) if cfg.labels else None,
                         golden_inputs=golden_inputs(blob, x), provenance=provenance)
    return Bundle(path)
