"""``command sign`` makes a privacy-mode command signed by the operator key, to publish on
``<base>/cmd/privacy_mode/set`` when ``mqtt.commands.operator_key`` is set (agent.transport.commands)."""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

from agent.crypto.canonical import canonical
from agent.crypto.envelope import DEV_RE
from agent.crypto.keys import load_private_key
from agent.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("command", help="operator commands for a device (signed privacy-mode changes)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION")
    cmds.required = True
    s = cmds.add_parser(
        "sign",
        help="print a privacy-mode command signed by the operator key",
        description="Print one JSON line: a privacy-mode command for DEVICE signed by the operator's "
        "Ed25519 key (make one with `emotion-agent keygen --out DIR`; give the device its public "
        "key as mqtt.commands.operator_key). It is valid for mqtt.commands.replay_window_seconds "
        "(default 60) around its time and only once. Publish it, not retained, e.g.: "
        "mosquitto_pub -t emotion-agent/DEVICE/cmd/privacy_mode/set -m \"$(emotion-agent command "
        "sign --key op.key --device DEVICE off)\"",
    )
    s.add_argument("--key", required=True, metavar="PATH", help="the operator's private key (PEM, 0600)")
    s.add_argument("--device", required=True, help="device_id of the device it is for")
    s.add_argument("state", choices=["on", "off"], help="privacy mode to set (off turns the camera on)")
    s.set_defaults(func=sign)


def sign(args: argparse.Namespace) -> int:
    from agent.transport.commands import sign_command  # noqa: PLC0415 - keeps --help light

    if not DEV_RE.match(args.device):
        raise InputError(f"--device {args.device!r}: lower-case letters, digits and dashes only")
    key = load_private_key(args.key)
    command = sign_command(
        key, args.device, args.state.upper(), int(time.time() * 1000), secrets.token_urlsafe(16)
    )
    print(canonical(command).decode("ascii"))
    return 0
