"""Errors raised by ``edgekit optimize``, rooted at the converter's tree (and so at edgekit.errors)."""

from __future__ import annotations

from typing import Any

from edgekit.errors import ExitCode

from ..errors import CalibrationError, ConversionError, ModelLoadError, OptionError


class RecipeError(OptionError):
    """An unknown recipe, a bad recipe option, or an impossible order."""

    default_hint = "see 'edgekit optimize --help' for the recipes and their order"


class TrainingDataError(CalibrationError):
    """--train/--val/--eval data that cannot train or measure this model (shape, labels, too few samples)."""

    default_hint = "pass an .npz with x (samples) and y (integer labels), an image directory, or module:function"


class ModelShapeError(ModelLoadError):
    """A model that cannot be optimized as given (subclassed, a SavedModel, a teacher that does not fit)."""


class TrainingError(ConversionError):
    """Fine-tuning failed (NaN loss, a tfmot error)."""

    default_hint = "lower --lr, check the training data, or try fewer recipes at once"


class SearchBudgetError(ConversionError):
    """``optimize --budget``: no candidate the search tried meets the budget. ``result`` is the SearchResult."""

    exit_code = ExitCode.BUDGET_NOT_MET
    default_hint = ("loosen the budget, or widen the search (--max-trials, --time-limit, more --epochs); "
                    "search.json lists every trial")
    result: Any = None
