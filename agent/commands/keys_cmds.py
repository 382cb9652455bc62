"""``keygen``: create the device's Ed25519 key pair (private PEM 0600, public JWK and raw base64)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.crypto import generate_keypair


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
