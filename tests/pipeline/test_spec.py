"""The pipeline file, pure: every bad input is a one-line SpecError with its line, before anything runs."""

from __future__ import annotations

import pytest

from edgekit.errors import ExitCode
from pipelines.errors import SpecError
from pipelines.spec import line_index, parse

GOOD = """\
[pipeline]
name = "digits"

[data]
source = "digits.npz"

[train]
function = "train_digits:fit"
params = { epochs = 2 }

[convert]
mode = "int8"

[evaluate]

[gate]
min_accuracy = 0.5

[sign]
version = "1.0.0"
"""


def lineno(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def bad(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in info.value.one_line()
    return info.value


def test_a_good_file_gives_the_steps_in_order_with_their_inputs():
    spec = parse(GOOD)
    assert spec.order == ["data", "train", "convert", "evaluate", "gate", "sign"]
    assert spec.steps["convert"].sources == {"data": "data", "model": "train"}
    assert spec.steps["evaluate"].sources == {"data": "data", "model": "convert"}
    assert spec.steps["sign"].sources == {"data": "data", "model": "convert", "evaluation": "evaluate",
                                          "blessing": "gate"}
    assert spec.steps["train"].config.params == {"epochs": 2}
    assert spec.model_name == "digits"


def test_downstream_and_upstream():
    spec = parse(GOOD)
    assert spec.downstream("convert") == ["convert", "evaluate", "gate", "sign"]
    assert spec.downstream("gate") == ["gate", "sign"]
    assert spec.upstream("evaluate") == ["data", "train", "convert", "evaluate"]


def test_optimize_feeds_evaluate_when_there_is_no_convert():
    text = GOOD.replace('[convert]\nmode = "int8"\n', '[optimize]\nrecipe = "prune:0.5"\n')
    spec = parse(text)
    assert spec.steps["evaluate"].sources["model"] == "optimize"
    assert spec.steps["optimize"].sources == {"data": "data", "model": "train"}


def test_from_picks_another_producer():
    text = GOOD.replace("[evaluate]\n", '[optimize]\nrecipe = "prune:0.5"\n\n[evaluate]\nfrom = "optimize"\n')
    assert parse(text).steps["evaluate"].sources["model"] == "optimize"


def test_unknown_step_names_its_line():
    text = GOOD + "\n[deploy]\nwhere = 1\n"
    e = bad(text)
    n = lineno(text, "[deploy]")
    assert e.line == n and "unknown step [deploy]" in e.message and f"line {n}:" in e.message


def test_unknown_key_names_its_line_and_the_keys_allowed():
    text = GOOD.replace('mode = "int8"', 'mode = "int8"\nquantise = true')
    e = bad(text)
    assert e.line == lineno(text, "quantise") and "unknown key 'quantise' in [convert]" in e.message
    assert "mode" in e.hint


def test_a_value_of_the_wrong_type_names_its_line():
    e = bad(GOOD.replace("min_accuracy = 0.5", 'min_accuracy = "high"'))
    assert e.line == lineno(GOOD, "min_accuracy") and "min_accuracy" in e.message


def test_a_cycle_is_refused_with_the_line_of_its_from():
    text = GOOD.replace("[evaluate]\n", '[evaluate]\nfrom = "sign"\n')
    e = bad(text)
    assert "cycle" in e.message and e.line == lineno(text, "from =")
    assert "evaluate" in e.message and "sign" in e.message


def test_from_an_absent_or_unknown_step():
    assert "has no [optimize]" in bad(GOOD.replace("[evaluate]\n", '[evaluate]\nfrom = "optimize"\n')).message
    assert "is not a step" in bad(GOOD.replace("[evaluate]\n", '[evaluate]\nfrom = "nope"\n')).message


def test_from_a_step_of_the_wrong_kind():
    text = GOOD.replace("[evaluate]\n", '[evaluate]\nfrom = "train"\n')
    e = bad(text)
    assert "produces a keras artifact" in e.message and e.line == lineno(text, "from =")


def test_a_step_without_its_producer():
    e = bad(GOOD.replace('[convert]\nmode = "int8"\n', ""))
    assert "[evaluate] needs a tflite artifact" in e.message and "[convert]" in e.hint


def test_budget_and_recipe_are_read_before_anything_runs():
    text = GOOD.replace('[convert]\nmode = "int8"\n', '[optimize]\nbudget = "size<=120XB"\n')
    e = bad(text)
    assert "unknown size unit 'xb'" in e.message and e.line == lineno(text, "budget =")
    text = GOOD.replace('[convert]\nmode = "int8"\n', '[optimize]\nrecipe = "shrink:2"\n')
    e = bad(text)
    assert "recipe" in e.message and e.line == lineno(text, "recipe =")
    e = bad(GOOD.replace('[convert]\nmode = "int8"\n', '[optimize]\nrecipe = "qat"\nbudget = "size<=1KB"\n'))
    assert "exactly one of recipe" in e.message


def test_step_options_are_checked_by_their_own_validators():
    assert "mode" in bad(GOOD.replace('mode = "int8"', 'mode = "int3"')).message
    assert "split" in bad(GOOD.replace('source = "digits.npz"', 'source = "d.npz"\nsplit = [0.5, 0.6, 0.1]')).message
    assert "fraction" in bad(GOOD.replace("min_accuracy = 0.5", "min_accuracy = 95")).message
    assert "no threshold" in bad(GOOD.replace("min_accuracy = 0.5", "")).message
    text = GOOD + '\n[publish]\n\n[rollout]\nsoak = "5m"\nstages = "1,10%,5%"\n'
    e = bad(text)
    assert "[rollout] stages" in e.message and e.line == lineno(text, "stages =")


def test_invalid_toml_and_pipeline_keys():
    e = bad("[data]\nsource = \n")
    assert "not valid TOML" in e.message and "line 2" in e.message
    e = bad('[pipeline]\nname = "x"\nowner = "me"\n[data]\nsource = "d.npz"\n')
    assert e.line == 3 and "owner" in e.message
    assert "no steps" in bad('[pipeline]\nname = "x"\n').message


def test_publish_needs_sign():
    e = bad(GOOD.replace('[sign]\nversion = "1.0.0"\n', "[publish]\n"))
    assert "[publish] needs a bundle artifact" in e.message


def test_line_index_skips_multiline_strings():
    tables, keys = line_index('[a]\nx = """\n[b]\ny = 1\n"""\nz = 2\n[c]\n')
    assert tables == {"a": 1, "c": 7} and keys[("a", "z")] == 6 and ("b", "y") not in keys
