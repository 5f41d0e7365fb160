"""The fleet's certificate authority for device (and broker, and service) certificates, with a CRL.

EC P-256 keys, ``cryptography.x509``. Issued serials are kept in ``ca/issued.json`` and revoked ones in
``ca/revoked.json``; :func:`write_crl` renders ``ca/crl.pem`` which the broker's TLS listeners check.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgekit.fsutil import atomic_write

from .errors import FleetError
from .paths import FleetPaths

CA_YEARS = 10
CERT_DAYS = 3650
CRL_DAYS = 3650


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(paths: FleetPaths, fleet_id: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgekit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"edgekit fleet {fleet_id} CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    paths.ca_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.ca_key, _key_pem(key), mode=0o600)
    atomic_write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    atomic_write(paths.ca_issued, b"{}")
    atomic_write(paths.revoked, b"[]")
    write_crl(paths)


def _load_ca(paths: FleetPaths):
    try:
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except FileNotFoundError as exc:
        raise FleetError(f"the fleet CA is missing ({exc.filename})",
                         hint="run 'edgekit fleet init' for this data dir") from None
    return key, cert


def issue_cert(paths: FleetPaths, common_name: str, cert_path: Path, key_path: Path, *, server: bool = False,
               hosts: list[str] | None = None) -> int:
    """Issue a certificate for ``common_name`` (client by default); returns its serial."""
    ca_key, ca_cert = _load_ca(paths)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    serial = x509.random_serial_number()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        sans: list[x509.GeneralName] = []
        for h in dict.fromkeys(["127.0.0.1", "localhost", *(hosts or [])]):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    atomic_write(key_path, _key_pem(key), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    issued = json.loads((paths.ca_issued).read_text())
    issued.setdefault(common_name, []).append(serial)
    atomic_write(paths.ca_issued, json.dumps(issued, indent=1).encode())
    return serial


def revoke_all(paths: FleetPaths, common_name: str) -> list[int]:
    """Revoke every certificate issued to ``common_name`` and rewrite the CRL; returns the serials revoked now."""
    issued = json.loads((paths.ca_issued).read_text())
    revoked = json.loads(paths.revoked.read_text())
    known = {r["serial"] for r in revoked}
    new = [s for s in issued.get(common_name, []) if s not in known]
    ts = _now().timestamp()
    revoked.extend({"serial": s, "cn": common_name, "ts": ts} for s in new)
    atomic_write(paths.revoked, json.dumps(revoked, indent=1).encode())
    write_crl(paths)
    return new


def write_crl(paths: FleetPaths) -> None:
    ca_key, ca_cert = _load_ca(paths)
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CRL_DAYS)))
    for r in json.loads(paths.revoked.read_text()):
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(r["serial"])
            .revocation_date(dt.datetime.fromtimestamp(r["ts"], dt.timezone.utc)).build())
    crl = b.sign(ca_key, hashes.SHA256())
    atomic_write(paths.crl, crl.public_bytes(serialization.Encoding.PEM))


def is_revoked(paths: FleetPaths, serial: int) -> bool:
    return any(r["serial"] == serial for r in json.loads(paths.revoked.read_text()))
