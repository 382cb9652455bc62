"""Device keys: keygen output, safe loading, refusal of insecure or wrong keys, RFC thumbprints."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.crypto import generate_keypair, kid_for, load_private_key, load_public_key, public_jwk
from agent.crypto.canonical import b64url_decode
from agent.errors import KeyFileError
from tests.asuser import as_nobody

# RFC 8037 appendix A.1 / A.3: an Ed25519 JWK and its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_kid_is_the_rfc7638_thumbprint_of_rfc8037_example() -> None:
    """The kid of RFC 8037's example key equals the thumbprint printed in RFC 8037 A.3."""
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D, "d", 32))
    assert public_jwk(key.public_key())["x"] == RFC8037_X
    assert kid_for(key.public_key()) == RFC8037_THUMBPRINT


def test_keygen_writes_private_0600_jwk_and_raw(tmp_path: Path) -> None:
    info = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(info.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    jwk = json.loads(info.jwk_path.read_text())
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["kid"] == info.kid
    assert "d" not in jwk
    private = load_private_key(info.private_path)
    assert kid_for(private.public_key()) == info.kid
    assert base64.b64decode(info.raw_path.read_text()) == base64.urlsafe_b64decode(jwk["x"] + "=")
    for path in (info.jwk_path, info.raw_path):
        assert kid_for(load_public_key(path)) == info.kid


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path)
    before = first.private_path.read_bytes()
    with pytest.raises(KeyFileError, match=r"device\.key.* already exist.*never overwrites"):
        generate_keypair(tmp_path)
    assert first.private_path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "k.pem", _pem(Ed25519PrivateKey.generate()), mode)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert f"has mode {mode:04o}, readable beyond its owner" in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)


def test_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"nope\.key: device private key not found; create one with"):
        load_private_key(tmp_path / "nope.key")


def test_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    """A key the agent's user cannot read; as root, drop the effective uid to nobody meanwhile."""
    path = _write(tmp_path / "k.pem", _pem(Ed25519PrivateKey.generate()), 0o000)
    with as_nobody(), pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(info.value) == f"{path}: cannot open the device private key: Permission denied"


def test_directory_instead_of_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match=r"d: the device private key must be a regular file"):
        load_private_key(tmp_path / "d")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA"),
        (x25519.X25519PrivateKey.generate, "X25519"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "EC"),
    ],
)
def test_wrong_key_type_is_named(tmp_path: Path, make: object, kind: str) -> None:
    path = _write(tmp_path / "k.pem", _pem(make()))  # type: ignore[operator]
    with pytest.raises(KeyFileError, match=rf"is an {kind} key; the device key must be Ed25519"):
        load_private_key(path)


def test_garbage_and_encrypted_keys_are_explained(tmp_path: Path) -> None:
    garbage = _write(tmp_path / "g.pem", b"hello\n")
    with pytest.raises(KeyFileError, match=r"not a PEM private key"):
        load_private_key(garbage)
    enc = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyFileError, match=r"encrypted with a passphrase"):
        load_private_key(_write(tmp_path / "e.pem", enc))


def test_bare_name_is_found_in_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = generate_keypair(tmp_path / "creds")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.chdir(tmp_path)
    assert kid_for(load_private_key("device.key").public_key()) == info.kid


def test_public_key_loader_refuses_private_material(tmp_path: Path) -> None:
    info = generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match=r"is a private key; give the verifier the public key only"):
        load_public_key(info.private_path)
    jwk = json.loads(info.jwk_path.read_text())
    jwk["d"] = RFC8037_D
    (tmp_path / "priv.jwk").write_text(json.dumps(jwk))
    with pytest.raises(KeyFileError, match=r"JWK holds a private key"):
        load_public_key(tmp_path / "priv.jwk")


def test_public_jwk_with_wrong_kid_is_refused(tmp_path: Path) -> None:
    info = generate_keypair(tmp_path)
    jwk = json.loads(info.jwk_path.read_text())
    jwk["kid"] = RFC8037_THUMBPRINT
    (tmp_path / "bad.jwk").write_text(json.dumps(jwk))
    with pytest.raises(KeyFileError, match=r"'kid' .* is not the thumbprint of its key"):
        load_public_key(tmp_path / "bad.jwk")


def test_a_deeply_nested_public_jwk_is_a_key_file_error(tmp_path: Path) -> None:
    (tmp_path / "deep.jwk").write_text('{"x": ' + "[" * 100_000)  # RecursionError was a traceback
    said = r"deep\.jwk: not a usable Ed25519 public key: JSON nested too deeply"
    with pytest.raises(KeyFileError, match=said):
        load_public_key(tmp_path / "deep.jwk")


@pytest.mark.parametrize("name", ["device.pub.jwk", "device.pub.b64"])
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_a_public_key_given_as_the_private_key_is_named_so(tmp_path: Path, name: str, mode: int) -> None:
    """``pubkey --key device.pub.jwk`` said ``device private key has mode 0644 ... run chmod 600``:
    the fix it gave would not help (found by a new user's trial). The keygen's public files are
    told apart and the private key beside them named."""
    generate_keypair(tmp_path)
    public = tmp_path / name
    public.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_private_key(public)
    said = str(info.value)
    assert said.startswith(f"{public}: is a public key (the verifier's half); give the private key"), said
    assert "chmod" not in said


def _pem_of(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (lambda a, b: a + b, "holds 2 PEM blocks; a device key file holds one private key"),
        (lambda a, b: a + b"garbage\x00\xff", "has bytes after its -----END PRIVATE KEY----- line"),
        (lambda a, b: a[: len(a) // 2], "the PEM block is cut short (no -----END PRIVATE KEY----- line)"),
    ],
    ids=["two keys", "trailing junk", "cut short"],
)
def test_a_key_file_that_is_more_or_less_than_one_key_is_refused(
    tmp_path: Path, content: Any, said: str
) -> None:
    """Two keys concatenated, or one with junk after it, passed check-config (the first key was
    used, silently); a cut-short key was said not to start as a PEM key although it did (found
    by a hostile-input probe)."""
    path = tmp_path / "device.key"
    path.write_bytes(content(_pem_of(Ed25519PrivateKey.generate()), _pem_of(Ed25519PrivateKey.generate())))
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(info.value) == f"{path}: {said}"


def test_a_raw_base64_seed_is_not_called_a_public_key(tmp_path: Path) -> None:
    """32 bytes in base64 read as a public key, so a raw private seed was said to be one (found
    by review): only a JWK, a PEM public key or a file named .pub is."""
    path = tmp_path / "device.key"
    path.write_text(base64.b64encode(bytes(range(32))).decode())
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert "public key" not in str(info.value)
    assert "not a PEM private key" in str(info.value)
