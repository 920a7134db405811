"""Thread layout of a search: how many trial workers, and how many torch threads each.

On a machine with C cores, trials can run one at a time with C threads, or C at a time with one thread
each. PEFT steps on small models are many small matmuls and elementwise ops that scale poorly across
threads, and OpenMP's barriers make a multi-threaded process very slow when the machine is busy; one
thread per worker has no barriers. ``studies/trial-throughput/threads.py`` measures both layouts on the
same plan (steps per second of the whole machine); the measured winner is :data:`AUTO_THREADS_PER_WORKER`:

    resolve_workers("auto")  ->  (C // AUTO_THREADS_PER_WORKER, AUTO_THREADS_PER_WORKER)
    resolve_workers(n)       ->  (n, max(1, C // n))

C is the number of cores this process may run on (``os.sched_getaffinity``), so a container's CPU set
is respected. :func:`apply_threads` sets torch's intra-op threads in a worker.
"""

from __future__ import annotations

import os

import torch

from autopeft.core.errors import UserError

#: threads per trial worker for ``--workers auto`` (measured: see studies/trial-throughput/README.md)
AUTO_THREADS_PER_WORKER = 1


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(spec: str | int, cpus: int | None = None) -> tuple[int, int]:
    """``(workers, threads_per_worker)`` for ``--workers auto|N``."""
    cpus = cpus or available_cpus()
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            threads = min(AUTO_THREADS_PER_WORKER, cpus)
            return max(1, cpus // threads), threads
        if not text.isdigit():
            raise UserError(f"--workers {spec!r} is not 'auto' or a number of workers; write e.g. --workers 2")
        spec = int(text)
    if isinstance(spec, bool) or spec < 1:
        raise UserError(f"--workers must be 'auto' or >= 1, got {spec!r}")
    return spec, max(1, cpus // spec)


def apply_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in this process (call before the first torch op)."""
    if threads < 1:
        raise UserError(f"threads per worker must be >= 1, got {threads}")
    torch.set_num_threads(threads)
