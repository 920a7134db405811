"""``autopeft worker``: join a search started by ``autopeft search --storage URL`` (e.g. on another machine)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    w = sub.add_parser("worker", help="join a running search through its shared Optuna storage")
    w.add_argument("--storage", required=True, help="the search's storage URL, e.g. postgresql://host/db")
    w.add_argument("--study", default="autopeft", help="study name in the storage (default autopeft)")
    w.add_argument("--out", help="where this worker writes trial adapters and checkpoints (default: the "
                                 "search's study directory)")
    w.add_argument("--quiet", action="store_true")
    # set by `autopeft search --workers N` for the processes it starts
    w.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    w.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    w.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    w.add_argument("--share-of", type=int, help=argparse.SUPPRESS)
    w.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    import socket
    import zlib

    from autopeft.searching.backends.local import run_worker
    from autopeft.searching.liveness import exit_when_orphaned
    from autopeft.searching.progress import Reporter

    if args.parent_pid is not None:
        exit_when_orphaned(args.parent_pid)
    if args.threads:
        from autopeft.searching.threads import apply_threads

        apply_threads(args.threads)
    # a distinct index per process, so workers' samplers do not draw the same random start-up plans
    index = args.worker_index if args.worker_index is not None else \
        1 + zlib.crc32(f"{socket.gethostname()}-{os.getpid()}".encode()) % 1_000_000
    return run_worker(args.storage, args.study, args.out, index, Reporter(quiet=args.quiet), share_of=args.share_of)
