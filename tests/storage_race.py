"""The worker of ``test_reliability``'s storage race, in a module of its own: a spawned process imports the
module that defines the function it runs, and this one imports only what opening a storage needs (the
test module imports torch and the tiny-model fixtures, which made each of the 8 spawns several times slower)."""

from __future__ import annotations

import time

from autopeft.core.errors import UserError
from autopeft.study.files import open_storage


def open_when_told(url: str, start: float) -> str:
    """Open (and so create) the storage at ``url`` at the time ``start``; ``"ok"`` or the one-line error."""
    time.sleep(max(0.0, start - time.time()))
    try:
        open_storage(url)
        return "ok"
    except UserError as exc:
        return str(exc)


def ready() -> bool:
    """Run once in every worker before the race: receiving it imports this module (and what it imports), so
    each worker is ready by the start time."""
    return True
