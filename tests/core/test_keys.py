from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

from edgekit import errors as E
from edgekit.cli import cli
from edgekit.keys import generate_keypair, key_id, load_private_key, load_public_key, sign, verify


def test_private_key_mode_0600_and_pair_matches(tmp_path):
    priv, pub = generate_keypair(tmp_path / "a.key")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    k = load_private_key(priv)
    p = load_public_key(pub)
    assert key_id(k) == key_id(p)
    verify(p, b"hello", sign(k, b"hello"))
    with pytest.raises(E.SignatureError):
        verify(p, b"hellO", sign(k, b"hello"))


def test_never_overwrites_without_force(tmp_path):
    priv, pub = generate_keypair(tmp_path / "a.key")
    before = priv.read_bytes(), pub.read_bytes()
    with pytest.raises(E.FileExistsRefusal):
        generate_keypair(tmp_path / "a.key")
    assert (priv.read_bytes(), pub.read_bytes()) == before
    generate_keypair(tmp_path / "a.key", force=True)
    assert priv.read_bytes() != before[0]
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600


def test_cli_generate_and_refuse(tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["keys", "generate", str(tmp_path / "k.key"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "k.key.pub").exists()
    res = r.invoke(cli, ["keys", "generate", str(tmp_path / "k.key")])
    assert res.exit_code == 1
    assert "already exists" in res.output and "--force" in res.output
    assert "Traceback" not in res.output


def test_bad_key_files(tmp_path):
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(E.KeyFileError):
        load_private_key(tmp_path / "junk")
    with pytest.raises(E.KeyFileError):
        load_public_key(tmp_path / "junk")
    with pytest.raises(E.KeyFileError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
