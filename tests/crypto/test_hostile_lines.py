"""`emotion-agent verify` gives a verdict on hostile input, never a traceback."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock
from agent.crypto import Verifier


def test_a_line_with_a_huge_integer_is_malformed_not_a_crash(clock: FakeClock) -> None:
    """parse_strict catches JSONDecodeError and RecursionError, but json.loads raises a plain
    ValueError for an integer literal of more than 4300 digits (CPython's int limit)."""
    verifier = Verifier([Ed25519PrivateKey.generate().public_key()], clock=clock)
    line = '{"topic":"emotion-agent/lobby-1/stats","payload":{"seq":' + "9" * 5000 + "}}"
    assert len(line) < 256 * 1024  # within MAX_LINE_BYTES
    result = verifier.check_line(line)  # was: ValueError: Exceeds the limit (4300 digits)
    assert result.status == "malformed"
