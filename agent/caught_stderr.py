"""What a C library prints on stderr during one call, caught instead of reaching the terminal.

Image codecs during a decode (``agent.camera.replay``) and LiteRT while it prepares a model
(``agent.vision.runtime``, whose "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
reached the terminal whatever ``--log-level`` said) go through it.

OpenCV's image decoders let libjpeg and libpng print straight to file descriptor 2: a truncated
PNG printed "libpng error: PNG input buffer is incomplete" above the agent's own error line, and
libjpeg's "Corrupt JPEG data: premature end of data segment" was the only sign that a JPEG had
decoded with garbage where its data was damaged (found by review).

    with caught_stderr() as said:
        pixels = cv2.imdecode(data, cv2.IMREAD_COLOR)
    # said: the lines printed meanwhile

Descriptor 2 points at a pipe for the duration of the block. The logging handlers' locks are
held meanwhile, so another thread's log line waits for the decode instead of landing in the
pipe; a codec that printed more than the pipe holds loses the rest (the pipe does not block).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

MAX_CAUGHT = 64 * 1024
"""Bytes kept of what one decode printed (a codec prints a line or two)."""


@contextmanager
def caught_stderr() -> Iterator[list[str]]:
    """The block's stderr output, as lines, in the list it yields (filled when the block ends)."""
    lines: list[str] = []
    with ExitStack() as held:
        for handler in logging.getLogger().handlers:
            handler.acquire()
            held.callback(handler.release)
        sys.stderr.flush()
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            lines.extend(_drain(read_end).decode("utf-8", "replace").splitlines())
            os.close(read_end)


def _drain(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_CAUGHT:
        try:
            chunk = os.read(fd, MAX_CAUGHT - size)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
