"""Device keys: Ed25519 only, loaded safely, identified by their RFC 7638 JWK thumbprint.

A private key is a PKCS#8 PEM file that only its owner may read (mode & 0o077 == 0); the
permission is checked on the opened descriptor, so the file read is the file checked. A bare
file name (``keys.private_key: device.key``, as provisioning writes it) is looked up in systemd's
``$CREDENTIALS_DIRECTORY`` first (``LoadCredential=``), then beside the config file
(``resolve_key_path``: the one place that says where the device key is).
Public keys travel as RFC 8037 JWKs (``{"kty": "OKP", "crv": "Ed25519", "x": ...}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.atomic import write_new
from agent.crypto.canonical import b64url_decode, b64url_encode
from agent.errors import KeyFileError, PayloadError
from agent.user_files import folder_as_named, read_user_bytes, read_user_text

MAX_KEY_FILE_BYTES = 64 * 1024


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    """The 32-byte public key (RFC 8032 encoding)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """RFC 8037 JWK of a public key, with its thumbprint as ``kid``."""
    x = b64url_encode(raw_public(public_key))
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid_for(public_key)}


def kid_for(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: base64url(SHA-256(JCS of the required members crv, kty, x))."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw_public(public_key))}
    return b64url_encode(hashlib.sha256(rfc8785.dumps(members)).digest())


def public_from_jwk(jwk: Any, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from an RFC 8037 JWK; a private member ``d`` is refused."""
    if not isinstance(jwk, dict):
        raise PayloadError(f"{where}: a JWK must be a JSON object")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise PayloadError(
            f"{where}: JWK has kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}; expected OKP / Ed25519"
        )
    if "d" in jwk:
        raise PayloadError(f"{where}: JWK holds a private key ('d'); give the public key only")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise PayloadError(f"{where}: JWK member 'x' is missing or not a string")
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(x, f"{where}: JWK 'x'", 32))
    kid = jwk.get("kid")
    if kid is not None and kid != kid_for(key):
        raise PayloadError(f"{where}: JWK 'kid' {kid!r} is not the thumbprint of its key ({kid_for(key)})")
    return key


def _read_private_file(path: Path, bare: bool) -> bytes:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    where = f" (nor in $CREDENTIALS_DIRECTORY {creds})" if creds and bare else ""
    try:
        return read_user_bytes(
            path, "device private key", KeyFileError, max_bytes=MAX_KEY_FILE_BYTES, readable_by="owner",
            missing_hint=f"{where}; create one with `emotion-agent keygen --out DIR`",
        )
    except KeyFileError as exc:  # its mode, say: "chmod 600" would not make a public key usable
        raise _public_instead(path) or exc from None


def _public_instead(path: Path) -> KeyFileError | None:
    """The error for a public key given where the private one belongs (keygen writes both side
    by side: device.pub.jwk, device.pub.b64), or None when ``path`` holds none."""
    try:
        load_public_key(path)
        head = path.read_bytes()[:64].lstrip()
    except (KeyFileError, OSError):
        return None
    raw = not head.startswith((b"{", b"-----BEGIN PUBLIC KEY"))
    if raw and ".pub" not in path.name:  # 32 bytes in base64 may as well be a private seed
        return None
    return KeyFileError(
        f"{path}: is a public key (the verifier's half); give the private key, device.key in "
        "the folder `emotion-agent keygen` wrote"
    )


PEM_END = b"-----END PRIVATE KEY-----"


def _not_one_pem_key(data: bytes) -> str | None:
    """Why ``data`` is not exactly one PEM private key block: cryptography reads the first block
    and ignores what follows, so two keys (or a key and junk) passed, the first used silently."""
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:
        return f"holds {blocks} PEM blocks; a device key file holds one private key"
    if b"-----BEGIN PRIVATE KEY-----" not in data:
        return None  # not PKCS#8 PEM at all: the parser says what it is
    end = data.find(PEM_END)
    if end < 0:
        return f"the PEM block is cut short (no {PEM_END.decode()} line)"
    if data[end + len(PEM_END):].strip():
        return f"has bytes after its {PEM_END.decode()} line"
    return None


def _kind(key: object) -> str:
    """'an RSA', 'an EC', 'an X25519', ... from the class name cryptography gives the key."""
    name = type(key).__name__.removeprefix("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    name = {"EllipticCurve": "EC"}.get(name, name)
    return ("an " if name[:1] in "AEIORSX" else "a ") + name


def beside_config(path: Path, config_dir: Path) -> Path:
    """A bare key name is the file of that name in the config's folder (as a full path, so an
    error names the file looked at); any other path is kept as given."""
    return folder_as_named(config_dir) / path if len(path.parts) == 1 else path


def resolve_key_path(path_or_name: str | os.PathLike[str], config_dir: Path | None = None) -> Path:
    """Where the device key is read from: a bare name found in $CREDENTIALS_DIRECTORY wins (the
    service: systemd's ``LoadCredential=``); else a bare name is the file beside the config
    (``config_dir``: ``check-config``, ``run`` by hand), or in the working folder without one;
    anything else is a path (a config file's relative one arrives joined to its folder,
    ``agent.settings_base.in_config_folder``)."""
    path = Path(path_or_name)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and len(path.parts) == 1 and (Path(creds) / path).exists():
        return Path(creds) / path
    return beside_config(path, config_dir) if config_dir is not None else path


def load_private_key(
    path_or_name: str | os.PathLike[str], config_dir: Path | None = None
) -> Ed25519PrivateKey:
    """Load the device key (where ``resolve_key_path`` says); KeyFileError (exit 2) if missing,
    insecure, malformed or not Ed25519."""
    path = resolve_key_path(path_or_name, config_dir)
    data = _read_private_file(path, len(Path(path_or_name).parts) == 1)
    problem = _not_one_pem_key(data)
    if problem is not None:
        raise _public_instead(path) or KeyFileError(f"{path}: {problem}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise KeyFileError(
            f"{path}: the private key is encrypted with a passphrase; device keys are stored "
            "unencrypted and protected by their file mode"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _public_instead(path) or KeyFileError(
            f"{path}: not a PEM private key (expected '-----BEGIN PRIVATE KEY-----', "
            "as written by `emotion-agent keygen`)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: is {_kind(key)} key; the device key must be Ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A verifier's trusted key: JWK (RFC 8037), PEM public key, or raw 32 bytes in base64."""
    p = Path(path)
    text = read_user_text(p, "public key file", KeyFileError)
    stripped = text.strip()
    try:
        if stripped.startswith("{"):
            return public_from_jwk(json.loads(stripped), str(p))
        if stripped.startswith("-----BEGIN"):
            return _public_from_pem(stripped.encode("ascii"), p)
        return _public_from_raw(stripped, p)
    except RecursionError as exc:
        raise KeyFileError(f"{p}: not a usable Ed25519 public key: JSON nested too deeply") from exc
    except (PayloadError, ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{p}: not a usable Ed25519 public key: {exc}") from exc


def _public_from_pem(data: bytes, path: Path) -> Ed25519PublicKey:
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: is a private key; give the verifier the public key only")
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: is {_kind(key)} public key; device keys are Ed25519")
    return key


def _public_from_raw(text: str, path: Path) -> Ed25519PublicKey:
    try:
        std = text.replace("-", "+").replace("_", "/").rstrip("=")
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(
            f"{path}: not a JWK, a PEM public key, or base64 of a raw 32-byte Ed25519 key"
        ) from exc
    if len(raw) != 32:
        raise KeyFileError(f"{path}: base64 decodes to {len(raw)} bytes; a raw Ed25519 key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class KeyInfo:
    """What keygen wrote, and the key's identity."""

    kid: str
    private_path: Path
    jwk_path: Path
    raw_path: Path
    public_b64: str


KEY_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A key pair's file name stem: a plain name, no folder, no dot (``witness`` -> ``witness.key``)."""


def key_file_names(stem: str) -> tuple[str, str, str]:
    """The private key's, the JWK's and the raw base64 key's file names for ``stem``."""
    if not KEY_STEM.fullmatch(stem):
        raise KeyFileError(
            f"key name {stem!r}: 1-64 letters, digits, '-' or '_', starting with a "
            "letter or digit (it names the files: NAME.key, NAME.pub.jwk, NAME.pub.b64)"
        )
    return f"{stem}.key", f"{stem}.pub.jwk", f"{stem}.pub.b64"


def generate_keypair(out_dir: str | os.PathLike[str], stem: str = "device") -> KeyInfo:
    """Create a key pair in out_dir (made 0700 if new), in files named after ``stem`` (a device's
    key, a fleet receiver's, a witness's); never overwrites an existing file."""
    out = Path(out_dir)
    names = key_file_names(stem)
    private_name, jwk_name, raw_name = names
    existing = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if existing:
        raise KeyFileError(
            f"{out}: {', '.join(existing)} already exist(s); keygen never overwrites a key "
            "(move the old files away first, or choose another --out)"
        )
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public = key.public_key()
        raw_b64 = base64.b64encode(raw_public(public)).decode("ascii")
        write_new(out / private_name, pem, 0o600)
        write_new(out / jwk_name, (json.dumps(public_jwk(public), indent=2) + "\n").encode(), 0o644)
        write_new(out / raw_name, (raw_b64 + "\n").encode(), 0o644)
    except OSError as exc:
        raise KeyFileError(f"{out}: cannot write the key pair: {exc}") from exc
    return KeyInfo(kid_for(public), out / private_name, out / jwk_name, out / raw_name, raw_b64)
