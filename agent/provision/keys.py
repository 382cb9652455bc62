"""The device identity a provisioned card carries: an Ed25519 signing key and a TLS client key.

The signing key gets its kid as the RFC 7638 JWK thumbprint, the same identity the verifier
uses (``agent.crypto.keys.kid_for``); ``new_signing_key`` is the one function to swap for
``agent.crypto.keys.generate_keypair`` once that lands. The TLS key is separate (ECDSA P-256,
which every broker accepts) so that a leaked broker credential cannot sign statistics.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import KeyFileError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_of(public_key: Ed25519PublicKey) -> dict[str, str]:
    """RFC 8037 public JWK with its RFC 7638 thumbprint as kid."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    kid = b64url(hashlib.sha256(rfc8785.dumps(members)).digest())
    return {**members, "kid": kid}


@dataclass(frozen=True)
class SigningKey:
    """The private PEM stays inside this object and the bundle; only the JWK is shown."""

    private_pem: bytes
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def new_signing_key() -> SigningKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(pem, jwk_of(key.public_key()))


@dataclass(frozen=True)
class TlsIdentity:
    """The broker client key and either a CSR (production) or a certificate (lab CA)."""

    private_pem: bytes
    csr_pem: bytes
    cert_pem: bytes | None

    def __repr__(self) -> str:
        return f"TlsIdentity(cert={'yes' if self.cert_pem else 'no'})"


def _subject(device_id: str, organization: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, device_id)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def new_tls_identity(
    device_id: str,
    organization: str | None,
    lab_ca: tuple[bytes, bytes] | None = None,
    days: int = 825,
) -> TlsIdentity:
    """CN = device id, so a broker with ``use_identity_as_username`` sees the device id."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject(device_id, organization)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = None
    if lab_ca is not None:
        cert_pem = _sign_with_lab_ca(csr, lab_ca, days)
    return TlsIdentity(key_pem, csr.public_bytes(serialization.Encoding.PEM), cert_pem)


def _sign_with_lab_ca(csr: x509.CertificateSigningRequest, lab_ca: tuple[bytes, bytes], days: int) -> bytes:
    ca_cert_pem, ca_key_pem = lab_ca
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"lab CA: cannot load the CA certificate or key ({exc})") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | Ed25519PrivateKey):
        raise KeyFileError(
            f"lab CA: the CA key is {type(ca_key).__name__}; use an EC, RSA or Ed25519 key"
        )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    algorithm = None if isinstance(ca_key, Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(ca_key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM)
