"""Recipe edges of ``edgekit optimize``: too few pruning steps, stock MobileNetV2 under XNNPACK pruning, and the
separable student's opt-in head. Real tfmot and LiteRT on digits-sized models."""

from __future__ import annotations

import numpy as np
import pytest

from converters.optimize import parse_chain
from converters.optimize.recipes import MIN_PRUNE_STEPS, RECIPES

# -- too few fine-tuning steps for magnitude pruning --------------------------------------------------------------------


def test_prune_warns_below_the_minimum_step_count():
    prune = RECIPES["prune"]
    step = parse_chain("prune:0.75").get("prune")
    msg = prune.check_steps(step, 8, 8)
    assert "fine-tunes only 8 steps (8 per epoch)" in msg
    assert f"--epochs {-(-MIN_PRUNE_STEPS // 8)} or more" in msg
    assert prune.check_steps(step, MIN_PRUNE_STEPS, 10) is None
    # M-by-N and XNNPACK M-by-N use a constant schedule: nothing ramps up, nothing to warn about
    assert prune.check_steps(parse_chain("prune:2:4").get("prune"), 2, 1) is None
    assert RECIPES["cluster"].check_steps(parse_chain("cluster:8").get("cluster"), 1, 1) is None


@pytest.mark.slow
def test_prune_with_too_few_steps_warns_before_training(digits_legacy, digits_train, tmp_path, capsys):
    from converters import pipeline
    from converters.optimize import OptimizeOptions, optimize

    z = np.load(digits_train)
    np.savez(tmp_path / "small.npz", x=z["x"][:64], y=z["y"][:64])  # 2 steps of 32
    with pipeline.progress_bars(True) as progress:
        r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="prune:0.75", train=str(tmp_path / "small.npz"),
                                     eval=digits_legacy["eval"], epochs=1, runs=0), progress)
    err = capsys.readouterr().err
    assert "prune:0.75 fine-tunes only 2 steps (2 per epoch)" in " ".join(err.split())
    assert any("fine-tunes only 2 steps" in w for w in r.report["warnings"])
    assert r.report["optimization"]["stages"][0]["steps"] == 2
    # enough data and epochs: no warning
    full = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="prune:0.75", train=str(digits_train),
                                    eval=digits_legacy["eval"], epochs=2, runs=0))
    assert full.report["optimization"]["stages"][0]["steps"] >= MIN_PRUNE_STEPS
    assert not any("fine-tunes only" in w for w in full.report["warnings"])
