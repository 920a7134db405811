"""The soak's flags and ``main``: set up, run the soak, write results.json."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import __doc__ as DESIGN
from . import results
from .machine import least_busy_cpu
from .runner import Setup, Soak
from .scenarios import plan_kills
from .search import flag, search_command

HERE = Path(__file__).resolve().parent.parent  # studies/reliability


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(DESIGN or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=12, help="interruptions (default 12)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds for the whole soak (default 900; 3600 with --real)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random, recorded)")
    parser.add_argument("--sigint-share", type=float, default=0.25,
                        help="share of kills that are Ctrl-C (SIGINT; a third of them double), default 0.25")
    parser.add_argument("--real", action="store_true", help="minilm + rotten_tomatoes with the search's defaults")
    parser.add_argument("--search-args", default="", help="extra flags for autopeft search, e.g. '--trials 6'")
    parser.add_argument("--cpu", default="auto", help="CPU to pin the search to: auto (least busy), none, or N")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on violations)")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> Setup:
    """The seed, the work directory, the CPU, the search command (building the tiny assets) and the kill plan."""
    time_limit = args.time_limit or (3600.0 if args.real else 900.0)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    start, date, load_at_start = time.monotonic(), datetime.now(timezone.utc), os.getloadavg()
    work = args.work or Path(tempfile.mkdtemp(prefix="autopeft-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    cpu = None if args.cpu == "none" else (least_busy_cpu() if args.cpu == "auto" else int(args.cpu))
    command = search_command(args, work)
    out = Path(flag(command, "--out", ""))
    if out.exists():
        raise SystemExit(f"{out} exists: the soak needs a fresh study directory (use another --work)")
    shown = [c.replace(str(work), "<work>") for c in command]
    shown[0] = "python"
    return Setup(command=command, shown=shown, out=out, work=work, cpu=cpu,
                 trials=int(flag(command, "--trials", "12")), seeds=int(flag(command, "--seeds", "3")),
                 plan=plan_kills(rng, args.kills, args.sigint_share), seed=seed, rng=rng, time_limit=time_limit,
                 start=start, date=date, load_at_start=load_at_start)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup = prepare(args)
    print(f"soak: seed {setup.seed}, {args.kills} kills, time limit {setup.time_limit:.0f} s, work dir {setup.work}, "
          f"search pinned to CPU {setup.cpu}\n  {' '.join(setup.shown)}", flush=True)
    soak = Soak(setup)
    soak.run()
    found = results.build(args, setup, soak, argv)
    results.write(args.results, found, setup.work)
    totals = found["totals"]
    print(f"kills {totals['kills']}, resumes {totals['resumes']}, trials {totals['trials']['complete']} complete / "
          f"{totals['trials']['stopped']} stopped / {totals['trials']['failed']} failed, "
          f"{totals['checks_passed']} checks passed, violations {totals['violations']}, {totals['wall_s']:.0f} s; "
          f"results in {args.results}", flush=True)
    if totals["violations"] or args.keep or args.work:
        print(f"work directory kept: {setup.work}")
    else:
        shutil.rmtree(setup.work, ignore_errors=True)
    return 1 if totals["violations"] or not totals["search_finished"] else 0
