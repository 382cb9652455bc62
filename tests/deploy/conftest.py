"""Deployment fixtures: a lab CA, a site file, and a FAT image like a flashed card's bootfs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed P-256 CA (cert, key) as a site's or lab's PKI would hand over."""
    out = tmp_path_factory.mktemp("ca")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test site CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (out / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return out / "ca.crt", out / "ca.key"


@pytest.fixture
def fat_image(tmp_path: Path) -> Path:
    """An 8 MiB FAT image made with mkfs.vfat, holding a config.txt like a Raspberry Pi bootfs."""
    img = tmp_path / "bootfs.img"
    subprocess.run(["mkfs.vfat", "-C", str(img), "8192"], check=True, capture_output=True)
    (tmp_path / "config.txt").write_text("arm_64bit=1\n")
    subprocess.run(
        ["mcopy", "-i", str(img), str(tmp_path / "config.txt"), "::/config.txt"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return img


PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once (pip wheel, isolated build as CI would)."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    subprocess.run([*pip, str(PROJECT)], check=True, capture_output=True)
    (found,) = out.glob("emotion_agent-*.whl")
    return found


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """The wheel and every dependency under the Bookworm constraints, as an offline install takes
    them (`pip download`, from PyPI or pip's cache): what docs/installing.md tells installers to make."""
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(out),
         "-c", str(PROJECT / "constraints/bookworm.txt"), str(wheel)],
        check=True, capture_output=True,
    )
    return out
