"""The pipeline's errors, rooted in :mod:`edgekit.errors`.

Bad input found before any step runs is a :class:`SpecError` (exit 2); a step that fails is a
:class:`StepFailedError` naming the step (exit 7); a model the gate does not bless is :class:`GateFailedError`
(exit 6); a budget the search cannot meet keeps the converter's exit 4 (:class:`BudgetNotMetError`).
"""

from __future__ import annotations

from edgekit.errors import EdgekitError, ExitCode, UsageError


class PipelineError(EdgekitError):
    """Base of every pipeline error."""


class SpecError(UsageError):
    """The pipeline file is wrong: unknown step or key (with its line), a cycle, a missing data path, a target
    matching no device. Raised before any step runs."""

    def __init__(self, message: str, *, line: int | None = None, path: str | None = None, hint: str | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else (f"line {line}: " if line else ""))
        super().__init__(where + message, hint=hint or "fix the pipeline file (see docs/pipeline.md)",
                         code="pipeline_spec")
        self.line = line


class StepFailedError(PipelineError):
    """A step raised; the run stops there and no step after it runs."""

    exit_code = ExitCode.STEP_FAILED

    def __init__(self, step: str, cause: str, hint: str | None = None):
        super().__init__(f"step {step} failed: {cause}",
                         hint=hint or f"fix the cause, then run again (steps before {step} come from the cache)",
                         code="step_failed")
        self.step = step


class GateFailedError(PipelineError):
    """The gate did not bless the model: a normal outcome with its own exit code; nothing was published."""

    exit_code = ExitCode.GATE_FAILED

    def __init__(self, failed: list[str], run_id: str = "RUN"):
        super().__init__(f"gate: model not blessed ({'; '.join(failed)}); nothing was signed, published or "
                         "rolled out", hint=f"see 'edgekit pipeline show {run_id}' for every check",
                         code="gate_failed")
        self.failed = failed


class BudgetNotMetError(PipelineError):
    """The optimize step's budget search found no candidate within the budget."""

    exit_code = ExitCode.BUDGET_NOT_MET


class RunNotFoundError(PipelineError):
    """``pipeline show RUN`` names no run."""
