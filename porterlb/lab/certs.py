"""Certificates for a throwaway control plane: one CA, a serving cert, an admin client cert.

The API server authenticates the admin by a client certificate whose organisation is
``system:masters`` (the group RBAC always allows), as controller-runtime's envtest does; the
same CA signs the serving certificate, so one ``certificate-authority-data`` in the
kubeconfig verifies the server. Keys are EC P-256: fast to generate, accepted by Go's TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)
"""Long enough for any lab or test session, short enough that a leaked file is harmless."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """PEM files written by :func:`write`, as paths."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(parts)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write(
    directory: Path, *, serving_ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()
) -> Bundle:
    """Create the CA, serving and admin certificates and the service-account key in `directory`.

    The serving certificate covers loopback and ``serving_ips``: a lab's speakers reach the API
    server on their router's LAN address (``porterlb.lab.apiproxy``), as a node reaches a
    control-plane endpoint.
    """
    ca_key = _key()
    ca_name = _name("porterlb-lab-ca")
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = _key()
    serving = (
        _builder(_name("kube-apiserver"), ca_name, serving_key)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    *(x509.IPAddress(ip) for ip in serving_ips),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    admin_key = _key()
    admin = (
        _builder(_name("porterlb-admin", "system:masters"), ca_name, admin_key)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    bundle = Bundle(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        service_account_key=directory / "service-account.key",
        service_account_public_key=directory / "service-account.pub",
    )
    bundle.ca_cert.write_bytes(_pem_cert(ca))
    bundle.serving_cert.write_bytes(_pem_cert(serving))
    bundle.serving_key.write_bytes(_pem_key(serving_key))
    bundle.admin_cert.write_bytes(_pem_cert(admin))
    bundle.admin_key.write_bytes(_pem_key(admin_key))
    signer = _key()
    bundle.service_account_key.write_bytes(_pem_key(signer))
    bundle.service_account_public_key.write_bytes(
        signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key_path in (bundle.serving_key, bundle.admin_key, bundle.service_account_key):
        key_path.chmod(0o600)
    return bundle
