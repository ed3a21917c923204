"""appliance.tls: the device's self-signed certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.tls import (
    certificate_fingerprint,
    ensure_certificate,
    make_certificate,
    server_ssl_context,
)


def make(tmp_path: Path, **kw: object) -> tuple[Path, Path, str]:
    cert, key = tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    fingerprint = ensure_certificate(cert, key, **kw)  # type: ignore[arg-type]
    return cert, key, fingerprint


def test_ensure_certificate_writes_a_p256_pair_with_a_private_key(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cert, key, _ = make(tmp_path, hostname="hearth-abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP256R1)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert parsed.public_key() == private.public_key()
    assert sorted(p.name for p in cert.parent.iterdir()) == ["server.crt", "server.key"]


def test_ensure_certificate_names_hostname_hearth_local_and_ips(tmp_path: Path) -> None:
    cert, _, _ = make(tmp_path, hostname="hearth-abc", ip_addresses=["192.168.1.20", "fe80::1"])
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    cn = parsed.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "hearth-abc" and parsed.issuer == parsed.subject
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hearth-abc", "hearth.local"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.1.20"), ipaddress.ip_address("fe80::1")]
    basic = parsed.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca


def test_ensure_certificate_is_valid_for_ten_years(tmp_path: Path) -> None:
    cert, _, _ = make(tmp_path)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert parsed.not_valid_before_utc < now
    lifetime = parsed.not_valid_after_utc - now
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)


def test_ensure_certificate_fingerprint_is_sha256_of_der(tmp_path: Path) -> None:
    cert, _, fingerprint = make(tmp_path)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert fingerprint == hashlib.sha256(der).hexdigest().upper()[:2] + fingerprint[2:]
    assert fingerprint.replace(":", "") == hashlib.sha256(der).hexdigest().upper()
    assert len(fingerprint) == 95 and fingerprint.count(":") == 31
    assert certificate_fingerprint(cert.read_bytes()) == fingerprint


def test_ensure_certificate_reuses_an_existing_pair(tmp_path: Path) -> None:
    cert, key, first = make(tmp_path)
    before = (cert.read_bytes(), key.read_bytes())
    _, _, second = make(tmp_path)
    assert second == first and (cert.read_bytes(), key.read_bytes()) == before


def test_ensure_certificate_replaces_a_half_written_pair(tmp_path: Path) -> None:
    cert, key, first = make(tmp_path)
    cert.unlink()  # as if power failed between writing the key and the certificate
    _, _, second = make(tmp_path)
    assert second != first
    server_ssl_context(cert, key)  # the new pair matches


def test_server_ssl_context_requires_tls_1_2(tmp_path: Path) -> None:
    cert, key, _ = make(tmp_path)
    context = server_ssl_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_make_certificate_returns_pem() -> None:
    cert_pem, key_pem = make_certificate("x")
    assert cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
