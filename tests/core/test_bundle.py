"""Bundles: round trip, golden vectors computed in LiteRT, and every kind of bad input with its own error."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgekit import bundle as B
from edgekit import errors as E
from edgekit.golden import compare, run_model
from edgekit.keys import generate_keypair, load_private_key
from edgekit.manifest import canonical_bytes


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t}


def rewrite(path: Path, out: Path, mutate) -> Path:
    """Rebuild a bundle tar after ``mutate(dict of members)``; keeps member order."""
    m = members(path)
    mutate(m)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in m.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return out


def test_round_trip_verifies_and_golden_reproduces(fp32_bundle, digits_fp32_tflite):
    path, priv, pub = fp32_bundle
    b = B.verify_bundle(path, pub)
    assert b.signature_verified
    assert b.model_bytes == digits_fp32_tflite.read_bytes()
    assert b.manifest["labels"] == [str(i) for i in range(10)]
    assert b.manifest["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert b.manifest["inputs"][0]["dtype"] == "float32"
    ins, outs, atol, rtol = b.golden()
    assert ins[0].shape == (3, 1, 8, 8, 1) and outs[0].shape == (3, 1, 10)
    # the pinned outputs are what LiteRT computes for the pinned inputs
    again = run_model(b.model_bytes, ins)
    assert compare(outs, again, atol, rtol).ok
    # and a different model's outputs would not pass
    assert not compare(outs, [again[0][::-1].copy()], atol, rtol).ok


def test_golden_inputs_from_file_are_used(tmp_path, digits_int8_tflite, signing_key):
    priv, pub = signing_key
    x = np.random.default_rng(5).integers(-128, 127, size=(4, 1, 8, 8, 1)).astype(np.int8)
    np.savez(tmp_path / "g.npz", x=x)
    path = B.create_bundle(digits_int8_tflite, tmp_path / "m.ekb", name="d8", version="2.0.0", key=priv,
                           golden_inputs=tmp_path / "g.npz")
    b = B.verify_bundle(path, pub)
    ins, outs, atol, rtol = b.golden()
    np.testing.assert_array_equal(ins[0], x)
    assert outs[0].dtype == np.int8 and (atol, rtol) == (1.0, 0.0)
    assert b.manifest["inputs"][0]["quantization"]["scale"]


def test_create_refuses_to_overwrite_and_keeps_file(fp32_bundle, digits_fp32_tflite):
    path, priv, pub = fp32_bundle
    before = path.read_bytes()
    with pytest.raises(E.FileExistsRefusal):
        B.create_bundle(digits_fp32_tflite, path, name="digits", version="1.0.0", key=priv)
    assert path.read_bytes() == before


def test_create_rejects_non_tflite_payload(tmp_path, signing_key):
    priv, _ = signing_key
    (tmp_path / "x.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(E.NotTFLiteError):
        B.create_bundle(tmp_path / "x.tflite", tmp_path / "x.ekb", name="x", version="1.0.0", key=priv)
    assert not (tmp_path / "x.ekb").exists()


def test_create_rejects_bad_name_and_version(tmp_path, digits_fp32_tflite, signing_key):
    priv, _ = signing_key
    with pytest.raises(E.ManifestError, match="version"):
        B.create_bundle(digits_fp32_tflite, tmp_path, name="d", version="one", key=priv)
    with pytest.raises(E.ManifestError, match="name"):
        B.create_bundle(digits_fp32_tflite, tmp_path, name="../d", version="1.0.0", key=priv)
    assert list(tmp_path.glob("*.ekb")) == []


# --- every bad bundle gets its own error ----------------------------------------------------------------------------


def test_truncated_archive(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle
    data = path.read_bytes()
    for cut in (100, 600, len(data) // 2, len(data) - 700):
        bad = tmp_path / f"t{cut}.ekb"
        bad.write_bytes(data[:cut])
        with pytest.raises((E.BundleCorruptError, E.HashMismatchError)):
            B.verify_bundle(bad, pub)


def test_not_an_archive(tmp_path, fp32_bundle):
    _, _, pub = fp32_bundle
    bad = tmp_path / "junk.ekb"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(E.BundleCorruptError):
        B.verify_bundle(bad, pub)


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "sub/../../evil", "dir/model.tflite"])
def test_unsafe_member_paths(fp32_bundle, tmp_path, name):
    path, _, pub = fp32_bundle
    bad = rewrite(path, tmp_path / "u.ekb", lambda m: m.__setitem__(name, b"x"))
    with pytest.raises(E.UnsafeMemberError):
        B.verify_bundle(bad, pub)
    assert not Path("/etc/evil").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(fp32_bundle, tmp_path, kind):
    path, _, pub = fp32_bundle
    buf = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m))
        link = tarfile.TarInfo("labels.txt.lnk")
        link.type = kind
        link.linkname = "/etc/passwd"
        dst.addfile(link)
    bad = tmp_path / "l.ekb"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(E.UnsafeMemberError, match="link"):
        B.verify_bundle(bad, pub)


def test_oversized_member(fp32_bundle):
    path, _, pub = fp32_bundle
    with pytest.raises(E.BundleTooLargeError):
        B.verify_bundle(path, pub, limits=B.Limits(max_member_bytes=10_000))


def test_wrong_key(fp32_bundle, tmp_path):
    path, _, _ = fp32_bundle
    _, other = generate_keypair(tmp_path / "other.key")
    with pytest.raises(E.SignatureError, match="not by the given key"):
        B.verify_bundle(path, other)


def test_one_flipped_byte_in_model(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle

    def flip(m):
        model = bytearray(m["model.tflite"])
        model[len(model) // 2] ^= 0x01
        m["model.tflite"] = bytes(model)

    bad = rewrite(path, tmp_path / "f.ekb", flip)
    with pytest.raises(E.HashMismatchError, match="model.tflite"):
        B.verify_bundle(bad, pub)


def test_tampered_manifest(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle

    def tamper(m):
        man = json.loads(m["manifest.json"])
        man["version"] = "9.9.9"
        m["manifest.json"] = canonical_bytes(man)

    bad = rewrite(path, tmp_path / "m.ekb", tamper)
    with pytest.raises(E.SignatureError, match="tampered"):
        B.verify_bundle(bad, pub)


def test_payload_not_tflite_even_when_signed(fp32_bundle, tmp_path):
    """A correctly signed and hashed bundle whose model is not a flatbuffer is still refused."""
    path, priv, pub = fp32_bundle
    key = load_private_key(priv)

    def swap(m):
        junk = b"\x00\x00\x00\x00TFL3" + os.urandom(200)  # right identifier, garbage inside
        man = json.loads(m["manifest.json"])
        man["files"]["model.tflite"] = {"sha256": B.sha256_hex(junk), "size": len(junk)}
        m["model.tflite"] = junk
        m["manifest.json"] = canonical_bytes(man)
        m["signature"] = B.signature_record(key, m["manifest.json"])

    bad = rewrite(path, tmp_path / "n.ekb", swap)
    with pytest.raises(E.NotTFLiteError):
        B.verify_bundle(bad, pub)


def test_wrong_schema_version_even_when_signed(fp32_bundle, tmp_path):
    path, priv, pub = fp32_bundle
    key = load_private_key(priv)

    def bump(m):
        man = json.loads(m["manifest.json"])
        man["schema_version"] = 3  # a version this edgekit does not read (1 and 2 are known)
        m["manifest.json"] = canonical_bytes(man)
        m["signature"] = B.signature_record(key, m["manifest.json"])

    bad = rewrite(path, tmp_path / "s.ekb", bump)
    with pytest.raises(E.SchemaVersionError, match="schema version 3"):
        B.verify_bundle(bad, pub)


def test_unpinned_extra_file(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle
    bad = rewrite(path, tmp_path / "x.ekb", lambda m: m.__setitem__("extra.bin", b"hello"))
    with pytest.raises(E.UnsafeMemberError, match="does not pin"):
        B.verify_bundle(bad, pub)


def test_extract_writes_only_inside_target(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle
    b = B.verify_bundle(path, pub)
    dest = B.extract_bundle(b, tmp_path / "x" )
    assert sorted(p.name for p in dest.iterdir()) == ["golden.npz", "labels.txt", "manifest.json", "model.tflite",
                                                     "signature"]
    assert (dest / "model.tflite").read_bytes() == b.model_bytes
    unverified = B.read_bundle(path)
    with pytest.raises(E.SignatureError):
        B.extract_bundle(unverified, tmp_path / "y")
    assert not (tmp_path / "y").exists()


# --- the archive format: canonical ustar, bounded header by header ----------------------------------------------


def _tarfile_pack(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("sizes", [[0], [1, 511], [512, 513], [10240 - 1536, 7], [100_000, 3, 0]])
def test_writer_packs_what_tarfile_packs_byte_for_byte(sizes):
    """Bundles written by tarfile (USTAR or PAX format: the same bytes for such members) read unchanged."""
    rng = np.random.default_rng(len(sizes))
    files = {f"f{i}.bin": rng.integers(0, 256, n, dtype=np.uint8).tobytes() for i, n in enumerate(sizes)}
    members = [("manifest.json", b"{}"), ("signature", b"sig"), *sorted(files.items())]
    ours = B.pack_bytes(b"{}", b"sig", files)
    assert ours == _tarfile_pack(members, tarfile.USTAR_FORMAT) == _tarfile_pack(members, tarfile.PAX_FORMAT)
    assert len(ours) % 10240 == 0


@pytest.mark.parametrize("name", ["x" * 101, "modèle.tflite", ""])
def test_writer_refuses_names_the_format_cannot_hold(name):
    with pytest.raises(E.UsageError, match="ASCII"):
        B.pack_bytes(b"{}", b"sig", {name: b"x"})


def _with_size_field(data: bytes, field: bytes) -> bytes:
    """The first member's header with another size field (and a checksum that matches it)."""
    block = bytearray(data[:512])
    block[124:136] = field
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block) + data[512:]


