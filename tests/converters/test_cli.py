"""The CLI: bad inputs give one-line errors and leave nothing behind; data sources; an end-to-end subprocess run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edgekit.bundle import read_bundle
from edgekit.cli import cli

REPO = Path(__file__).resolve().parents[2]
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def invoke(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args), "--quiet"])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "staging" in p.name)


def test_help_does_not_import_tensorflow():
    code = ("import sys; from edgekit.cli import main\n"
            "try:\n    main(['convert', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO_TF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO_TF"), out.stdout[-500:]
    assert "--max-accuracy-drop" in out.stdout


def test_missing_model(tmp_path):
    r = invoke(tmp_path / "nope.keras", "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert "edgekit: error: model" in r.output and "does not exist" in r.output
    assert not (tmp_path / "out").exists()


def test_unloadable_model(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    r = invoke(tmp_path / "bad.h5", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "cannot load" in r.output and "h5" in r.output
    assert not (tmp_path / "out").exists()


def test_int8_needs_calibration(digits, tmp_path):
    r = invoke(digits["model"], "--mode", "int8", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "mode int8 needs calibration data" in r.output and "--calibration" in r.output


def test_wrong_calibration_shape(digits, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.random.default_rng(0).random((32, 8, 8), dtype=np.float32))
    r = invoke(digits["model"], "--mode", "int8", "--calibration", tmp_path / "bad.npz", "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert "samples have shape [8, 8], the model expects [8, 8, 1]" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_nan_calibration(digits, tmp_path):
    x = np.load(digits["calibration"])["x"].copy()
    x[3, 2, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    r = invoke(digits["model"], "--mode", "int8", "--calibration", tmp_path / "nan.npz", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "NaN/inf" in r.output and "sample 3" in r.output
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_and_kept(digits, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "digits.tflite").write_bytes(b"precious")
    r = invoke(digits["model"], "-o", out)
    assert r.exit_code == 1 and "already holds digits.tflite" in r.output and "--force" in r.output
    assert (out / "digits.tflite").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["digits.tflite"] and leftovers(tmp_path) == []
    r = invoke(digits["model"], "-o", out, "--force", "--runs", "0")
    assert r.exit_code == 0, r.output
    assert (out / "digits.tflite").read_bytes()[4:8] == b"TFL3"


def test_output_path_is_a_file(digits, tmp_path):
    (tmp_path / "out").write_text("x")
    r = invoke(digits["model"], "-o", tmp_path / "out")
    assert r.exit_code == 1 and "is not a directory" in r.output


def test_bad_option_combination(digits):
    r = invoke(digits["model"], "--mode", "fp16", "--io", "int8")
    assert r.exit_code == 2 and "--io int8 does not apply to mode fp16" in r.output


def test_no_key_says_how_to_make_one(digits, tmp_path):
    r = invoke(digits["model"], "--mode", "dynamic", "-o", tmp_path / "out", "--runs", "0")
    assert r.exit_code == 0, r.output
    assert "edgekit keys generate" in r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["digits.tflite", "report.json"]


def test_image_directory_calibration_warns_on_raw_pixels(digits, tmp_path):
    from PIL import Image

    x = np.load(digits["calibration"])["x"][:40]
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i, im in enumerate(x):
        big = Image.fromarray((im[..., 0] * 255).astype(np.uint8), mode="L").resize((16, 16), Image.NEAREST)
        big.convert("RGB").save(img_dir / f"{i:03d}.png")  # 16x16 RGB files feed an 8x8x1 input
    r = invoke(digits["model"], "--mode", "int8", "--calibration", img_dir, "--json", "--runs", "0")
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert card["calibration"]["kind"] == "images"
    assert any("0..255" in w for w in card["warnings"])
    r = invoke(digits["model"], "--mode", "int8", "--calibration", img_dir, "--scale", 1 / 255, "--json",
               "--runs", "0")
    card = json.loads(r.output)
    assert not any("0..255" in w for w in card["warnings"])
    assert card["calibration"]["stats"]["image"]["max"] <= 1.0


def test_generator_calibration(digits, tmp_path, monkeypatch):
    (tmp_path / "calgen.py").write_text(
        "import numpy as np\n"
        f"X = np.load({str(digits['calibration'])!r})['x']\n"
        "def samples():\n    for x in X:\n        yield {'image': x[None]}\n")
    monkeypatch.chdir(tmp_path)
    r = invoke(digits["model"], "--mode", "int8", "--calibration", "calgen:samples", "--calibration-samples", "64",
               "--json", "--runs", "0")
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert card["calibration"]["kind"] == "generator" and card["calibration"]["samples"] == 48
    assert card["evaluation"]["held_out"] is True and card["evaluation"]["samples"] == 16
    assert card["accuracy"]["data"] == "held_out_calibration"
    assert card["calibration"]["stats"]["image"]["count"] == 48 and card["evaluation"]["stats"]["image"]["count"] == 16
    r = invoke(digits["model"], "--mode", "int8", "--calibration", "calgen:missing")
    assert r.exit_code == 1 and "cannot import generator calgen:missing" in r.output


def test_legacy_h5_model(tmp_path):
    from tests.support.models import digits_keras

    legacy = digits_keras(legacy=True)
    assert legacy["model"].endswith(".h5")
    r = invoke(legacy["model"], "--mode", "int8", "--calibration", legacy["calibration"], "--eval", legacy["eval"],
               "--json", "--runs", "0")
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert (card["source"]["format"], card["source"]["flavor"]) == ("h5", "tf_keras")
    assert card["accuracy"]["top1_drop_pp"] <= 1.0


def test_end_to_end_subprocess(digits, tmp_path, session_key):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([EDGEKIT, "convert", digits["model"], "--mode", "int8", "--calibration",
                           digits["calibration"], "--eval", digits["eval"], "-o", str(out), "--key",
                           str(session_key[0]), "--name", "digits", "--version", "2.0.0", "--runs", "20"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-1 drop (pp)" in proc.stdout and "wrote" in proc.stdout
    assert "convert int8" in proc.stderr  # the progress bar went to stderr
    card = json.loads((out / "report.json").read_text())
    b = read_bundle(out / "digits-2.0.0.ekb", session_key[1])
    assert b.manifest["provenance"]["report"]["size"] == card["model"]["size"]
    insp = subprocess.run([EDGEKIT, "bundle", "inspect", str(out / "digits-2.0.0.ekb"), "--pubkey",
                           str(session_key[1]), "--json"], capture_output=True, text=True, timeout=60)
    assert insp.returncode == 0 and json.loads(insp.stdout)["signature"]["status"] == "verified"


def test_two_input_model_with_named_arrays(tmp_path, session_key):
    import keras

    L = keras.layers
    a = L.Input((6,), name="zeta")
    b = L.Input((4, 4, 1), name="alpha")
    y = L.Concatenate()([L.Dense(8, activation="relu")(a), L.Flatten()(b)])
    keras.Model([a, b], L.Dense(3, activation="softmax")(y)).save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", zeta=rng.random((40, 6), dtype=np.float32),
             alpha=rng.random((40, 4, 4, 1), dtype=np.float32))
    r = invoke(tmp_path / "two.keras", "--mode", "int8", "--calibration", tmp_path / "cal.npz", "-o",
               tmp_path / "out", "--key", session_key[0], "--json", "--runs", "3")
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert [i["name"] for i in card["source"]["inputs"]] == ["zeta", "alpha"]
    assert card["accuracy"]["agreement"] >= 0.9
    b = read_bundle(tmp_path / "out" / "two-0.1.0.ekb", session_key[1])
    ins, _, _, _ = b.golden()
    assert [list(x.shape[1:]) for x in ins] == [m["shape"] for m in b.manifest["inputs"]]
    np.savez(tmp_path / "cal2.npz", a=rng.random((40, 6), dtype=np.float32))
    r = invoke(tmp_path / "two.keras", "--mode", "int8", "--calibration", tmp_path / "cal2.npz")
    assert r.exit_code == 1 and "cannot tell which feeds model input(s) ['zeta', 'alpha']" in r.output


def test_failure_while_writing_leaves_nothing(digits, tmp_path, session_key):
    """The bundle step fails after the model was converted and staged: no output directory, no staging left."""
    out = tmp_path / "out"
    r = invoke(digits["model"], "--mode", "dynamic", "-o", out, "--key", session_key[0], "--labels",
               tmp_path / "missing-labels.txt", "--runs", "0")
    assert r.exit_code == 2 and "cannot read labels file" in r.output
    assert not out.exists() and leftovers(tmp_path) == []
    out.mkdir()
    (out / "digits.tflite").write_bytes(b"old")
    r = invoke(digits["model"], "--mode", "dynamic", "-o", out, "--key", session_key[0], "--labels",
               tmp_path / "missing-labels.txt", "--runs", "0", "--force")
    assert r.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["digits.tflite"] and (out / "digits.tflite").read_bytes() == b"old"


def test_h5_written_by_keras3(tmp_path, digits):
    import keras

    keras.saving.load_model(digits["model"]).save(tmp_path / "k3.h5")
    r = invoke(tmp_path / "k3.h5", "--mode", "dynamic", "--eval", digits["eval"], "--json", "--runs", "0")
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert card["source"]["format"] == "h5" and card["accuracy"]["top1_drop_pp"] <= 0.5
