"""Making the local lab's etcd certificates (see `chainlab.local.pki` for why and where)."""

from __future__ import annotations

import datetime
import os
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chainlab.local.pki import Pki

VALIDITY = datetime.timedelta(days=3650)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, usage: x509.ObjectIdentifier,
          addresses: list[IPv4Address]) -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + VALIDITY)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(a) for a in addresses]),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _new_ca(pki: Pki, lab: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"chainlab {lab} etcd CA")
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    _write(pki.ca_key, _key_pem(key))
    _write(pki.ca, ca.public_bytes(serialization.Encoding.PEM))
    cert, client_key = _leaf(ca, key, f"chainlab.{lab}", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write(pki.client_key, client_key)
    _write(pki.client_cert, cert)


def _server_addresses(pki: Pki) -> list[IPv4Address]:
    try:
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [a for a in names.get_values_for_type(x509.IPAddress) if isinstance(a, IPv4Address)]


def ensure_pki(pki: Pki, lab: str, etcd_address: IPv4Address) -> bool:
    """The CA and client certificate once; etcd's server certificate for `etcd_address` (made
    again when etcd moved). True if anything was written."""
    pki.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki.dir, 0o700)
    changed = False
    if not (pki.ca.exists() and pki.ca_key.exists() and pki.client_cert.exists() and pki.client_key.exists()):
        _new_ca(pki, lab)
        changed = True
    if changed or etcd_address not in _server_addresses(pki):
        ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        cert, key = _leaf(ca, ca_key, f"etcd.{lab}", ExtendedKeyUsageOID.SERVER_AUTH,
                          [etcd_address, IPv4Address("127.0.0.1")])
        _write(pki.server_key, key)
        _write(pki.server_cert, cert)
        changed = True
    return changed
