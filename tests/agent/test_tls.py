"""The MQTT link with TLS, mutual TLS and username/password against a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.procs import Mosquitto, free_port

from .conftest import write_config


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, *, ca=False, server=False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture
def tls_broker(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edgekit test CA", ca_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca": _write(d / "ca.pem", ca),
        "server_cert": _write(d / "server.pem", _cert("localhost", srv_key, ca, ca_key, server=True)),
        "server_key": _write(d / "server.key", key=srv_key),
        "client_cert": _write(d / "client.pem", _cert("dev1", cli_key, ca, ca_key)),
        "client_key": _write(d / "client.key", key=cli_key),
        "passwords": d / "passwords",
    }
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(files["passwords"]), "dev1", "s3cret"], check=True,
                   capture_output=True)
    mtls_port, pw_port = free_port(), free_port()
    broker = Mosquitto(tmp_path / "broker")
    tls = f"cafile {files['ca']}\ncertfile {files['server_cert']}\nkeyfile {files['server_key']}\n"
    broker.conf.write_text(
        "per_listener_settings true\nuser root\npersistence false\n"
        f"listener {mtls_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n"
        "allow_anonymous false\n"
        f"listener {pw_port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {files['passwords']}\n")
    broker.port = mtls_port
    broker.start()
    broker.ports = {"mtls": mtls_port, "password": pw_port}
    broker.files = files
    yield broker
    broker.stop()


def _connected(agent, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.client().health()["mqtt_connected"]:
            return True
        time.sleep(0.05)
    return False


def test_mutual_tls(tmp_path, bundles, tls_broker, agent_factory):
    f = tls_broker.files
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=tls_broker,
                       mqtt={"port": tls_broker.ports["mtls"], "tls": True, "ca_file": str(f["ca"]),
                             "cert_file": str(f["client_cert"]), "key_file": str(f["client_key"])})
    assert _connected(agent_factory(cfg).start())


def test_tls_with_password_and_a_wrong_password(tmp_path, bundles, tls_broker, agent_factory):
    f = tls_broker.files
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "bad").write_text("guess\n")
    common = {"port": tls_broker.ports["password"], "tls": True, "ca_file": str(f["ca"]), "username": "dev1"}
    good = write_config(tmp_path / "good.toml", pub=bundles["pub"], data_dir=tmp_path / "d1", bundle=bundles["int8"],
                        broker=tls_broker, mqtt=dict(common, password_file=str(tmp_path / "pw")))
    assert _connected(agent_factory(good).start())
    bad = write_config(tmp_path / "bad.toml", pub=bundles["pub"], data_dir=tmp_path / "d2", bundle=bundles["int8"],
                       broker=tls_broker, mqtt=dict(common, password_file=str(tmp_path / "bad")))
    agent = agent_factory(bad).start()
    assert not _connected(agent, timeout=3)
    health = agent.client().health()
    assert health["link"]["connect_failures"] >= 1 and health["status"] == "ok"  # still serves locally