@pytest.mark.parametrize("field,error,words", [
    (b"99999999999\0", E.BundleCorruptError, "not an octal number"),
    (b"00000001x34\0", E.BundleCorruptError, "not an octal number"),
    (b"\x80" + bytes(10) + b"\x01", E.BundleCorruptError, "base-256"),
    (b"77777777777\0", E.BundleTooLargeError, "over the"),  # 8 GiB declared: refused before any read
])
def test_header_fields_are_bounded(fp32_bundle, tmp_path, field, error, words):
    path, _, pub = fp32_bundle
    bad = tmp_path / "h.ekb"
    bad.write_bytes(_with_size_field(path.read_bytes(), field))
    with pytest.raises(error, match=words):
        B.verify_bundle(bad, pub)


def test_member_count_is_bounded(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle
    bad = rewrite(path, tmp_path / "many.ekb", lambda m: m.update({f"x{i:02d}": b"" for i in range(20)}))
    with pytest.raises(E.BundleTooLargeError, match="more than 16 members"):
        B.verify_bundle(bad, pub)


def test_create_refuses_a_manifest_no_reader_accepts(tmp_path, digits_fp32_tflite, signing_key):
    priv, _ = signing_key
    deep: dict = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(E.ManifestError, match="too deeply nested"):
        B.create_bundle(digits_fp32_tflite, tmp_path / "d.ekb", name="d", version="1.0.0", key=priv,
                        provenance={"deep": deep})
    with pytest.raises(E.BundleTooLargeError, match="manifest is"):
        B.create_bundle(digits_fp32_tflite, tmp_path / "d.ekb", name="d", version="1.0.0", key=priv,
                        provenance={"pad": "x" * (1 << 20)})
    assert not (tmp_path / "d.ekb").exists()
