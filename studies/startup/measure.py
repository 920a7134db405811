"""Start-up time of the ``autopeft`` commands that need no model weights: wall clock of fresh processes.

Each command runs ``--repeats`` times (default 5) as ``python -m autopeft ...`` in a new interpreter, output
discarded, and the median wall time is reported; one more run with ``-X importtime`` records which heavy
libraries (torch, transformers, optuna, numpy) the command imported. The runs of all commands are
interleaved (round-robin), so a burst of load on the machine spreads over them rather than hitting one.

``--baseline REV`` times the same commands on the tree of git revision REV as well (exported with
``git archive`` into a temporary folder laid out as the installed package: ``methods/``, ``kernels/`` and
``search_spaces/`` inside ``autopeft/``), in the same interleaved rounds, for a before/after table.

    .venv/bin/python studies/startup/measure.py --baseline eb26305      # -> studies/startup/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
COMMANDS: list[list[str]] = [
    ["--help"],
    ["methods"],
    ["spaces"],
    ["space", "check", "hybrid"],
    ["space", "check", "hybrid", "--budget", "0.5%"],
    ["estimate", "--space", "hybrid", "--budget", "0.5%"],
]
HEAVY = ("torch", "transformers", "optuna", "numpy")
MAPPED = ("methods", "kernels", "search_spaces")  # top-level folders installed inside autopeft/ (setup.py)


def run_once(argv: list[str], pythonpath: str | None, importtime: bool = False) -> tuple[float, str]:
    """(wall seconds, stderr) of one ``python -m autopeft argv`` in a fresh process."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "autopeft", *argv]
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=tempfile.gettempdir())  # not the repository: its folder would shadow PYTHONPATH
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"autopeft {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stderr


def imported(stderr: str) -> dict[str, bool]:
    """Which of :data:`HEAVY` an ``-X importtime`` log shows (at any depth)."""
    names = {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return {name: name in names for name in HEAVY}


def export_tree(rev: str, into: Path) -> str:
    """``rev`` laid out as the installed package under ``into``; returns the PYTHONPATH entry."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    src = into / "src"
    src.mkdir()
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(src, filter="data")
    site = into / "site"
    shutil.copytree(src / "autopeft", site / "autopeft")
    for folder in MAPPED:
        shutil.copytree(src / folder, site / "autopeft" / folder)
    return str(site)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    return {"processor": model, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            **{lib: metadata.version(lib) for lib in ("torch", "transformers", "optuna", "numpy")},
            "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="git revision to time as well (the 'before' column)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()

    record = {"machine": machine(), "repeats": args.repeats, "statistic": "median wall seconds of fresh processes",
              "tree": {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain"))}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"tree": None}
        if args.baseline:
            trees["baseline"] = export_tree(args.baseline, Path(tmp))
            record["baseline"] = {"rev": args.baseline, "commit": git("rev-parse", args.baseline)}
        times = {(tree, i): [] for tree in trees for i in range(len(COMMANDS))}
        for path in trees.values():  # warm the file cache (and check every command runs) before timing
            for argv in COMMANDS:
                run_once(argv, path)
        for round_ in range(args.repeats):
            for i, argv in enumerate(COMMANDS):
                for tree, path in trees.items():
                    times[tree, i].append(run_once(argv, path)[0])
            print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr)
        rows = []
        for i, argv in enumerate(COMMANDS):
            row = {"command": "autopeft " + " ".join(argv)}
            for tree, path in trees.items():
                samples = times[tree, i]
                row[tree] = {"median_s": round(statistics.median(samples), 3), "min_s": round(min(samples), 3),
                             "max_s": round(max(samples), 3), "samples_s": [round(s, 3) for s in samples],
                             "imports": imported(run_once(argv, path, importtime=True)[1])}
            rows.append(row)
    record["machine"]["loadavg_end"] = os.getloadavg()
    record["commands"] = rows
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    width = max(len(r["command"]) for r in rows)
    for r in rows:
        before = f"{r['baseline']['median_s']:7.2f} s -> " if "baseline" in r else ""
        heavy = ", ".join(k for k, v in r["tree"]["imports"].items() if v) or "none"
        print(f"{r['command']:<{width}}  {before}{r['tree']['median_s']:6.2f} s   imports: {heavy}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
