"""``edgekit optimize`` bad input: one-line errors with a non-zero exit, before any training, output untouched.

Recipe parsing is pure logic (unit tests); every other error runs the real command on real models and data.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from converters.optimize import RECIPES, parse_chain
from edgekit.cli import cli


# -- the recipe chain (pure) -------------------------------------------------------------------------------------------


def test_chain_parses_in_order_and_names_the_qat_scheme():
    chain = parse_chain("prune:0.75,cluster:16,qat")
    assert chain.names == ["prune", "cluster", "qat"] and chain.qat_scheme() == "pcqat"
    assert chain.get("prune").params == {"kind": "magnitude", "sparsity": 0.75, "xnnpack": False}
    assert parse_chain("prune:2:4:xnnpack").get("prune").params == {
        "kind": "m_by_n", "m": 2, "n": 4, "sparsity": 0.5, "xnnpack": True}
    assert parse_chain("cluster:8,qat").qat_scheme() == "cqat"
    assert parse_chain("prune:0.5,qat").qat_scheme() == "pqat"
    assert parse_chain("separable,distill:t=2:alpha=0.5").get("distill").params == {"temperature": 2.0, "alpha": 0.5}
    assert parse_chain("int4:fc+conv").get("int4").params["ops"] == ["FULLY_CONNECTED", "CONV_2D"]
    assert parse_chain("int4:fc:block=32").get("int4").params["block_size"] == 32


@pytest.mark.parametrize("text, message", [
    ("quantum", "unknown recipe 'quantum'"),
    ("int4,qat", "impossible order: int4 before qat"),
    ("qat,prune:0.5", "impossible order: qat before prune"),
    ("cluster:8,prune:0.5", "impossible order: cluster before prune"),
    ("prune:0", "outside (0, 1)"),
    ("prune:1", "outside (0, 1)"),
    ("prune:-0.2", "outside (0, 1)"),
    ("prune:lots", "is not a number"),
    ("prune:4:2", "0 < M < N"),
    ("cluster:1", "below 2"),
    ("cluster:0", "below 2"),
    ("cluster", "cannot read"),
    ("qat:fast", "takes no options"),
    ("prune:0.5,prune:0.6", "appears twice"),
    ("distill:t=0", "must be above 0"),
    ("distill:t=nan", "must be above 0 and finite"),
    ("distill:t=inf", "must be above 0 and finite"),
    ("distill:alpha=2", "outside [0, 1]"),
    ("distill:beta=1", "unknown option"),
    ("separable:min_in=0", "separable min_in=0 must be at least 1"),
    ("separable:max_cost=1.5", "separable max_cost=1.5 must be in (0, 1]"),
    ("prune:0.5,,qat", "empty recipe"),
    ("int4:depthwise", "cannot take int4 weights"),
    ("int4:fc+conv:block=32", "blockwise int4 works on FULLY_CONNECTED"),
    ("qat,int4", "after qat the model is already full int8"),
    ("", "no recipe given"),
])
def test_bad_chains_are_refused(text, message):
    with pytest.raises(Exception) as info:
        parse_chain(text)
    assert message in info.value.one_line() and "\n" not in info.value.one_line()
    assert "edgekit convert --help" not in info.value.one_line()  # the hint names optimize's own options
    assert info.value.exit_code == 2


def test_every_recipe_is_documented():
    doc = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "optimize.md").read_text()
    for name in RECIPES:
        assert f"| `{name}" in doc, name


# -- the command ------------------------------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(cli, ["optimize", *map(str, args), "--quiet"])


@pytest.fixture
def out(tmp_path):
    """An output directory that already holds a file: every refusal must leave it exactly as it was."""
    d = tmp_path / "out"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    return d


def untouched(out) -> bool:
    parent = out.parent
    return ([p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
            and not [p for p in parent.iterdir() if "staging" in p.name])


def one_line_error(r, code=None) -> str:
    assert r.exit_code != 0 and (code is None or r.exit_code == code), r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), r.output
    assert "epoch" not in r.output
    return lines[0]


def test_bad_recipe_is_refused_before_tensorflow_loads(tmp_path):
    code = ("import sys\nfrom edgekit.cli import main\n"
            "try:\n    main(['optimize', 'm.keras', '--recipe', 'int4,qat', '--eval', 'e.npz', '-o', 'out'])\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO_TF')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.stdout.split() == ["exit", "2", "NO_TF"], r.stdout + r.stderr
    assert "impossible order: int4 before qat" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe, message", [
    ("prune:1.5", "sparsity 1.5 in 'prune:1.5' is outside (0, 1)"),
    ("cluster:1", "cluster count 1 in 'cluster:1' is below 2"),
    ("int4,qat", "impossible order: int4 before qat"),
    ("sparkle:3", "unknown recipe 'sparkle'"),
])
def test_recipe_errors_from_the_cli(digits_legacy, digits_train, out, recipe, message):
    r = invoke(digits_legacy["model"], "--recipe", recipe, "--train", digits_train, "--eval", digits_legacy["eval"],
               "-o", out, "--force")
    assert message in one_line_error(r, 2)
    assert untouched(out)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_train_data_of_the_wrong_shape(digits_legacy, out, tmp_path):
    bad = _npz(tmp_path / "bad.npz", x=np.zeros((64, 8, 8), np.float32) + 0.5, y=np.zeros(64, np.int64))
    r = invoke(digits_legacy["model"], "--recipe", "prune:0.5", "--train", bad, "--eval", digits_legacy["eval"],
               "-o", out, "--force")
    assert "samples have shape [8, 8], the model expects [8, 8, 1]" in one_line_error(r)
    assert untouched(out)


def test_labels_out_of_range(digits_legacy, digits_train, out, tmp_path):
    z = np.load(digits_train)
    y = z["y"].copy()
    y[5] = 10
    bad = _npz(tmp_path / "labels.npz", x=z["x"], y=y)
    r = invoke(digits_legacy["model"], "--recipe", "qat", "--train", bad, "--eval", digits_legacy["eval"], "-o", out,
               "--force")
    assert "training label 10 is out of range: the model has 10 classes (0..9)" in one_line_error(r)
    assert untouched(out)


def test_too_few_samples(digits_legacy, digits_train, out, tmp_path):
    z = np.load(digits_train)
    few = _npz(tmp_path / "few.npz", x=z["x"][:12], y=z["y"][:12])
    r = invoke(digits_legacy["model"], "--recipe", "prune:0.5", "--train", few, "--eval", digits_legacy["eval"],
               "-o", out, "--force")
    assert "training data has 12 sample(s); at least 32 are needed" in one_line_error(r)
    assert untouched(out)


def test_unlabelled_data_only_distills(digits_legacy, digits_train, out, tmp_path):
    z = np.load(digits_train)
    nolabels = _npz(tmp_path / "x.npz", x=z["x"])
    r = invoke(digits_legacy["model"], "--recipe", "prune:0.5", "--train", nolabels, "--eval",
               digits_legacy["eval"], "-o", out, "--force")
    line = one_line_error(r)
    assert "has no labels; prune fine-tune on labels" in line and "only distill and separable train" in line
    assert untouched(out)


def test_teacher_with_another_output_shape(digits_legacy, digits_train, out, tmp_path):
    import tf_keras as k

    L = k.layers
    teacher = k.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(5, activation="softmax")])
    teacher.save(tmp_path / "teacher.h5")
    r = invoke(digits_legacy["model"], "--recipe", "distill", "--teacher", tmp_path / "teacher.h5", "--train",
               digits_train, "--eval", digits_legacy["eval"], "-o", out, "--force")
    assert "the teacher's output shape [5] differs from the student's [10]" in one_line_error(r)
    assert untouched(out)


def test_subclassed_model_is_refused(digits_train, digits_legacy, tmp_path):
    """A registered Keras 3 subclassed model loads in this process; optimize refuses it by name, before training."""
    import keras

    @keras.saving.register_keras_serializable(package="edgekit_test")
    class Tiny(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.flat = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10, activation="softmax")

        def call(self, x):
            return self.dense(self.flat(x))

    m = Tiny()
    m(np.zeros((1, 8, 8, 1), np.float32))
    m.save(tmp_path / "tiny.keras")
    from converters.optimize import OptimizeOptions, optimize
    from converters.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as info:
        optimize(OptimizeOptions(model=tmp_path / "tiny.keras", recipe="prune:0.5", train=str(digits_train),
                                 eval=digits_legacy["eval"], output=tmp_path / "out"))
    assert "subclassed model (Tiny)" in info.value.one_line() and "Functional" in info.value.one_line()
    assert not (tmp_path / "out").exists()


def test_bad_workers(digits_legacy, digits_train, out):
    r = invoke(digits_legacy["model"], "--recipe", "qat", "--train", digits_train, "--eval", digits_legacy["eval"],
               "--workers", "127.0.0.1", "--worker-index", "0", "-o", out, "--force")
    assert "--workers entry '127.0.0.1' is not host:port" in one_line_error(r, 2)
    r = invoke(digits_legacy["model"], "--recipe", "qat", "--train", digits_train, "--eval", digits_legacy["eval"],
               "--workers", "127.0.0.1:1234,127.0.0.1:1235", "-o", out, "--force")
    assert "--workers needs --worker-index" in one_line_error(r, 2)
    assert untouched(out)


def test_existing_output_without_force(digits_legacy, digits_train, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "digits.tflite").write_bytes(b"precious")
    r = invoke(digits_legacy["model"], "--recipe", "prune:0.5", "--train", digits_train, "--eval",
               digits_legacy["eval"], "-o", out)
    assert "already holds digits.tflite" in one_line_error(r)
    assert (out / "digits.tflite").read_bytes() == b"precious"


def test_qat_refuses_another_mode(digits_legacy, digits_train, out):
    r = invoke(digits_legacy["model"], "--recipe", "qat", "--mode", "fp16", "--train", digits_train, "--eval",
               digits_legacy["eval"], "-o", out, "--force")
    assert "recipe qat ends in full int8, not --mode fp16" in one_line_error(r, 2)
    assert untouched(out)


def test_help_lists_every_option_of_the_docs():
    r = CliRunner().invoke(cli, ["optimize", "--help"])
    assert r.exit_code == 0
    doc = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "optimize.md").read_text()
    import re

    options = sorted(set(re.findall(r"(--[a-z][a-z-]+)", r.output)) - {"--help"})
    documented = sorted(set(re.findall(r"`(--[a-z][a-z-]+)", doc)))
    assert [o for o in options if o not in documented] == []
    assert [o for o in documented if o not in options] == []


def test_help_names_every_recipe_option_of_the_docs():
    """Each ``[:key`` of the recipe table in docs/optimize.md (e.g. separable's ``[:head]``) is in --recipe's help."""
    import re

    r = CliRunner().invoke(cli, ["optimize", "--help"])
    doc = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "optimize.md").read_text()
    lines = [line.replace("\\|", "/") for line in doc.splitlines() if line.startswith("| `")]  # \| is a literal |
    rows = [line.split("|")[1] for line in lines if ":" in line.split("|")[1]]
    keys = sorted({k for row in rows for k in re.findall(r"\[:([a-z_]+)", row)})
    assert {"head", "min_in", "block"} <= set(keys)
    flat = "".join(r.output.split())
    assert [k for k in keys if f"[:{k}" not in flat] == []


# -- training data in every form ----------------------------------------------------------------------------------


def _digits_images(root, xs, ys):
    from PIL import Image

    for k, (x, y) in enumerate(zip(xs, ys)):
        d = root / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[..., 0] * 255).astype(np.uint8), mode="L").save(d / f"{k:04d}.png")


def test_image_directory_labels_come_from_subfolders(digits_train, tmp_path):
    from converters import calibration as cal
    from converters.loading import InputSpec

    z = np.load(digits_train)
    _digits_images(tmp_path / "imgs", z["x"][:60], z["y"][:60])
    ds = cal.load_dataset(tmp_path / "imgs", [InputSpec("image", (8, 8, 1))], normalize=cal.Normalize(1 / 255))
    order = np.argsort([f"{int(y)}/{k:04d}" for k, y in enumerate(z["y"][:60])], kind="stable")
    assert list(ds.labels) == [int(v) for v in z["y"][:60][order]]
    np.testing.assert_allclose(ds.arrays[0], z["x"][:60][order], atol=1 / 255)
    (tmp_path / "named" / "cat").mkdir(parents=True)
    (tmp_path / "named" / "dog").mkdir()
    from PIL import Image

    for k, name in enumerate(("cat", "dog", "dog")):
        Image.new("L", (8, 8), 3 + 40 * k).save(tmp_path / "named" / name / f"{k}.png")
    ds = cal.load_dataset(tmp_path / "named", [InputSpec("image", (8, 8, 1))], minimum=1)
    assert list(ds.labels) == [0, 1, 1]


def test_generator_yielding_x_and_y(digits_train, tmp_path, monkeypatch):
    from converters import calibration as cal
    from converters.loading import InputSpec

    (tmp_path / "digits_gen.py").write_text(
        "import numpy as np\n"
        f"z = np.load({str(digits_train)!r})\n"
        "def pairs():\n"
        "    for x, y in zip(z['x'][:40], z['y'][:40]):\n"
        "        yield x, int(y)\n")
    monkeypatch.chdir(tmp_path)
    ds = cal.load_dataset("digits_gen:pairs", [InputSpec("image", (8, 8, 1))])
    assert len(ds) == 40 and list(ds.labels) == [int(v) for v in np.load(digits_train)["y"][:40]]


@pytest.mark.slow
def test_optimize_trains_on_an_image_directory(digits_legacy, digits_train, tmp_path):
    from converters.optimize import OptimizeOptions, optimize

    z, e = np.load(digits_train), np.load(digits_legacy["eval"])
    _digits_images(tmp_path / "train", z["x"][:400], z["y"][:400])
    _digits_images(tmp_path / "eval", e["x"], e["y"])
    r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="prune:0.5", train=str(tmp_path / "train"),
                                 eval=str(tmp_path / "eval"), scale=1 / 255, epochs=1, runs=0))
    opt = r.report["optimization"]
    assert opt["training"]["labels"] is True and opt["training"]["samples"] == 400
    assert opt["result"]["summary"]["sparsity"] >= 0.49 and opt["result"]["top1"] > 0.8
