"""``caught_stderr``: a codec's own messages are caught for one decode; nothing else is lost."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import pytest

from agent.caught_stderr import MAX_CAUGHT, caught_stderr


def test_what_c_code_prints_on_descriptor_2_is_caught_not_shown(capfd: pytest.CaptureFixture[str]) -> None:
    with caught_stderr() as said:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\nsecond line\n")
    assert said == ["libpng warning: iCCP: known incorrect sRGB profile", "second line"]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_codec_that_prints_more_than_the_pipe_holds_does_not_block() -> None:
    with caught_stderr() as said:
        for _ in range(40):
            with contextlib.suppress(BlockingIOError):  # the pipe is full: the rest is lost
                os.write(2, b"x" * 8191 + b"\n")
    assert 0 < sum(len(line) + 1 for line in said) <= MAX_CAUGHT


class Descriptor2:
    """A stream that writes straight to file descriptor 2, as the agent's handler ends up doing."""

    def write(self, text: str) -> None:
        os.write(2, text.encode())

    def flush(self) -> None:
        pass


@pytest.fixture
def root_to_stderr() -> Iterator[None]:
    handler = logging.StreamHandler(Descriptor2())
    root = logging.getLogger()
    root.addHandler(handler)
    yield
    root.removeHandler(handler)


@pytest.mark.usefixtures("root_to_stderr")
def test_another_threads_log_line_waits_for_the_decode_and_is_shown(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The handlers' locks are held during the block: a log line from another thread is written
    after it, to the terminal, not into what the codec said."""
    started = threading.Event()

    def log_meanwhile() -> None:
        started.set()
        logging.getLogger("other").warning("the broker is back")

    with caught_stderr() as said:
        t = threading.Thread(target=log_meanwhile)
        t.start()
        started.wait(5)
        t.join(0.2)  # it waits for the handler's lock
        assert t.is_alive()
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
    t.join(5)
    assert said == ["Corrupt JPEG data: premature end of data segment"]
    assert "the broker is back" in capfd.readouterr().err
