"""The bundle CLI through click's runner and, end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgekit.cli import cli

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def test_create_inspect_verify(tmp_path, digits_int8_tflite):
    r = CliRunner()
    assert r.invoke(cli, ["keys", "generate", str(tmp_path / "k.key")]).exit_code == 0
    res = r.invoke(cli, ["bundle", "create", str(digits_int8_tflite), "--name", "digits", "--version", "1.2.3",
                         "--key", str(tmp_path / "k.key"), "-o", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    path = json.loads(res.output)["bundle"]
    assert path.endswith("digits-1.2.3.ekb")
    res = r.invoke(cli, ["bundle", "inspect", path])
    assert res.exit_code == 0 and "CONV_2D" in res.output and "int8" in res.output
    res = r.invoke(cli, ["bundle", "verify", path, "--pubkey", str(tmp_path / "k.key.pub")])
    assert res.exit_code == 0 and "OK" in res.output


def test_errors_are_one_line_with_exit_code(tmp_path, digits_int8_tflite):
    subprocess.run([EDGEKIT, "keys", "generate", str(tmp_path / "k.key")], check=True, capture_output=True)
    subprocess.run([EDGEKIT, "keys", "generate", str(tmp_path / "o.key")], check=True, capture_output=True)
    subprocess.run([EDGEKIT, "bundle", "create", str(digits_int8_tflite), "--name", "d", "--version", "1.0.0",
                    "--key", str(tmp_path / "k.key"), "-o", str(tmp_path)], check=True, capture_output=True)
    cases = [
        (["bundle", "verify", str(tmp_path / "d-1.0.0.ekb"), "--pubkey", str(tmp_path / "o.key.pub")], "signed by key"),
        (["bundle", "verify", str(tmp_path / "nope.ekb"), "--pubkey", str(tmp_path / "k.key.pub")], "does not exist"),
        (["bundle", "inspect", str(tmp_path / "k.key")], "not a readable tar"),
        (["bundle", "create", str(tmp_path / "k.key"), "--name", "d", "--version", "1.0.0", "--key",
          str(tmp_path / "k.key"), "-o", str(tmp_path / "x.ekb")], "not a TFLite"),
        (["bundle", "create", str(digits_int8_tflite), "--name", "d", "--version", "1.0.0", "--key",
          str(tmp_path / "k.key"), "-o", str(tmp_path)], "already exists"),
    ]
    for argv, expect in cases:
        res = subprocess.run([EDGEKIT, *argv], capture_output=True, text=True)
        assert res.returncode != 0, argv
        assert expect in res.stderr, (argv, res.stderr)
        assert "Traceback" not in res.stderr
        assert len([ln for ln in res.stderr.splitlines() if ln.startswith("edgekit: error:")]) == 1
    assert not (tmp_path / "x.ekb").exists()


def test_every_mutation_class_is_a_one_line_cli_error(fp32_bundle, tmp_path):
    """``bundle verify`` and ``bundle inspect`` (with and without a key) on every named mutation: exit non-zero
    with one ``edgekit: error:`` line, never a traceback; in-process for all, as a subprocess for one per class."""
    from edgekit.keys import load_private_key
    from tests.support.bundle_mutations import CLASSES, all_cases

    path, priv, pub = fp32_bundle
    original = path.read_bytes()
    cases = [m for m in all_cases(original, load_private_key(priv), tmp_path / "repack") if m.data != original]
    r = CliRunner()
    for i, mut in enumerate(cases):
        bad = tmp_path / f"m{i}.ekb"
        bad.write_bytes(mut.data)
        for argv in (["verify", str(bad), "--pubkey", str(pub)], ["inspect", str(bad), "--pubkey", str(pub)],
                     ["inspect", str(bad)], ["verify", str(bad), "--pubkey", str(pub), "--json"]):
            res = r.invoke(cli, ["bundle", *argv])
            assert res.exit_code != 0 and isinstance(res.exception, SystemExit), (mut.case, argv, res.exception)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("edgekit: error:"), (mut.case, argv, res.stderr)
            if "--json" in argv:  # a failed --json command prints one JSON error object for scripts
                err = json.loads(res.stdout)["error"]
                assert err["exit_code"] == res.exit_code and err["message"], (mut.case, argv, res.stdout)
            else:
                assert res.stdout == "", (mut.case, argv, res.stdout)
    firsts = {}
    for i, mut in enumerate(cases):
        firsts.setdefault(mut.cls, i)
    assert set(firsts) == set(CLASSES)
    for cls, i in firsts.items():
        bad = tmp_path / f"m{i}.ekb"
        for argv in (["verify", str(bad), "--pubkey", str(pub)], ["inspect", str(bad)]):
            res = subprocess.run([EDGEKIT, "bundle", *argv], capture_output=True, text=True)
            assert res.returncode == 1 and "Traceback" not in res.stderr, (cls, argv, res.stderr)
            assert [ln.startswith("edgekit: error:") for ln in res.stderr.splitlines()] == [True], (cls, res.stderr)
