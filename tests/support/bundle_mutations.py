"""Named mutations of a real signed bundle, in four classes, for the fuzz tests and for the agent's update path.

The classes are the ways an attacker can change a bundle's bytes without touching a payload:

* ``json``   — deep or huge JSON in the manifest or the signature record, signed with the fleet key or not;
* ``key_id`` — edits of the signature record's text: its key id above all, also its layout and base64;
* ``alg``    — another signature algorithm named in the record (or in the signed manifest);
* ``repack`` — the same members re-packed: other tar formats (tarfile and GNU tar), metadata, order, padding.

Archives are read and written here with :mod:`tarfile` and GNU ``tar``, never with edgekit's own packer, so that
the tests do not take the code under test as their reference.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import (BundleCorruptError, BundleTooLargeError, EdgekitError, ManifestError, SignatureError,
                            UnsafeMemberError)

CLASSES = ("json", "key_id", "alg", "repack")
MANIFEST, SIGNATURE = "manifest.json", "signature"


@dataclass(frozen=True)
class Mutation:
    cls: str
    case: str
    data: bytes
    #: the error class a reader must raise (None: the bytes are the original's, so it must verify)
    expect: type[EdgekitError] | tuple[type[EdgekitError], ...] | None
    #: the manifest in ``data`` carries a valid signature by the fleet key
    signed: bool = False


def read_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        return [(m.name, t.extractfile(m).read()) for m in t]


def tar_pack(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, **meta: Any) -> bytes:
    """Members packed by tarfile, each with mode 0644 / mtime 0 unless ``meta`` (TarInfo attributes) says else."""
    buf = io.BytesIO()
    pax = meta.pop("pax_headers", None)
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **({"pax_headers": pax} if pax else {})) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            for k, v in meta.items():
                setattr(info, k, v)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def replace(members: list[tuple[str, bytes]], **new: bytes) -> list[tuple[str, bytes]]:
    return [(n, new.get(n.replace(".", "_"), d)) for n, d in members]


def sign(key, manifest: bytes, **fields: Any) -> bytes:
    """A signature record over ``manifest`` in the writer's layout; ``fields`` override or (None) drop entries."""
    from edgekit.keys import key_id

    rec: dict[str, Any] = {"alg": "ed25519", "key_id": key_id(key),
                           "sig": base64.b64encode(key.sign(manifest)).decode()}
    for k, v in fields.items():
        if v is _DROP:
            rec.pop(k, None)
        else:
            rec[k] = v
    return json.dumps(rec, sort_keys=True).encode()


_DROP = object()


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _nested(depth: int) -> Any:
    obj: Any = {}
    for _ in range(depth):
        obj = {"a": obj}
    return obj


# --- the four classes -----------------------------------------------------------------------------------------------


def json_cases(original: bytes, key) -> list[Mutation]:
    m = read_members(original)
    man = dict(m)[MANIFEST]
    doc = json.loads(man)
    deep_array = b"[" * 200_000 + b"]" * 200_000              # 400 kB: under the size limit, far over any depth
    deep_obj = _canon({**doc, "provenance": _nested(100)})      # a real manifest with one deep field
    huge = _canon({**doc, "provenance": {"pad": "x" * (1 << 20)}})  # just over the 1 MiB manifest limit
    out = []
    for case, body, expect_unsigned, expect_signed in [
            ("deep-array", deep_array, SignatureError, ManifestError),
            ("deep-object", deep_obj, SignatureError, ManifestError),
            ("huge-manifest", huge, BundleTooLargeError, BundleTooLargeError)]:
        out.append(Mutation("json", f"{case}-unsigned", tar_pack(replace(m, manifest_json=body)), expect_unsigned))
        out.append(Mutation("json", f"{case}-signed",
                            tar_pack(replace(m, manifest_json=body, signature=sign(key, body))), expect_signed,
                            signed=True))
    for case, record in [("deep-record", b"[" * 100_000 + b"]" * 100_000),
                         ("deep-record-small", b"[" * 400 + b"]" * 400),
                         ("huge-record", sign(key, man)[:-1] + b" " * (2 << 20) + b"}")]:
        out.append(Mutation("json", case, tar_pack(replace(m, signature=record)), SignatureError))
    return out


def key_id_cases(original: bytes, key) -> list[Mutation]:
    m = read_members(original)
    man, raw = dict(m)[MANIFEST], dict(m)[SIGNATURE]
    rec = json.loads(raw)
    kid = rec["key_id"]

    def swap(i: int, c: str) -> str:
        return kid[:i] + c + kid[i + 1:]

    other = "0" if kid[9] != "0" else "1"
    texts = {
        "non-hex-char": swap(9, "g"),
        "other-hex-char": swap(9, other),
        "first-char": swap(0, "f" if kid[0] != "f" else "e"),
        "upper-case": kid.upper() if kid.upper() != kid else swap(0, "A"),
        "longer": kid + "0",
        "shorter": kid[:-1],
        "empty": "",
        "spaces": f" {kid} ",
    }
    out = [Mutation("key_id", case, tar_pack(replace(m, signature=json.dumps({**rec, "key_id": t},
                                                                           sort_keys=True).encode())),
                    SignatureError) for case, t in texts.items()]
    b64 = rec["sig"]  # 64 bytes -> 86 characters + "==": the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    same_bytes = b64[:85] + alphabet[alphabet.index(b64[85]) ^ 1] + b64[86:]
    layout = {
        "key-id-number": json.dumps({**rec, "key_id": int(kid, 16)}, sort_keys=True).encode(),
        "key-id-missing": json.dumps({k: v for k, v in rec.items() if k != "key_id"}, sort_keys=True).encode(),
        "compact-layout": json.dumps(rec, sort_keys=True, separators=(",", ":")).encode(),
        "same-length-spacing": raw.replace(b'", "', b'" ,"', 1),
        "unsorted-keys": json.dumps({"sig": rec["sig"], "key_id": kid, "alg": rec["alg"]}).encode(),
        "extra-field": json.dumps({**rec, "note": "hello"}, sort_keys=True).encode(),
        "base64-unused-bits": json.dumps({**rec, "sig": same_bytes}, sort_keys=True).encode(),
        "base64-newline": json.dumps({**rec, "sig": b64[:40] + "\n" + b64[40:]}, sort_keys=True).encode(),
        "trailing-newline": raw + b"\n",
    }
    out += [Mutation("key_id", case, tar_pack(replace(m, signature=r)), SignatureError) for case, r in layout.items()]
    # the signed manifest names another key than the one that signed it
    doc = json.loads(man)
    body = _canon({**doc, "signing": {**doc["signing"], "key_id": swap(9, other)}})
    out.append(Mutation("key_id", "manifest-key-id-signed",
                        tar_pack(replace(m, manifest_json=body, signature=sign(key, body))), SignatureError,
                        signed=True))
    return out


