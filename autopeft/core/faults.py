"""Faults of the machine, not of a plan: a full disk, a read-only or vanished study directory.

A plan that raises, diverges or runs out of memory fails *its trial* and the search goes on. A write
that fails because the disk is full (or the directory is read-only) would fail every trial after it,
so it must stop the search instead, with one line saying what happened and how to continue:
:func:`environment_error` recognises such errors wherever they come from (``OSError`` errno, SQLite
through SQLAlchemy, safetensors' Rust I/O errors) by walking the exception chain. The storage stays
consistent because every write to it is a transaction (SQLite rolls a failed one back) and every file
is written to a temporary name and renamed.
"""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
READ_ONLY = (errno.EROFS,)
# how SQLite and Rust's std::io describe the same conditions
FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded", "storagefull",
             "os error 28", "file too large")
READ_ONLY_TEXT = ("read-only file system", "attempt to write a readonly database", "os error 30",
                  "readonlyfilesystem")
RESUME = "re-run the same command to resume"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def environment_error(exc: BaseException) -> str | None:
    """A one-line message if ``exc`` (or its cause) is a full disk or a read-only filesystem, else None."""
    for e in _chain(exc):
        code = getattr(e, "errno", None)
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        text = str(e).lower()
        if code in DISK_FULL or any(t in text for t in FULL_TEXT):
            return f"the disk is full{where}: no space left to write the study; free some space and {RESUME}"
        if code in READ_ONLY or any(t in text for t in READ_ONLY_TEXT):
            return f"the study directory is on a read-only filesystem{where}; make it writable and {RESUME}"
    return None
