"""Run ``edgetpu_compiler`` when it is on PATH: check its exit code, parse its log, reload its output, and compare
its placement with the precheck's prediction."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .edgetpu_check import Precheck
from .errors import CompilerError

COMPILER = "edgetpu_compiler"
_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*(?::\S+)?)\s+(\d+)\s+(\S.*?)\s*$")
_MAPPED = "Mapped to Edge TPU"


@dataclass
class CompilerLog:
    version: str | None = None
    edgetpu_ops: int | None = None
    cpu_ops: int | None = None
    subgraphs: int | None = None
    on_chip_used: str | None = None
    off_chip_used: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # {op, count, status, mapped}

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            slot = out.setdefault(r["op"], {"edgetpu": 0, "cpu": 0})
            slot["edgetpu" if r["mapped"] else "cpu"] += r["count"]
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "edgetpu_ops": self.edgetpu_ops, "cpu_ops": self.cpu_ops,
                "subgraphs": self.subgraphs, "on_chip_used": self.on_chip_used, "off_chip_used": self.off_chip_used,
                "rows": self.rows}


def _int_after(text: str, label: str) -> int | None:
    m = re.search(re.escape(label) + r"\s*:?\s*(\d+)", text)
    return int(m.group(1)) if m else None


def parse_log(text: str) -> CompilerLog:
    """Parse the compiler's stdout (or its .log file): version, counts and the Operator/Count/Status table. Pure."""
    log = CompilerLog()
    m = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    log.version = m.group(1) if m else None
    log.edgetpu_ops = _int_after(text, "Number of operations that will run on Edge TPU")
    log.cpu_ops = _int_after(text, "Number of operations that will run on CPU")
    log.subgraphs = _int_after(text, "Number of Edge TPU subgraphs")
    m = re.search(r"On-chip memory used for caching model parameters:\s*(\S+)", text)
    log.on_chip_used = m.group(1) if m else None
    m = re.search(r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)", text)
    log.off_chip_used = m.group(1) if m else None
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        if not in_table:
            continue
        row = _ROW.match(line)
        if row:
            status = row.group(3)
            log.rows.append({"op": row.group(1), "count": int(row.group(2)), "status": status,
                             "mapped": status.startswith(_MAPPED)})
    if log.edgetpu_ops is None and log.rows:
        log.edgetpu_ops = sum(r["count"] for r in log.rows if r["mapped"])
        log.cpu_ops = sum(r["count"] for r in log.rows if not r["mapped"])
    return log


def disagreements(pre: Precheck, log: CompilerLog) -> list[str]:
    """Where the compiler's per-op placement differs from the precheck's prediction."""
    predicted = pre.histogram()
    actual = log.counts()
    out = []
    for op in sorted(set(predicted) | set(actual)):
        p = predicted.get(op, {"edgetpu": 0, "cpu": 0})
        a = actual.get(op)
        if a is None:
            if log.rows:
                out.append(f"{op}: predicted {p['edgetpu']} on Edge TPU / {p['cpu']} on CPU, absent from the log")
            continue
        if p != a:
            statuses = sorted({r["status"] for r in log.rows if r["op"] == op and not r["mapped"]})
            why = f" (compiler: {'; '.join(statuses)})" if statuses else ""
            out.append(f"{op}: predicted {p['edgetpu']} on Edge TPU / {p['cpu']} on CPU, compiler placed "
                       f"{a['edgetpu']} / {a['cpu']}{why}")
    return out


def available() -> str | None:
    return shutil.which(COMPILER)


def compile_model(model: bytes, *, timeout: float = 600.0) -> tuple[bytes, CompilerLog, str]:
    """Compile with the real ``edgetpu_compiler``; returns (compiled model bytes, parsed log, raw log)."""
    exe = available()
    if exe is None:
        raise CompilerError("edgetpu_compiler is not on PATH",
                            hint="install it on an x86-64 Debian/Ubuntu host (package edgetpu-compiler)")
    with tempfile.TemporaryDirectory(prefix="edgekit-edgetpu-") as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(model)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        try:
            proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(src)], check=True, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            tail = (exc.stdout or "").strip().splitlines()[-3:] + (exc.stderr or "").strip().splitlines()[-3:]
            raise CompilerError(f"edgetpu_compiler exited with status {exc.returncode}: "
                                f"{' | '.join(tail)[:400]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise CompilerError(f"edgetpu_compiler did not finish within {timeout:.0f} s") from exc
        text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
        log = parse_log(text)
        log_file = out_dir / "model_edgetpu.log"
        if log_file.exists():  # the operation log file holds the same table: prefer it, never count twice
            file_text = log_file.read_text(errors="replace")
            from_file = parse_log(file_text)
            if from_file.rows:
                log.rows = from_file.rows
            text += "\n" + file_text
        compiled = out_dir / "model_edgetpu.tflite"
        if not compiled.is_file():
            raise CompilerError(f"edgetpu_compiler exited 0 but wrote no {compiled.name}")
        return compiled.read_bytes(), log, text


def reload_check(compiled: bytes) -> list[str]:
    """Parse the compiled flatbuffer and load it in LiteRT. Returns notes; raises CompilerError when unusable.

    Without libedgetpu, LiteRT cannot *run* the ``edgetpu-custom-op``; a model whose only problem is that custom op
    still parses and is reported as such.
    """
    from edgekit.errors import NotTFLiteError
    from edgekit.tflite_model import inspect_tflite

    try:
        info = inspect_tflite(compiled)
    except NotTFLiteError as exc:
        raise CompilerError(f"the compiled model is not a valid TFLite flatbuffer: {exc.message}") from exc
    notes = []
    custom = [op for op in info.main.ops if op.opcode.startswith("CUSTOM:")]
    from edgekit.extras import require

    interp_mod = require("ai_edge_litert.interpreter", "agent")
    try:
        interp = interp_mod.Interpreter(model_content=compiled)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if custom:
            notes.append(f"LiteRT loads the compiled model only with the Edge TPU delegate "
                         f"({len(custom)} {custom[0].opcode} op(s)); libedgetpu is not installed here")
        else:
            raise CompilerError(f"LiteRT cannot load the compiled model: {exc}") from exc
    return notes
