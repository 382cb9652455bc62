"""Interoperability: test vectors reproduce, and verifiers written from the doc alone agree.

tests/vectors/independent_verifier.py (hand-written JCS + cryptography) and
tests/vectors/independent_verifier.mjs (Node.js built-in crypto) import nothing from the agent.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer, Verifier, encode, public_jwk, signing_input
from agent.crypto.keys import public_from_jwk

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
DATA = json.loads((VECTORS / "signed-messages.json").read_text(encoding="ascii"))
MAX = 2**53 - 1


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), VECTORS / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


independent = _load("independent_verifier.py")


def _vector_lines() -> list[tuple[str, dict[str, str], bool]]:
    """(line, jwk of the key that should verify it, expected ok) for every vector."""
    rows = []
    for case in DATA["messages"]:
        jwk = DATA["rotated_public_jwk"] if case["envelope"]["kid"] != DATA["public_jwk"]["kid"] else DATA[
            "public_jwk"
        ]
        rows.append((case["published_utf8"], jwk, True))
    rows += [(bad["line"], DATA["public_jwk"], False) for bad in DATA["must_reject"]]
    return rows


def test_the_agent_reproduces_the_vector_file_byte_for_byte() -> None:
    assert _load("make_vectors.py").render() == (VECTORS / "signed-messages.json").read_text(encoding="ascii")


def test_vectors_signing_input_and_verdicts_match_the_agent() -> None:
    jwk = DATA["public_jwk"]
    verifier = Verifier([public_from_jwk(jwk, "vector")], max_skew_s=None)
    for case in DATA["messages"]:
        assert signing_input(case["envelope"]).hex() == case["signing_input_hex"]
        assert encode(case["envelope"]).decode() == case["published_utf8"]
        assert verifier.check(case["published_utf8"]).ok, case["description"]
    fresh = Verifier([public_from_jwk(jwk, "vector")], max_skew_s=None)
    for bad in DATA["must_reject"]:
        result = fresh.check_line(bad["line"])
        assert (result.status, result.reason) == (bad["status"], bad["reason"]), bad["description"]


def test_vector_key_is_the_rfc8037_example_and_kid_its_thumbprint() -> None:
    assert DATA["public_jwk"]["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert independent.thumbprint(DATA["public_jwk"]["x"]) == DATA["public_jwk"]["kid"]


def test_independent_python_canonicalisation_equals_the_vectors() -> None:
    for case in DATA["messages"]:
        unsigned = {k: v for k, v in case["envelope"].items() if k != "sig"}
        assert independent.jcs(unsigned).encode().hex() == case["signing_input_hex"], case["description"]


def test_independent_python_verifier_agrees_on_every_vector() -> None:
    for line, jwk, expected in _vector_lines():
        try:
            independent.verify(line, jwk)
            ok = True
        except independent.Bad:
            ok = False
        assert ok is expected, line


def _node(lines: list[str], jwk: dict[str, str]) -> list[str]:
    run = subprocess.run(
        ["node", str(VECTORS / "independent_verifier.mjs"), json.dumps(jwk)],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60, check=True,
    )
    return run.stdout.splitlines()


def test_node_verifier_agrees_on_every_vector() -> None:
    for jwk in (DATA["public_jwk"], DATA["rotated_public_jwk"]):
        rows = [(line, ok) for line, key, ok in _vector_lines() if key == jwk]
        verdicts = _node([line for line, _ in rows], jwk)
        assert [v == "ok" for v in verdicts] == [ok for _, ok in rows]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    alphabet = "aZ09 \"\\/\t\n\x00\x1f\x7f\u00e9\u2028\u20ac\ufb33\U0001f600"
    text: Callable[[], str] = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))  # noqa: E731
    if kind == 0:
        return rng.choice([0, 1, -1, MAX, -MAX, rng.randrange(-MAX, MAX)])
    if kind == 1:
        return text()
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.randrange(-1000, 1000)
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {text(): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_node_verifies_many_fresh_agent_messages_and_rejects_their_mutations() -> None:
    rng = random.Random(20261123)  # noqa: S311 - test data, not keys
    key = Ed25519PrivateKey.generate()
    signer = Signer("lobby-1", key, store=MemorySequenceStore(), clock=FakeClock())
    good, bad = [], []
    for _ in range(150):
        body = {f"k{i}": _random_value(rng) for i in range(rng.randrange(1, 6))}
        env = signer.sign("stats", "emotion-agent/lobby-1/stats", body)
        good.append(encode(env).decode())
        bad.append(json.dumps({**env, "seq": env["seq"] + 1}))
    verdicts = _node(good + bad, public_jwk(key.public_key()))
    assert verdicts == ["ok"] * 150 + ["bad: signature"] * 150


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX, MAX) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(body=st.dictionaries(st.text(), json_values, max_size=6))
def test_independent_python_verifier_accepts_any_agent_message(body: dict[str, Any]) -> None:
    key = Ed25519PrivateKey.generate()
    env = Signer("lobby-1", key, store=MemorySequenceStore(), clock=FakeClock()).sign("stats", "t/x", body)
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    assert independent.jcs(unsigned).encode() == signing_input(env)
    independent.verify(encode(env).decode(), public_jwk(key.public_key()))


@pytest.mark.parametrize("indent", [None, 2])
def test_reordered_pretty_printed_vectors_still_verify_independently(indent: int | None) -> None:
    case = DATA["messages"][2]
    shuffled = dict(reversed(list(case["envelope"].items())))
    independent.verify(json.dumps(shuffled, indent=indent).replace("\n", " "), DATA["public_jwk"])