#: algorithm names the record may carry; each must be refused by name
ALGS: list[Any] = ["rsa", "RSA", "ED25519", "ed25519 ", "Ed25519", "ed448", "none", "", "ecdsa-p256"]


def alg_cases(original: bytes, key) -> list[Mutation]:
    m = read_members(original)
    man = dict(m)[MANIFEST]
    out = [Mutation("alg", f"alg={a!r}", tar_pack(replace(m, signature=sign(key, man, alg=a))), SignatureError)
           for a in ALGS]
    out += [Mutation("alg", case, tar_pack(replace(m, signature=sign(key, man, alg=v))), SignatureError)
            for case, v in [("alg-null", None), ("alg-number", 1), ("alg-list", ["ed25519"]), ("alg-missing", _DROP)]]
    doc = json.loads(man)
    body = _canon({**doc, "signing": {**doc["signing"], "alg": "rsa"}})
    out.append(Mutation("alg", "manifest-alg-signed", tar_pack(replace(m, manifest_json=body,
                                                                       signature=sign(key, body))),
                        SignatureError, signed=True))
    return out


def gnu_tar(members: list[tuple[str, bytes]], workdir: Path, *args: str) -> bytes:
    """The members packed by GNU tar in the given order, with canonical metadata asked for explicitly."""
    src = workdir / "members"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name, data in members:
        (src / name).write_bytes(data)
    out = workdir / "repacked.tar"
    subprocess.run(["tar", "-cf", str(out), "-C", str(src), "--owner=0", "--group=0", "--numeric-owner",
                    "--mtime=@0", "--mode=0644", *args, *[n for n, _ in members]], check=True)
    return out.read_bytes()


def repack_cases(original: bytes, workdir: Path) -> list[Mutation]:
    m = read_members(original)
    body_end = sum(512 + -(-len(d) // 512) * 512 for _, d in m)  # headers and padded data of every member
    pad_at = 512 + len(m[0][1])  # the zero padding after the manifest's data (or the next header if none)
    cases: list[tuple[str, bytes]] = [
        ("tarfile-ustar", tar_pack(m, tarfile.USTAR_FORMAT)),
        ("tarfile-pax", tar_pack(m, tarfile.PAX_FORMAT)),
        ("tarfile-gnu", tar_pack(m, tarfile.GNU_FORMAT)),
        ("tarfile-pax-header", tar_pack(m, tarfile.PAX_FORMAT, pax_headers={"comment": "re-packed"})),
        ("tarfile-pax-mtime", tar_pack(m, tarfile.PAX_FORMAT, mtime=1.5)),
        ("mtime", tar_pack(m, mtime=1_700_000_000)),
        ("mode-0600", tar_pack(m, mode=0o600)),
        ("mode-0755", tar_pack(m, mode=0o755)),
        ("owner-names", tar_pack(m, uname="root", gname="root")),
        ("uid-1000", tar_pack(m, uid=1000, gid=1000)),
        ("old-regular-type", tar_pack(m, type=tarfile.AREGTYPE)),
        ("contiguous-type", tar_pack(m, type=tarfile.CONTTYPE)),
        ("sorted-order", tar_pack(sorted(m))),
        ("signature-first", tar_pack([m[1], m[0], *m[2:]])),
        ("payloads-reversed", tar_pack([m[0], m[1], *reversed(m[2:])])),
        ("no-record-padding", original[:body_end + 1024]),
        ("one-end-block", original[:body_end + 512] + b"\0" * (len(original) - body_end - 512 - 512)),
        ("extra-record", original + b"\0" * 10240),
        ("trailing-garbage", original + b"x" * 512),
        ("garbage-in-member-padding", original[:pad_at] + b"x" + original[pad_at + 1:]),
        ("garbage-in-end-block", original[:body_end + 600] + b"x" + original[body_end + 601:]),
    ]
    for fmt in ("ustar", "posix", "gnu", "v7", "oldgnu"):
        cases.append((f"gnu-tar-{fmt}", gnu_tar(m, workdir, f"--format={fmt}")))
    cases.append(("gnu-tar-ustar-blocking-1", gnu_tar(m, workdir, "--format=ustar", "--blocking-factor=1")))
    return [Mutation("repack", case, data, None if data == original else (BundleCorruptError, UnsafeMemberError))
            for case, data in cases]


def all_cases(original: bytes, key, workdir: Path) -> list[Mutation]:
    return [*json_cases(original, key), *key_id_cases(original, key), *alg_cases(original, key),
            *repack_cases(original, workdir)]
