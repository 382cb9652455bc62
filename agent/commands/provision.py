"""``provision``: write a device's identity and config onto a flashed card's boot partition.

For an installer with a laptop and SD cards: per device a fresh Ed25519 signing key, a TLS
client key with its certificate request (or a certificate from a lab CA), the agent config,
and a MANIFEST of modes for the first-boot importer. Prints each kid and one verifier-list
line; never prints or keeps a private key on the laptop.
"""

from __future__ import annotations

import argparse
import json
import logging
import stat
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.atomic import write_atomic
from agent.errors import ConfigError, InputError
from agent.provision.boot import BootTarget, DirTarget, open_target
from agent.provision.bundle import Bundle, build_bundle, device_ids
from agent.provision.site import SiteFile, load_site
from agent.user_files import read_user_text

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
    p.add_argument(
        "--replace", action="store_true",
        help="give a device id provisioned before (its public key in --out, its line in --verifier-list) "
        "a new identity: both are replaced and the old card's key is no longer trusted",
    )
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


MAX_VERIFIER_LIST = 64 * 1024 * 1024  # about 300 000 devices' lines
PUBLIC = {"client.csr": ".csr", "client.crt": ".crt", "device.pub.jwk": ".pub.jwk"}
"""The bundle's public files kept in --out, as <device id><suffix>."""


def _verifier_entries(path: Path) -> list[tuple[str, str | None]]:
    """Each line of a verifier list with the device id it names (None: not an entry)."""
    text = read_user_text(path, "verifier list", InputError, max_bytes=MAX_VERIFIER_LIST)
    entries: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        named = entry.get("device_id") if isinstance(entry, dict) else None
        entries.append((line, named if isinstance(named, str) else None))
    return entries


def _listed(path: Path) -> dict[str, int]:
    """device id -> line number of its first entry in a verifier list (none: no file yet)."""
    found: dict[str, int] = {}
    if path.exists():
        for number, (_, device_id) in enumerate(_verifier_entries(path), 1):
            if device_id is not None:
                found.setdefault(device_id, number)
    return found


def _check_new_ids(ids: list[str], out: Path | None, verifier_list: Path | None) -> None:
    """Refuse a device id this laptop's records already hold: two cards with one id would share
    one certificate CN, that is one MQTT identity, and the verifier list would trust both keys."""
    listed = _listed(verifier_list) if verifier_list is not None else {}
    for device_id in ids:
        key = out / f"{device_id}.pub.jwk" if out is not None else None
        if key is not None and key.exists():
            holder = str(key)
        elif device_id in listed:
            holder = f"{verifier_list} (line {listed[device_id]})"
        else:
            continue
        raise InputError(
            f"device id {device_id} was provisioned before: {holder} holds its public key; give this "
            f"card another device name, or use --replace to give {device_id} a new key (its old card "
            "is then no longer trusted)"
        )


def _keep_public(bundle: Bundle, out: Path, replace: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    for f in bundle.files:
        if f.name in PUBLIC:
            (out / f"{bundle.device_id}{PUBLIC[f.name]}").write_bytes(f.data)
            written.add(PUBLIC[f.name])
    if replace:  # e.g. the old key's signed certificate: it does not certify the new key
        for suffix in set(PUBLIC.values()) - written:
            (out / f"{bundle.device_id}{suffix}").unlink(missing_ok=True)


def _add_to_verifier_list(path: Path, line: str, replaced: str | None) -> None:
    """Add one device's line as soon as its card is written, the file replaced atomically
    (agent/atomic.py): a later card that fails leaves the earlier ones listed, and a crash leaves
    the old list or the new one. With ``replaced``, that id's earlier entries are dropped first."""
    if not path.exists():
        write_atomic(path, (line + "\n").encode(), 0o644)
        return
    if replaced is None:
        text = read_user_text(path, "verifier list", InputError, max_bytes=MAX_VERIFIER_LIST)
        text += "" if not text or text.endswith("\n") else "\n"
    else:
        text = "".join(x + "\n" for x, device_id in _verifier_entries(path) if device_id != replaced)
    write_atomic(path, (text + line + "\n").encode(), stat.S_IMODE(path.stat().st_mode))


def provision(args: argparse.Namespace) -> int:
    site = load_site(args.site)
    if args.batch is not None and not 1 <= args.batch <= 999:
        raise ConfigError(f"--batch {args.batch}: give a number of devices from 1 to 999")
    if args.first < 0:
        raise ConfigError(f"--first {args.first}: give a number from 0 up")
    ids = device_ids(site, args.batch, args.first)
    targets = _targets(list(args.boot), ids, args.batch)
    _check_targets(targets, args.force, staged=len(args.boot) != len(ids))
    if not args.replace:
        _check_new_ids(ids, args.out, args.verifier_list)
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
            _keep_public(bundle, args.out, args.replace)
        lines.append(bundle.verifier_line())
        if args.verifier_list is not None:  # now, not after the batch: a later card may fail
            _add_to_verifier_list(args.verifier_list, lines[-1], device_id if args.replace else None)
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
    if args.out is None and args.verifier_list is None:
        logger.warning(
            "nothing was kept on this computer: the lines above are its only record of these keys, "
            "a client.csr is only on the card, and the same device id given again is not refused; "
            "give --out DIR --verifier-list FILE to keep them"
        )
    return 0

