"""The machine: the CPU to pin the search to, and what results.json records about the host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            times[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return times


def least_busy_cpu() -> int:
    allowed = sorted(os.sched_getaffinity(0))
    first = cpu_times()
    time.sleep(1.0)
    second = cpu_times()

    def busy(cpu: int) -> float:
        (b0, t0), (b1, t1) = first.get(cpu, (0, 0)), second.get(cpu, (0, 1))
        return (b1 - b0) / max(1, t1 - t0)

    return min(allowed, key=busy)


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git(*argv: str) -> str | None:
    """A read-only git query on the repository (--no-optional-locks: no index refresh); None if it fails."""
    done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def machine(cpu: int | None) -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"cpu_model": model, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "search_pinned_to_cpu": cpu, "host": socket.gethostname(), "os": platform.platform(),
            "python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
            "optuna": version("optuna"), "autopeft": version("autopeft"), "git_commit": git("rev-parse", "HEAD"),
            "git_tracked_changes": None if status is None else bool(status)}
