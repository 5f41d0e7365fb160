"""Checks of the ``--train``/``--val``/``--eval`` and ``--teacher``/``--student`` arguments that need no TensorFlow: a
data file, directory or model that does not exist is refused, naming its option, before the model and TensorFlow
load. Pure path checks."""

from __future__ import annotations

from pathlib import Path

from ..calibration import GENERATOR_RE
from ..errors import ModelLoadError
from .errors import TrainingDataError


def check_data_args(specs: dict[str, str | None]) -> None:
    """``{"--train": spec, ...}``: raise :class:`TrainingDataError` for the first spec that names no existing file
    or directory and is not a ``module:function`` generator."""
    for option, spec in specs.items():
        if not spec or Path(spec).exists() or GENERATOR_RE.match(str(spec)):
            continue
        raise TrainingDataError(f"{option} data {spec} does not exist",
                                hint=f"check the path; {option} takes an .npz/.npy file (x, and y labels), an image "
                                     "directory, or module:function")


def check_model_args(paths: dict[str, Path | None]) -> None:
    """``{"--teacher": path, ...}``: raise :class:`ModelLoadError` for the first that does not exist."""
    for option, path in paths.items():
        if path is not None and not Path(path).exists():
            raise ModelLoadError(f"{option} model {path} does not exist",
                                 hint=f"check the path; {option} takes a .keras or .h5 model")
