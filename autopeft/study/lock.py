"""One ``autopeft search`` per study directory: an advisory lock on ``<out>/.search.lock``.

The search holds an exclusive ``flock`` on the file for its whole run and writes who it is into it
(pid, host, start time, command). A second ``autopeft search`` with the same ``--out`` fails at once
with a one-line error naming the holder and how to join it deliberately (``autopeft worker``, which
never takes the lock). The kernel releases the lock when the holder exits, however it dies (SIGKILL
included), so a stale lock file never blocks a resume. ``flock`` is advisory and local: on network
filesystems that do not support it, the lock is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from autopeft.core.errors import UserError
from autopeft.core.faults import environment_error
from autopeft.study.layout import StudyLayout

log = logging.getLogger("autopeft")


class StudyLock:
    def __init__(self, root: Path, join_hint: str = "") -> None:
        self.root = root
        self.path = StudyLayout(root).lock_file
        self.join_hint = join_hint
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> StudyLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return self
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(environment_error(exc) or f"cannot use study directory {self.root}: "
                            f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if "started" in h else "?"
            raise UserError(f"another autopeft search (pid {h.get('pid', '?')} on {h.get('host', '?')}, since "
                            f"{since}) is using study directory {self.root}; wait for it, choose another --out, "
                            f"or join it deliberately as a worker: {self.join_hint}") from None
        except OSError as exc:  # e.g. a filesystem without flock support
            log.warning("cannot lock %s (%s); make sure no other search uses this directory", self.path, exc)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            os.close(fd)
            raise UserError(environment_error(exc) or f"cannot write {self.path}: {exc.strerror}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
