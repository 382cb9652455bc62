"""The strict YAML reader: plain data only, YAML 1.2 scalars, every refusal located."""

from __future__ import annotations

import pytest

from agent.strict_yaml import MAX_DEPTH, MAX_VALUES, YamlRefused, parse


def test_plain_scalars_follow_the_narrowed_core_schema() -> None:
    text = "a: [true, False, yes, on, ~, null, '', 12, -3, 012, 0x1f, 1.5, 1e3, 1e999, .inf, .nan]\n"
    data, _ = parse(text)
    assert data["a"] == [True, False, "yes", "on", None, None, "", 12, -3, 12, "0x1f", 1.5, 1000.0,
                         "1e999", ".inf", ".nan"]


def test_quoted_scalars_and_keys_stay_text() -> None:
    data, _ = parse("'1': \"true\"\n2: x\ntrue: 3\n")
    assert data == {"1": "true", "2": "x", "true": 3}


def test_every_key_path_has_its_line() -> None:
    _, lines = parse("a:\n  b: [1,\n    2]\nc: {d: x}\n")
    assert lines[("a",)] == 1
    assert lines[("a", "b")] == 2
    assert lines[("a", "b", 1)] == 3
    assert lines[("c", "d")] == 4


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("a: &x [1]\nb: *x\n", ":1: YAML anchors (&x)"),
        ("b: *x\n", ":1: YAML aliases (*x)"),  # even one without its anchor
        ("a: !!python/object:os.system x\n", ":1: YAML tags"),
        ("a: !!binary aGk=\n", ":1: YAML tags"),
        ("a: 1\nb: 2\na: 3\n", ":3: duplicate key 'a' (first on line 1)"),
        ("x: {a: 1, a: 2}\n", "duplicate key 'a'"),
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("? [a]\n: 1\n", "a key must be a plain name"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"nested deeper than {MAX_DEPTH}"),
        ("a: [" + ",".join(["1"] * MAX_VALUES) + "]\n", f"more than {MAX_VALUES} values"),
        ("a: '" + "x" * 300_000 + "'\n", "too large for a config"),
        ("a: [1\n", ":2: not valid YAML"),
    ],
)
def test_refusals_say_where_and_why(text: str, said: str) -> None:
    with pytest.raises(YamlRefused, match=r"^site\.yaml") as info:
        parse(text, "site.yaml")
    assert said in str(info.value)


def test_an_empty_document_is_none() -> None:
    assert parse("")[0] is None
    assert parse("# only a comment\n")[0] is None


def test_a_text_over_the_value_limit_is_refused_with_how_many_it_holds() -> None:
    """The refusal said "more than 20000 values" only: not how far over, which a person (or
    provisioning, which built the text) needs to know how much to take out."""
    with pytest.raises(YamlRefused) as info:
        parse("a: [" + ",".join(["1"] * (MAX_VALUES + 500)) + "]\n", "site.yaml")
    why = f"more than {MAX_VALUES} values ({MAX_VALUES + 503} in all); a config is smaller than that"
    assert (str(info.value), info.value.why) == (f"site.yaml:1: {why}", why)
