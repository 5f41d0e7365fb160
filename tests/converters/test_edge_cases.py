"""Converter edge cases: bad inputs are one-line errors (and JSON errors with --json), hints and reasons are true."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli

from .conftest import run_convert


def invoke(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args), "--quiet"])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "staging" in p.name or "probe" in p.name)


# --- 1: object arrays ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_object_array_calibration_is_one_line(digits, tmp_path, suffix):
    data = tmp_path / f"obj{suffix}"
    objects = np.array([None] * 64, dtype=object)
    if suffix == ".npy":
        np.save(data, objects, allow_pickle=True)
    else:
        np.savez(data, x=objects)
    r = invoke(digits["model"], "--mode", "int8", "--calibration", data, "-o", tmp_path / "out")
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "holds an object array" in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# --- 2: output paths ----------------------------------------------------------------------------------------------


def test_output_under_a_file_says_it_is_a_file(digits, tmp_path):
    (tmp_path / "some_file").write_text("keep")
    r = invoke(digits["model"], "-o", tmp_path / "some_file" / "out", "--no-eval")
    assert r.exit_code == 2, r.output
    assert "is a file, not a directory" in r.output and "does not exist" not in r.output
    assert (tmp_path / "some_file").read_text() == "keep"


@pytest.mark.parametrize("out", ["/proc/x", "/proc", "/sys/kernel/x"])
def test_unwritable_output_is_refused_before_any_work(tmp_path, out):
    # the model is not even loadable: the refusal must come first, before loading and converting
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    r = invoke(tmp_path / "bad.h5", "-o", out)
    assert r.exit_code == 2, r.output
    assert "cannot write to" in r.output and "writable --output" in r.output
    assert len(r.output.strip().splitlines()) == 1


# --- 10: --json errors, report outputs, exit codes, warnings ------------------------------------------------------


def test_json_error_object_on_stdout(tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "nope.keras"), "--json", "--quiet"])
    assert r.exit_code == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "ModelLoadError" and "does not exist" in err["message"] and err["hint"]
    assert err["exit_code"] == 1


@pytest.mark.parametrize("args", [
    ["edgetpu", "check", "{missing}", "--json"],
    ["bundle", "inspect", "{missing}", "--json"],
    ["agent", "status", "--config", "{missing}", "--json"],
    ["convert", "{missing}", "--mode", "nonsense", "--json"],
])
def test_json_error_for_every_command(tmp_path, args):
    args = [a.replace("{missing}", str(tmp_path / "missing.bin")) for a in args]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0
    err = json.loads(r.stdout)["error"]
    assert set(err) == {"code", "message", "hint", "exit_code"} and err["message"] and err["exit_code"] == r.exit_code


def test_edgetpu_fp16_is_a_bad_option_combination(digits, tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(digits["model"]), "--target", "edgetpu", "--mode", "fp16",
                                 "--json", "--quiet"])
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["code"] == "TargetOptionError"


def test_report_outputs_keyed_as_documented(digits, tmp_path, session_key):
    out = tmp_path / "out"
    res = run_convert(model=digits["model"], output=out, evaluate=False, key=session_key[0], version="1.0.0")
    written = json.loads((out / "report.json").read_text())
    expected = {"model": str(out / "digits.tflite"), "report": str(out / "report.json"),
                "bundle": str(out / "digits-1.0.0.ekb")}
    assert written["outputs"] == expected and res.report["outputs"] == expected
    assert all(Path(v).is_file() for v in expected.values())
    assert set(res.files) == {"model", "report", "bundle"}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report-card.md").read_text()
    assert "| `outputs` | object | paths written: `model`, `report`, `bundle`" in doc


def test_no_eval_warning_does_not_ask_for_given_calibration(digits, tmp_path):
    res = run_convert(model=digits["model"], mode="int8", calibration=digits["calibration"], evaluate=False)
    assert any("--no-eval" in w for w in res.report["warnings"])
    assert not any("pass --eval or --calibration" in w for w in res.report["warnings"])
