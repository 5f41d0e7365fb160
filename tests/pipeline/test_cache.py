"""The step cache on real files: an entry exists only once committed, and a damaged one is never reused."""

from __future__ import annotations

from pipelines.artifacts import Evaluation, TFLiteModel
from pipelines.cache import Cache, code_version, step_key


def test_an_entry_exists_only_once_committed_and_is_rehashed_on_reuse(tmp_path):
    cache = Cache(tmp_path)
    key = step_key("evaluate", {"runs": 5}, {"model": "abc"}, {}, "code")
    tmp = cache.begin("evaluate", key)
    (tmp / "evaluation.json").write_text('{"accuracy": 0.9}')
    assert cache.get("evaluate", key) is None  # written but not committed: a killed step leaves no entry
    entry = cache.commit("evaluate", key, "evaluation", tmp, Evaluation(tmp / "evaluation.json"))
    assert not tmp.exists() and entry.path == tmp_path / "evaluate" / key
    again = cache.get("evaluate", key)
    assert again is not None and again.digest == entry.digest
    assert again.artifact() == Evaluation(entry.path / "evaluation.json")

    (entry.path / "evaluation.json").write_text('{"accuracy": 1.0}')  # damaged after the fact
    assert cache.get("evaluate", key) is None and not entry.path.exists()


def test_an_abandoned_step_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)
    tmp = cache.begin("convert", "k" * 64)
    (tmp / "model.tflite").write_bytes(b"half")
    cache.abandon(tmp)
    assert list((tmp_path / "convert").iterdir()) == []


def test_a_step_must_return_files_of_its_own_directory(tmp_path):
    import pytest

    cache = Cache(tmp_path)
    tmp = cache.begin("convert", "k" * 64)
    (tmp_path / "elsewhere.tflite").write_bytes(b"x")
    (tmp / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="not a file in its output directory"):
        cache.commit("convert", "k" * 64, "tflite", tmp, TFLiteModel(tmp_path / "elsewhere.tflite",
                                                                     tmp / "report.json"))
    assert cache.get("convert", "k" * 64) is None


def test_keys_change_with_every_ingredient(tmp_path):
    base = step_key("train", {"epochs": 2}, {"data": "d1"}, {"x": 1}, "c1")
    assert base == step_key("train", {"epochs": 2}, {"data": "d1"}, {"x": 1}, "c1")
    assert len({base, step_key("train", {"epochs": 3}, {"data": "d1"}, {"x": 1}, "c1"),
                step_key("train", {"epochs": 2}, {"data": "d2"}, {"x": 1}, "c1"),
                step_key("train", {"epochs": 2}, {"data": "d1"}, {"x": 2}, "c1"),
                step_key("train", {"epochs": 2}, {"data": "d1"}, {"x": 1}, "c2")}) == 5
    src = tmp_path / "user.py"
    src.write_text("def fit(): pass\n")
    before = code_version([src])
    src.write_text("def fit(): return 1\n")
    assert code_version([src]) != before
