"""Run a conversion in a child process, so that a crash inside TensorFlow or LiteRT is reported, not suffered.

TensorFlow's converter can kill the process that calls it (a segfault in the int8 calibrator on Embedding+LSTM/GRU
models, for one): no Python handler survives that. So ``edgekit convert`` runs the whole conversion in a child that
imports TensorFlow itself; the parent never imports it and only waits. The child is a fork when TensorFlow is not
loaded here (the CLI: a few milliseconds), else a fresh ``python -m converters.isolation DIR`` (a library caller
that has used TensorFlow already, where a fork would abort: an interpreter start and the imports, ~0.5 s).
The child writes its result (report card, model) or its error into DIR, and the name of the step it is in, so that
a child killed by a signal becomes a :class:`ConverterCrashed` naming the step, the mode and what to try. The output
directory is written only by the child's last step (staged, then moved), so a crash leaves it as it was.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

from .errors import ConversionError, ConverterCrashed
from .pipeline import ConvertOptions, Result

_ROOT = str(Path(__file__).resolve().parents[1])
LOADING = "load the model"
CALIBRATED_MODES = ("int8", "int16x8")


def crash_error(mode: str, step: str, returncode: int) -> ConverterCrashed:
    """What a child killed by signal ``-returncode`` during ``step`` means, and what to try (pure)."""
    try:
        sig = signal.Signals(-returncode).name
    except ValueError:
        sig = f"signal {-returncode}"
    where = f"exit {128 - returncode}"
    if step.startswith("convert"):
        what = f"TensorFlow's converter crashed ({sig}, {where}) converting the model to {mode}"
    else:
        what = f"the conversion process crashed ({sig}, {where}) in step '{step}' of mode {mode}"
    if "fallback" in step:
        hint = "run without --max-accuracy-drop, or try --mode dynamic (int8 weights, float activations)"
    elif mode in CALIBRATED_MODES:
        hint = ("try --mode dynamic (int8 weights, float activations, no calibration), which converts models whose "
                "calibration crashes TensorFlow (e.g. Embedding+LSTM/GRU), or --mode fp16")
    elif mode == "dynamic":
        hint = "try --mode fp16 or fp32"
    else:
        hint = "the crash is inside TensorFlow: check that the model runs in TensorFlow with a batch of 1"
    return ConverterCrashed(what, hint=hint)


def convert_isolated(opts: ConvertOptions, progress: bool = False, start: str | None = None) -> Result:
    """:func:`converters.pipeline.convert` in a child process; its errors are raised here as they were there.

    ``start`` is ``fork`` or ``spawn``; by default a fork unless TensorFlow is loaded in this process."""
    work = Path(tempfile.mkdtemp(prefix="edgekit-convert-"))
    try:
        request = {f.name: _plain(getattr(opts, f.name)) for f in dataclasses.fields(opts)}
        (work / "request.json").write_text(json.dumps({"options": request, "progress": progress,
                                                       "parent": os.getpid()}))
        (work / "step").write_text(LOADING)
        if start is None:
            start = "spawn" if "tensorflow" in sys.modules else "fork"
        returncode = _fork(work) if start == "fork" else _spawn(work)
        if (work / "error.json").exists():
            raise _rebuild(json.loads((work / "error.json").read_text()))
        if returncode < 0:
            raise crash_error(_mode_name(opts), (work / "step").read_text(), returncode)
        if returncode != 0 or not (work / "result.json").exists():
            raise ConversionError(f"the conversion process failed with exit status {returncode}",
                                  hint="its message is above")
        doc = json.loads((work / "result.json").read_text())
        return Result(doc["report"], (work / "model.tflite").read_bytes(),
                      files={k: Path(v) for k, v in doc["files"].items()}, budget_met=doc["budget_met"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spawn(work: Path) -> int:
    """A fresh interpreter: always safe, and needed where TensorFlow is already loaded (a fork of a process where
    it has converted aborts). stdout is not the child's (the report is printed here); stderr is shared."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "converters.isolation", str(work)], env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode


def _fork(work: Path) -> int:
    """A fork of this process, which has not loaded TensorFlow (the CLI never does): the child imports it fresh,
    and saves the interpreter start and imports a spawned child would pay again (measured ~0.5 s)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run, and leave without unwinding the parent's stack or its atexit handlers
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            code = _child(work)
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
            code = 130
        except BaseException:  # noqa: BLE001 - a bug: print it as an uncaught exception would be, then exit 1
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        os.waitpid(pid, 0)  # the child got the same Ctrl-C; let it leave before its work directory goes
        raise
    return os.waitstatus_to_exitcode(status)


def _mode_name(opts: ConvertOptions) -> str:
    from .modes import TARGETS

    return str(opts.mode or getattr(TARGETS.get(opts.target), "default_mode", "?"))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _rebuild(doc: dict[str, Any]) -> EdgekitError:
    """The child's error as the same class (message, hint, code and exit status as the child had them)."""
    cls: type[EdgekitError] = EdgekitError
    try:
        found = getattr(importlib.import_module(doc["module"]), doc["qualname"])
        if isinstance(found, type) and issubclass(found, EdgekitError):
            cls = found
    except (ImportError, AttributeError):
        pass
    exc = cls.__new__(cls)  # not cls(...): subclasses take other arguments; the fields are set as the root sets them
    EdgekitError.__init__(exc, doc["message"], hint=doc["hint"], code=doc["code"])
    exc.exit_code = doc["exit_code"]
    return exc


class _Steps:
    """A progress sink that records the name of each step in a file before the step starts (then forwards)."""

    def __init__(self, path: Path, inner=None):
        self.path = path
        self.inner = inner

    def add_task(self, label, total=None, **kw):
        self.path.write_text(str(label))
        return self.inner.add_task(label, total=total, **kw) if self.inner is not None else 0

    def update(self, *a, **kw):
        if self.inner is not None:
            self.inner.update(*a, **kw)

    def advance(self, *a, **kw):
        if self.inner is not None:
            self.inner.advance(*a, **kw)


def _die_with_parent(parent: int) -> None:
    """Linux: end this child when the command that waits for it is killed, instead of converting on, orphaned, and
    writing the output after the command has gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed parent
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _child(work: Path) -> int:
    from . import pipeline

    request = json.loads((work / "request.json").read_text())
    _die_with_parent(int(request["parent"]))
    options = request["options"]
    if options.get("expected_range") is not None:
        options["expected_range"] = tuple(options["expected_range"])
    try:
        with pipeline.progress_bars(request["progress"]) as bars:
            result = pipeline.convert(ConvertOptions(**options), _Steps(work / "step", bars))
    except ModuleNotFoundError as exc:  # a missing extra, as the CLI's error boundary would map it
        from edgekit.extras import missing_extra_for

        mapped = missing_extra_for(exc)
        if mapped is None:
            raise
        return _write_error(work, mapped)
    except EdgekitError as exc:
        return _write_error(work, exc)
    (work / "model.tflite").write_bytes(result.model_bytes)
    (work / "result.json").write_text(json.dumps(
        {"report": result.report, "files": {k: str(v) for k, v in result.files.items()},
         "budget_met": result.budget_met}, default=str))
    return 0


def _write_error(work: Path, exc: EdgekitError) -> int:
    doc = {"module": type(exc).__module__, "qualname": type(exc).__qualname__, "message": exc.message,
           "hint": exc.hint, "code": exc.code, "exit_code": int(exc.exit_code)}
    (work / "error.json").write_text(json.dumps(doc))
    return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
