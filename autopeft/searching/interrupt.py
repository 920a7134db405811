"""Ctrl-C during a search: stop at the next training-step boundary with the study saved.

While :func:`graceful_interrupts` is active, the first SIGINT only sets a flag and says so; the
training loop, the worker loop and the final stage call :func:`check` at safe points (after a whole
optimizer step, between trials, between retrainings), which raises :class:`Interrupted` there. The
trial being trained then saves a checkpoint at its current step (a step boundary: weights, optimizer
moments and step counter agree), goes back to the queue (WAITING), the CSV files are rewritten, and
the command exits with code 130. A second Ctrl-C raises ``KeyboardInterrupt`` at once (the trial then
resumes from its last rung or 30-second checkpoint instead). Outside the context (or off the main
thread) SIGINT keeps Python's default behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

_requested = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised by :func:`check` after a Ctrl-C, at a point where everything can be saved consistently."""


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    if _requested.is_set():
        raise Interrupted("interrupted by Ctrl-C")


def request() -> None:
    """Ask for a clean stop, as a first Ctrl-C does (used by tests and by SIGTERM-less shutdowns)."""
    _requested.set()


def checked(progress: Callable[[int, float], None] | None) -> Callable[[int, float], None]:
    """A step callback that forwards to ``progress`` and then stops the run if Ctrl-C was pressed."""

    def callback(step: int, loss: float) -> None:
        if progress is not None:
            progress(step, loss)
        check()

    return callback


@contextlib.contextmanager
def graceful_interrupts(message: str = "Ctrl-C: stopping after the current training step and saving "
                                       "the study (press Ctrl-C again to stop at once)") -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        with contextlib.suppress(OSError):  # os.write: a signal handler must not re-enter a console's lock
            os.write(2, f"\n[autopeft] {message}\n".encode())

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
