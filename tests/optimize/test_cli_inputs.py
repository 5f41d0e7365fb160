"""Bad data arguments to ``edgekit optimize`` (both forms): a missing --train/--val/--eval file is one line naming
its option, exit 1, before TensorFlow loads, and the output directory is untouched. Real ``edgekit`` processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
CODE = ("import sys; sys.argv = ['edgekit'] + sys.argv[1:]; from edgekit.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    tf = 'tensorflow' in sys.modules\n"
        "    print('TF' if tf else 'noTF', file=sys.stderr); raise")


@pytest.mark.parametrize("form", [["--recipe", "prune:0.5"], ["--budget", "size<=1MB"]])
@pytest.mark.parametrize("option", ["--train", "--val", "--eval"])
def test_missing_data_file_names_its_option_before_tensorflow(tmp_path, form, option):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read before the data arguments are checked")
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = {"--train": str(data), "--val": str(data), "--eval": str(data)}
    args[option] = str(tmp_path / "missing.npz")
    proc = subprocess.run([sys.executable, "-c", CODE, "optimize", str(model), *form,
                           *[x for kv in args.items() for x in kv], "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == ExitCode.ERROR, proc.stderr
    assert lines[-1] == "noTF", lines
    assert len(lines) == 2 and lines[0].startswith(f"edgekit: error: {option} data ") and "missing.npz" in lines[0]
    assert "does not exist" in lines[0] and "--calibration" not in lines[0], lines
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("option", ["--teacher", "--student"])
def test_missing_teacher_or_student_names_its_option_before_tensorflow(tmp_path, option):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read before the model arguments are checked")
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CODE, "optimize", str(model), "--recipe", "distill", "--train",
                           str(data), "--eval", str(data), option, str(tmp_path / "gone.keras"), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == ExitCode.ERROR, proc.stderr  # ModelLoadError, as for a missing MODEL
    assert lines[-1] == "noTF", lines
    assert len(lines) == 2 and lines[0].startswith(f"edgekit: error: {option} model ") and "gone.keras" in lines[0]
    assert not out.exists()
