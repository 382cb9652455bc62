"""``provision``: write a device's identity and config onto a flashed card's boot partition.

For an installer with a laptop and SD cards: per device a fresh Ed25519 signing key, a TLS
client key with its certificate request (or a certificate from a lab CA), the agent config,
and a MANIFEST of modes for the first-boot importer. Prints each kid and one verifier-list
line; never prints or keeps a private key on the laptop.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.errors import ConfigError, InputError
from agent.provision.boot import BootTarget, DirTarget, open_target
from agent.provision.bundle import Bundle, build_bundle, device_ids
from agent.provision.site import SiteFile, load_site

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="write device keys and config onto a Raspberry Pi OS boot partition",
        description="Generate each device's keys, certificate request and config and write them "
        "to the boot partition of a flashed card (mounted folder, FAT image or card device).",
    )
    p.add_argument("--site", required=True, type=Path, help="site file (YAML): devices, broker, CA, policy")
    p.add_argument(
        "--boot", required=True, action="append", type=Path, metavar="DIR_OR_IMAGE",
        help="mounted boot partition, FAT image, card image or card device; repeat once per device "
        "with --batch, or give one plain folder to stage <device>/ folders for copying later",
    )
    p.add_argument("--batch", type=int, metavar="N", help="provision N devices <prefix>-01..N")
    p.add_argument("--first", type=int, default=1, metavar="K", help="first number of a batch (default 1)")
    p.add_argument("--force", action="store_true", help="replace a bundle already on the card")
    p.add_argument(
        "--out", type=Path, help="folder on this computer for CSRs and public keys (never private keys)"
    )
    p.add_argument("--verifier-list", type=Path, help="append each device's verifier line to this file")
    p.set_defaults(func=provision)


def _targets(boots: list[Path], ids: list[str], batch: int | None) -> list[BootTarget]:
    if len(boots) == len(ids):
        return [open_target(b) for b in boots]
    if batch is not None and len(boots) == 1:
        if not boots[0].exists():  # a new staging folder: made here rather than refused
            boots[0].mkdir(parents=True, mode=0o700)
        staging = open_target(boots[0])
        if isinstance(staging, DirTarget) and not staging.looks_like_boot():
            return [DirTarget(boots[0] / dev) for dev in ids]
    raise InputError(
        f"--boot given {len(boots)} time(s) for {len(ids)} device(s): give one --boot per device, "
        "or with --batch a single plain folder to stage the bundles in"
    )


def _check_targets(targets: list[BootTarget], force: bool, staged: bool) -> None:
    for target in targets:
        if not staged and not target.looks_like_boot():
            raise InputError(
                f"{target.description}: not a Raspberry Pi boot partition (no config.txt or "
                "cmdline.txt at its root); give the card's bootfs folder, image or device"
            )
        if target.has_bundle() and not force:
            raise InputError(
                f"{target.description}: already holds an emotion-agent bundle that was never "
                "imported; use --force to replace it (the old device identity is then lost)"
            )


def _read_pem_cert(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
        x509.load_pem_x509_certificate(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: the {what} is not a PEM certificate") from exc
    return data


def _lab_ca(site: SiteFile) -> tuple[bytes, bytes] | None:
    if site.lab_ca is None:
        return None
    cert = _read_pem_cert(site.lab_ca.cert, "lab CA certificate (lab_ca.cert)")
    try:
        key = site.lab_ca.key.read_bytes()
    except OSError as exc:
        raise InputError(f"{site.lab_ca.key}: cannot read the lab CA key: {exc.strerror}") from exc
    return cert, key


def _keep_public(bundle: Bundle, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    public = {"client.csr": ".csr", "client.crt": ".crt", "device.pub.jwk": ".pub.jwk"}
    for f in bundle.files:
        if f.name in public:
            (out / f"{bundle.device_id}{public[f.name]}").write_bytes(f.data)


def provision(args: argparse.Namespace) -> int:
    site = load_site(args.site)
    if args.batch is not None and not 1 <= args.batch <= 999:
        raise ConfigError(f"--batch {args.batch}: give a number of devices from 1 to 999")
    if args.first < 0:
        raise ConfigError(f"--first {args.first}: give a number from 0 up")
    ids = device_ids(site, args.batch, args.first)
    targets = _targets(list(args.boot), ids, args.batch)
    _check_targets(targets, args.force, staged=len(args.boot) != len(ids))
    ca_cert = _read_pem_cert(site.broker.ca_cert, "broker CA certificate (broker.ca_cert)")
    lab = _lab_ca(site)
    lines = []
    for device_id, target in zip(ids, targets, strict=True):
        bundle = build_bundle(site, device_id, ca_cert, lab)
        target.write(bundle.all_files(), replace=args.force)
        names = " ".join(sorted(f.name for f in bundle.files))
        print(f"{device_id} -> {target.description}: emotion-agent/ {names}")
        print(f"  kid (public key fingerprint, RFC 7638): {bundle.signing.kid}")
        if bundle.tls.cert_pem is None:
            print("  client.csr: have the site CA sign it, then install it as /etc/emotion-agent/client.crt")
        if args.out is not None:
            _keep_public(bundle, args.out)
        lines.append(bundle.verifier_line())
        fields = {"device_id": device_id, "kid": bundle.signing.kid}
        logger.info("device provisioned", extra={"fields": fields})
    if len(args.boot) != len(ids):
        print(
            f"staged in {args.boot[0]}: these folders hold private keys; copy each <device>/emotion-agent/ "
            "onto its card's boot partition, then delete the staging folder"
        )
    print("verifier list lines (device id, kid, public key):")
    for line in lines:
        print(line)
    if args.verifier_list is not None:
        with args.verifier_list.open("a", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in lines)
    return 0

