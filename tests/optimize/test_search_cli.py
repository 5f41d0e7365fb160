"""Bad input to ``edgekit optimize --budget``: one line on stderr, exit 2, the output directory untouched, and no
TensorFlow loaded (each is refused before any work). Real ``edgekit`` processes, no model needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


@pytest.fixture
def setup(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read before the options are checked")
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "search.json").write_text("{}")
    return model, data, out


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("extra, fragment", [
    (["--budget", "size<=12XB"], "unknown size unit 'xb'"),
    (["--budget", "flash<=1MB"], "unknown budget key 'flash'"),
    (["--budget", "latency_p95<=2"], "needs a unit"),
    (["--budget", "size<=1MB,size<=2MB"], "given twice"),
    (["--budget", "size<120KB"], "expected KEY<=VALUE"),
    (["--budget", ""], "empty --budget"),
    (["--budget", "size<=1MB", "--recipe", "qat"], "either --recipe"),
    ([], "either --recipe"),
    (["--budget", "size<=1MB", "--mode", "fp16"], "--mode cannot be combined with --budget"),
    (["--recipe", "qat", "--max-trials", "3"], "apply to --budget"),
    (["--budget", "size<=1MB", "--time-limit", "soon"], "invalid --time-limit"),
    (["--budget", "size<=1MB", "--time-limit", "0"], "--time-limit 0 starts no trial at all"),
])
def test_bad_budget_is_one_line_exit_2_and_leaves_output_untouched(setup, extra, fragment):
    model, data, out = setup
    before = snapshot(out)
    code = ("import sys, runpy; sys.argv = ['edgekit'] + sys.argv[1:]; from edgekit.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    tf = 'tensorflow' in sys.modules\n"
            "    print('TF' if tf else 'noTF', file=sys.stderr); raise")
    proc = subprocess.run([sys.executable, "-c", code, "optimize", str(model), "--train", str(data), "--eval",
                           str(data), "-o", str(out), *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert lines[-1] == "noTF"
    assert len(lines) == 2 and lines[0].startswith("edgekit: error:") and fragment in lines[0], lines
    assert snapshot(out) == before


def test_bad_budget_with_json_prints_one_error_object(setup):
    model, data, out = setup
    proc = subprocess.run([EDGEKIT, "optimize", str(model), "--budget", "gzip<=lots", "--train", str(data),
                           "--eval", str(data), "-o", str(out / "new"), "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == ExitCode.USAGE
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "BudgetError" and "gzip<=lots" in err["message"] and err["exit_code"] == 2
    assert not (out / "new").exists()


def test_existing_outputs_are_refused_before_any_work(setup):
    model, data, out = setup
    before = snapshot(out)
    proc = subprocess.run([EDGEKIT, "optimize", str(model), "--budget", "size<=1MB", "--train", str(data),
                           "--eval", str(data), "-o", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.ERROR
    assert "already holds search.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_a_cache_dir_that_cannot_hold_trials_is_refused_before_any_work(setup):
    """--cache-dir under a file: one line and exit 2 before TensorFlow loads (it was a traceback after the model
    had been read)."""
    model, data, out = setup
    before = snapshot(out)
    code = ("import sys; sys.argv = ['edgekit'] + sys.argv[1:]; from edgekit.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    tf = 'tensorflow' in sys.modules\n"
            "    print('TF' if tf else 'noTF', file=sys.stderr); raise")
    proc = subprocess.run([sys.executable, "-c", code, "optimize", str(model), "--budget", "size<=1MB", "--train",
                           str(data), "--eval", str(data), "-o", str(out / "new"), "--cache-dir",
                           str(data / "cache")], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert lines[-1] == "noTF", lines
    assert len(lines) == 2 and lines[0].startswith("edgekit: error: --cache-dir ") and "cannot hold" in lines[0]
    assert snapshot(out) == before
