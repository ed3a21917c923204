"""The TLS listener's self-signed certificate: made once per device, shown by fingerprint.

Electrum pins a self-signed server certificate on first use, so the certificate must
stay the same for the device's life: it is made on first start (ECDSA P-256, valid for
ten years) and reused afterwards. Users compare the SHA-256 fingerprint shown on the
device with the one their wallet shows. The private key is written 0600 through a
temporary file, fsync and rename, so a power cut never leaves a torn key behind.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .durability import write_atomic

__all__ = [
    "DEFAULT_HOSTNAME",
    "VALIDITY_DAYS",
    "certificate_fingerprint",
    "ensure_certificate",
    "make_certificate",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

DEFAULT_HOSTNAME = "hearth.local"
VALIDITY_DAYS = 3650


def make_certificate(hostname: str, ip_addresses: Sequence[str] = (), *,
                     now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new (certificate PEM, PKCS#8 key PEM) pair for ``hostname``, hearth.local and IPs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or dt.datetime.now(dt.UTC)
    dns_names = list(dict.fromkeys([hostname, DEFAULT_HOSTNAME]))
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # A day of slack: a Pi has no RTC and its clock may lag until NTP syncs.
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        # Python 3.13 clients verify strictly (VERIFY_X509_STRICT): key identifiers needed.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:...``, the form wallets and openssl show."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure_certificate(cert_path: Path, key_path: Path, *, hostname: str = DEFAULT_HOSTNAME,
                       ip_addresses: Sequence[str] = ()) -> str:
    """Create the certificate and key unless both exist; return the fingerprint.

    The key is written before the certificate, so a start interrupted in between finds
    no certificate and makes a fresh pair.
    """
    if cert_path.exists() and key_path.exists():
        return certificate_fingerprint(cert_path.read_bytes())
    cert_pem, key_pem = make_certificate(hostname, ip_addresses)
    for path in (key_path, cert_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)
    fingerprint = certificate_fingerprint(cert_pem)
    log.info("made a TLS certificate for %s, SHA-256 fingerprint %s", hostname, fingerprint)
    return fingerprint


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Server-side context for the TLS listener (TLS 1.2 or later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context

