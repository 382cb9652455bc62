"""Argument types the commands share: a bad value is argparse's exit 2 naming the option,
never a verdict (a negative bound that failed every frame, a filter that matched everything)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def topic_filter_problem(value: str) -> str | None:
    """What makes ``value`` neither an MQTT topic nor a filter (MQTT 5.0 4.7), or None."""
    if not value:
        return "empty: give a topic or a filter such as emotion-agent/+/stats"
    if "\0" in value:
        return "holds a NUL character"
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level, and the last one (emotion-agent/#)"
        if "+" in level and level != "+":
            return "'+' must be a whole level (emotion-agent/+/stats)"
    return None


def topic_filter(text: str) -> str:
    problem = topic_filter_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an MQTT topic or filter: {problem}")
    return text
