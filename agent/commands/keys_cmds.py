"""``keygen`` creates the device's Ed25519 key pair; ``pubkey`` checks a key as the agent would."""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

from agent.crypto import generate_keypair, kid_for, load_private_key, public_jwk
from agent.crypto.keys import raw_public


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keygen",
        help="create a device Ed25519 key pair (never overwrites)",
        description="Write DIR/device.key (PKCS#8 PEM, mode 0600), DIR/device.pub.jwk (RFC 8037 JWK) "
        "and DIR/device.pub.b64 (raw 32-byte key, base64), then print the kid (RFC 7638 thumbprint). "
        "Refuses to overwrite existing files.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (made 0700)")
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


def keygen(args: argparse.Namespace) -> int:
    info = generate_keypair(args.out)
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
        print(f"private key: {info.private_path} (mode 0600; keep it on the device)")
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
