"""``keygen`` creates an Ed25519 key pair (the device's, or a fleet receiver's or witness's);
``pubkey`` checks a key as the agent would; ``keys rotate`` replaces the device key by a new one
that the old one announces (docs/key-rotation.md)."""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path
from typing import Any

from agent.crypto import generate_keypair, kid_for, load_private_key, public_jwk
from agent.crypto.keys import beside_config, key_file_names, raw_public
from agent.errors import KeyFileError

DEVICE = "device"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair: a device's, a fleet receiver's or a witness's (never overwrites)",
        description="Write DIR/NAME.key (PKCS#8 PEM, mode 0600), DIR/NAME.pub.jwk (RFC 8037 JWK) "
        "and DIR/NAME.pub.b64 (raw 32-byte key, base64), then print the kid (RFC 7638 thumbprint). "
        "NAME is device unless --name says otherwise. Refuses to overwrite existing files.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (made 0700)")
    p.add_argument(
        "--name",
        default=DEVICE,
        type=_key_name,
        help="the files' name: device (the default), receiver or witness for a fleet receiver's "
        "keys (docs/fleet.md), or another plain name",
    )
    p.add_argument("--json", action="store_true", help="print kid and paths as one JSON object")
    p.set_defaults(func=keygen)
    k = sub.add_parser(
        "pubkey",
        help="check the device private key as the agent does and print its public key",
        description="Load a private key with the agent's checks (exists, regular file, mode & 0o077 "
        "== 0, unencrypted PKCS#8 PEM, Ed25519; a bare name is looked up in $CREDENTIALS_DIRECTORY) "
        "and print its public JWK, raw base64 or kid. Exit 2 if the key would be refused.",
    )
    k.add_argument("--key", required=True, metavar="PATH", help="private key path or credential name")
    k.add_argument("--format", choices=["jwk", "b64", "kid"], default="jwk", help="what to print")
    k.set_defaults(func=pubkey)
    keys = sub.add_parser("keys", help="manage the device key of an installed agent (rotate)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True
    r = actions.add_parser(
        "rotate",
        help="make a new device key, announced by a notice the old key signs (service stopped)",
        description="With the service stopped: stage a new Ed25519 key beside the current one, "
        "record the rotation in the audit log and spool a key-rotation notice signed by the old "
        "key (sent first at the next start), sign the audit state with the new key, then switch "
        "the key file and overwrite the old key. Running it again after an interruption finishes "
        "the same rotation. Exit 2 while the service runs (it holds the state folder's lock). "
        "docs/key-rotation.md",
    )
    r.add_argument("-c", "--config", required=True, help="path to the agent's YAML config")
    r.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the private key file on disk (default: keys.private_key; a bare name, which systemd "
        "passes in as a credential, is taken from the config's folder)",
    )
    r.add_argument("--json", action="store_true", help="print what was done as one JSON object")
    r.set_defaults(func=rotate)


def _key_name(value: str) -> str:
    try:
        key_file_names(value)
    except KeyFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def keygen(args: argparse.Namespace) -> int:
    info = generate_keypair(args.out, args.name)
    if args.json:
        print(
            json.dumps(
                {
                    "kid": info.kid,
                    "private_key": str(info.private_path),
                    "public_jwk": str(info.jwk_path),
                    "public_b64": str(info.raw_path),
                    "public_key": info.public_b64,
                }
            )
        )
    else:
        print(f"kid: {info.kid}")
        where = "the device" if args.name == DEVICE else "the machine it signs on"
        print(f"private key: {info.private_path} (mode 0600; keep it on {where})")
        print(f"public key:  {info.jwk_path} (JWK), {info.raw_path} (base64)")
    return 0


def pubkey(args: argparse.Namespace) -> int:
    public = load_private_key(args.key).public_key()
    if args.format == "kid":
        print(kid_for(public))
    elif args.format == "b64":
        print(base64.b64encode(raw_public(public)).decode("ascii"))
    else:
        print(json.dumps(public_jwk(public), indent=2))
    return 0


def key_file(config: Path, configured: Path, given: Path | None) -> Path:
    """The key file to rotate: ``--key``, else ``keys.private_key``, a bare name being the file
    beside the config (the shipped unit loads ``device.key`` from ``/etc/emotion-agent``)."""
    path = given if given is not None else beside_config(configured, config.parent)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and path.absolute().is_relative_to(Path(creds).absolute()):
        raise KeyFileError(
            f"{path}: is systemd's credential copy; rotate the file it is loaded from (--key PATH)"
        )
    return path


def rotate(args: argparse.Namespace) -> int:
    from agent.clock import SystemClock  # noqa: PLC0415 - the audit and output stack only here
    from agent.config import load_config  # noqa: PLC0415
    from agent.key_rotation import rotate_key  # noqa: PLC0415

    config = Path(args.config)
    cfg = load_config(config)
    done = rotate_key(cfg, key_file(config, cfg.keys.private_key, args.key), SystemClock())
    if args.json:
        print(
            json.dumps(
                {
                    "old_kid": done.old_kid,
                    "new_kid": done.new_kid,
                    "key": str(done.key_path),
                    "old_public_key": str(done.old_public),
                    "announced": done.announced,
                }
            )
        )
        return 0
    print(f"key rotated: {done.old_kid} -> {done.new_kid}")
    state = "recorded and spooled" if done.announced else "already recorded by an interrupted run"
    print(f"notice: key-rotation signed by the old key, {state}; the service sends it at its next start")
    print(f"private key: {done.key_path} (new; the old key's bytes were overwritten)")
    print(f"old public key kept: {done.old_public}")
    return 0
