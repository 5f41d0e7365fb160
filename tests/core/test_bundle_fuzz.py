"""Bundles under attack: named mutation classes beside random ones.

The property throughout: no mutation of a real signed bundle verifies unless its bytes equal the original's, and
nothing but a one-line EdgekitError escapes the reader. Each test prints how many mutations it tried and how they
ended (``pytest -s`` is not needed: the counts are written to the terminal directly).
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from itertools import permutations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.bundle import parse_bundle
from edgekit.errors import EdgekitError
from edgekit.keys import load_private_key, load_public_key
from tests.support.bundle_mutations import (ALGS, CLASSES, MANIFEST, SIGNATURE, all_cases, read_members, replace,
                                            sign, tar_pack)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def original(fp32_bundle) -> bytes:
    return fp32_bundle[0].read_bytes()


@pytest.fixture(scope="module")
def keys(fp32_bundle):
    _, priv, pub = fp32_bundle
    return load_private_key(priv), load_public_key(pub)


@pytest.fixture(scope="module")
def mutations(original, keys, tmp_path_factory):
    return all_cases(original, keys[0], tmp_path_factory.mktemp("repack"))


def outcome(data: bytes, pubkey) -> str:
    """'verified', or the name of the EdgekitError raised; any other exception fails the test."""
    try:
        parse_bundle(data, pubkey)
    except EdgekitError as exc:
        assert exc.message and "\n" not in exc.message, f"not a one-line error: {exc.message!r}"
        return type(exc).__name__
    return "verified"


def check_property(counts: Counter, data: bytes, original: bytes, pubkey) -> None:
    got = outcome(data, pubkey)
    counts["mutations"] += 1
    counts[got] += 1
    if data == original:
        counts["equal to the original"] += 1
    assert got != "verified" or data == original, "a mutated bundle verified"


def report(capsys, title: str, counts: Counter) -> None:
    total, verified, same = counts.pop("mutations"), counts.pop("verified", 0), counts.pop("equal to the original", 0)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    with capsys.disabled():
        print(f"\n[bundle fuzz] {title}: {total} mutations, {verified} verified ({same} byte-equal to the original); "
              f"rejected: {detail}")


# --- named cases, class by class ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_named_mutations_are_rejected(cls, mutations, original, keys, capsys):
    cases = [m for m in mutations if m.cls == cls]
    assert len(cases) >= 5
    counts: Counter = Counter()
    unkeyed: Counter = Counter()  # the same mutations read with no key
    for mut in cases:
        if mut.expect is None:  # e.g. a tarfile USTAR re-pack: the writer's packing, byte for byte
            assert mut.data == original, mut.case
            assert parse_bundle(mut.data, keys[1]).signature_verified, mut.case
        else:
            assert mut.data != original, mut.case
            with pytest.raises(mut.expect) as err:
                parse_bundle(mut.data, keys[1])
            assert "\n" not in err.value.message, (mut.case, err.value.message)
        check_property(counts, mut.data, original, keys[1])
        # without a key (``bundle inspect``) every one is refused too: the record's layout, algorithm and key-id
        # format and its agreement with the manifest's signing entry, the bounds and the archive form need no key
        check_property(unkeyed, mut.data, original, None)
    report(capsys, f"named class {cls}", counts)
    report(capsys, f"named class {cls}, read without a key", unkeyed)


# what the one-line error must say, for one case of each class
MESSAGES = [
    ("deep-array-unsigned", ["signature"]),  # authenticated first: the deep JSON is never parsed
    ("deep-array-signed", ["deep"]),
    ("huge-record", ["signature record", "limit"]),
    ("other-hex-char", ["key"]),
    ("base64-unused-bits", ["signature record", "canonical"]),
    ("alg='rsa'", ["'rsa'", "ed25519"]),
    ("alg='ED25519'", ["'ED25519'"]),
    ("tarfile-gnu", ["GNU"]),
    ("tarfile-pax-header", ["PAX"]),
    ("mtime", ["mtime"]),
    ("sorted-order", ["order"]),
    ("no-record-padding", ["padding"]),
]


@pytest.mark.parametrize("case,words", MESSAGES, ids=[c for c, _ in MESSAGES])
def test_messages_name_what_is_wrong(mutations, keys, case, words):
    mut = next(m for m in mutations if m.case == case)
    with pytest.raises(EdgekitError) as err:
        parse_bundle(mut.data, keys[1])
    assert all(w in err.value.message for w in words), err.value.message


def test_forged_key_id_is_never_reported(mutations, keys):
    """A bundle whose record names a key id the verifying key does not have is refused; the id shown is derived."""
    from edgekit.keys import key_id

    for case in ("non-hex-char", "other-hex-char", "first-char", "upper-case"):
        mut = next(m for m in mutations if m.case == case)
        forged = json.loads(dict(read_members(mut.data))[SIGNATURE])["key_id"]
        assert forged != key_id(keys[1])
        with pytest.raises(EdgekitError) as err:
            parse_bundle(mut.data, keys[1])
        assert type(err.value).__name__ == "SignatureError"
    assert parse_bundle(next(m for m in mutations if m.case == "tarfile-ustar").data,
                        keys[1]).signature["key_id"] == key_id(keys[1])


# --- hypothesis: random mutations and random members of each class ------------------------------------------------


def run_property(capsys, title: str, original: bytes, pubkey, make, **strategies) -> Counter:
    """Hypothesis over ``strategies``: ``make(**drawn)`` builds the bytes, :func:`check_property` judges them."""
    counts: Counter = Counter()

    @SETTINGS
    @given(**strategies)
    def prop(**drawn):
        check_property(counts, make(**drawn), original, pubkey)

    prop()
    seen = Counter(counts)
    report(capsys, title, counts)
    return seen


def test_random_byte_mutations_never_verify(original, keys, capsys):
    def make(data):
        raw = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8), label="mutations")):
            i = data.draw(st.integers(0, len(raw) - 1), label="offset")
            raw[i] ^= data.draw(st.integers(1, 255), label="xor")
        if data.draw(st.booleans()) and data.draw(st.booleans()):  # about one time in four also truncate
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
        return bytes(raw)

    run_property(capsys, "random byte flips and cuts", original, keys[1], make, data=st.data())


def test_random_deep_json_never_verifies(original, keys, capsys):
    m = read_members(original)
    brackets = {"array": (b"[", b"]"), "object": (b'{"a":', b"}"), "mixed": (b'[{"a":', b"}]")}

    def make(depth, kind, where, signed):
        open_, close = brackets[kind]
        body = open_ * depth + b"1" + close * depth
        if where == SIGNATURE:
            return tar_pack(replace(m, signature=body))
        return tar_pack(replace(m, manifest_json=body, **({"signature": sign(keys[0], body)} if signed else {})))

    run_property(capsys, "random deep JSON (manifest or signature record, signed or not)", original, keys[1], make,
                 depth=st.integers(33, 300_000), kind=st.sampled_from(sorted(brackets)),
                 where=st.sampled_from([MANIFEST, SIGNATURE]), signed=st.booleans())


def test_random_signature_record_edits_never_verify(original, keys, capsys):
    m = read_members(original)
    rec = json.loads(dict(m)[SIGNATURE])

    def make(kid, alg, compact):
        if isinstance(kid, list):  # replace a few characters of the real key id by other hex digits
            chars = list(rec["key_id"])
            for i in kid:
                chars[i] = "0123456789abcdef"[(int(chars[i], 16) + 1 + i) % 16]
            kid = "".join(chars)
        raw = json.dumps({**rec, "key_id": kid, "alg": alg}, sort_keys=True,
                         separators=(",", ":") if compact else None).encode()
        return tar_pack(replace(m, signature=raw))

    seen = run_property(
        capsys, "random key-id / alg / layout edits of the signature record", original, keys[1], make,
        kid=st.one_of(st.just(rec["key_id"]), st.text("0123456789abcdefABCDEFgx -", max_size=20),
                      st.lists(st.sampled_from(list(range(16))), min_size=1, max_size=3)),
        alg=st.one_of(st.just("ed25519"), st.sampled_from(ALGS), st.text(max_size=12), st.none()),
        compact=st.booleans())
    assert seen["equal to the original"] > 0, "the unchanged record is among the cases, and verifies"


def test_random_repacks_never_verify_unless_identical(original, keys, capsys):
    m = read_members(original)

    def make(fmt, order, mtime, mode, owner, uid):
        return tar_pack([m[i] for i in order], fmt, mtime=mtime, mode=mode, uname=owner, gname=owner, uid=uid)

    run_property(capsys, "random re-packs (format, order, mtime, mode, owner)", original, keys[1], make,
                 fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
                 order=st.sampled_from(list(permutations(range(len(m))))),
                 mtime=st.sampled_from([0, 1, 1_700_000_000]), mode=st.sampled_from([0o644, 0o600, 0o755, 0o4644]),
                 owner=st.sampled_from(["", "root"]), uid=st.sampled_from([0, 1000]))
