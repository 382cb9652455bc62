"""Deliver a signal to this process at every line run while the agent takes a signal, down into
what that calls, then print what the agent saw (one JSON line).

    python -m tests.signals_during_take hup    # SIGHUPs while the loop takes a reload
    python -m tests.signals_during_take term   # SIGTERMs while the SIGTERM handler runs

Python runs a handler on the main thread between two bytecodes of whatever runs there (the
loop, or another handler): one that waits for a lock held there waits for ever, SIGTERM's
handler included. So this runs as a child of tests/test_service_signals.py, under a time limit.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any

from agent.clock import FakeClock
from agent.privacy.privacy_mode import PrivacyMode, SignalToggle
from agent.service_signals import ServiceSignals


def signalling_inside(function: str, signum: int) -> Any:
    """A trace function raising ``signum`` at each line of ``function``'s first call and of
    what it calls (a handler run from within it is not traced: nothing recurses)."""
    state = {"inside": False, "done": False, "sent": 0}

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_name == function and not state["done"]:
            state["inside"] = True
        if not state["inside"]:
            return None
        if event == "return" and frame.f_code.co_name == function:
            state["inside"], state["done"] = False, True
        signal.raise_signal(signum)  # Python runs the handler here, at this line
        state["sent"] += 1
        return tracer

    return tracer, state


def main(mode: str) -> dict[str, object]:
    signals = ServiceSignals(SignalToggle(PrivacyMode(FakeClock(), {})))
    signals.install()
    if mode == "hup":
        signal.raise_signal(signal.SIGHUP)  # the reload being taken
        tracer, state = signalling_inside("take_reload", signal.SIGHUP)
        sys.settrace(tracer)
        try:
            first = signals.take_reload()
        finally:
            sys.settrace(None)
        return {"first": first, "then": signals.take_reload(), "after": signals.take_reload(), **state}
    tracer, state = signalling_inside("_on_stop", signal.SIGTERM)
    sys.settrace(tracer)
    try:
        signal.raise_signal(signal.SIGTERM)
    finally:
        sys.settrace(None)
    return {"stop": signals.stop_requested, "reason": signals.stop_reason, **state}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
