"""Reliability end to end (issue #10): real search processes interrupted at chosen moments.

- Ctrl-C (SIGINT) mid-trial, SIGKILL between rungs (a promoted trial training on), SIGKILL in the middle
  of a final-stage retraining: after each, re-running the same command resumes, nothing finished is lost
  or trained twice, and the final report is complete.
- A full disk (a tiny tmpfs filled up while the search runs) and a read-only study directory (the
  tmpfs remounted read-only): one error line, exit code 2, a consistent study.db, and the study
  resumes once space or write access is back. Needs root for ``mount``; skipped with the reason if not.
- A second ``autopeft search`` on the same ``--out`` is refused while the first runs; ``autopeft worker``
  joins it deliberately.

Moments are found by watching the study (SQLite) and the log lines, never by sleeping for a guess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from tiny_assets import TINY_SPACE, tiny_csv, tiny_model_dir

from autopeft.cli.main import main
from autopeft.training.trial_run import Checkpoint

pytestmark = pytest.mark.slow
# rungs 20/30/45/60 (eta 1.5: most plans continue, so there are promoted trials to kill)
FLAGS = ("--baselines", "none", "--budget", "1.2k", "--batch-size", "8", "--workers", "1", "--trials", "3", "--max-steps", "60",
         "--min-steps", "20", "--eta", "1.5", "--seeds", "2")
TRAINED = ("complete", "stopped")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    torch.set_num_threads(1)
    (root / "space.yaml").write_text(TINY_SPACE)
    return tiny_model_dir(root / "model"), tiny_csv(root / "data.csv", n=240), root / "space.yaml"


def _command(assets, out: Path, *extra: str) -> list[str]:
    model, data, space = assets
    return [sys.executable, "-m", "autopeft", "search", "--model", str(model), "--dataset", str(data), "--space",
            str(space), "--out", str(out), *FLAGS, *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Imported at the start of a search process (Python's sitecustomize hook) where a test must be sure to
# signal it in the middle of a training: every step then takes at least 50 ms, so a 60-step run takes
# seconds whatever the machine's speed (a tiny model's retraining once finished in the 0.2 s a test waited).
SLOW_STEPS = """
import time
from autopeft.training import trial_run
_step_loss = trial_run.TrialRun.step_loss
def _slow_step_loss(self, batch):
    time.sleep(0.05)
    return _step_loss(self, batch)
trial_run.TrialRun.step_loss = _slow_step_loss
"""


def slow_steps_env(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sitecustomize.py").write_text(SLOW_STEPS)
    return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, (str(root), ENV.get("PYTHONPATH"))))}


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    yield
    while STARTED:  # a failed assertion must not leave a search training in the background
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


class Search:
    """A search process whose stderr goes to a file we can watch."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.handle = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(command, env=env or ENV, stdout=subprocess.DEVNULL, stderr=self.handle)
        STARTED.append(self.process)

    def text(self) -> str:
        return self.log.read_text()

    def flat(self) -> str:
        """The log with the console's line wrapping undone (messages are whole again)."""
        return " ".join(self.text().split())

    def wait_for(self, condition, what: str, timeout: float = 240) -> object:
        deadline = time.time() + timeout
        while True:
            value = condition()
            if value:
                return value
            assert self.process.poll() is None, f"the search ended before {what}:\n{self.text()[-2000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def signal(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self.handle.close()
        return code


def _study(out: Path) -> optuna.Study | None:
    """The study as it is now, read from a copy of its database: the test process must hold no file
    open on the study's filesystem (remounting it read-only fails while a file is open for writing)."""
    if not (out / "study.db").is_file():
        return None
    snapshot = Path(tempfile.mkdtemp()) / "study.db"
    source = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
    copy = sqlite3.connect(snapshot)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    try:
        return optuna.load_study(study_name="autopeft", storage=f"sqlite:///{snapshot}")
    except Exception:  # noqa: BLE001 - the database may be mid-creation
        return None


def _finished(out: Path) -> dict[int, tuple]:
    """Every trial that finished training, with what must never change once it has: state, values,
    rung metrics, seed, plan."""
    study = _study(out)
    assert study is not None
    return {t.number: (t.state, t.values, t.user_attrs.get("rung_metrics"), t.user_attrs["seed"],
                       json.dumps(t.user_attrs["plan"], sort_keys=True))
            for t in study.get_trials() if t.user_attrs.get("status") in TRAINED and t.state.is_finished()}


def _assert_kept(out: Path, before: dict[int, tuple]) -> None:
    after = _finished(out)
    assert {n: after.get(n) for n in before} == before


def _assert_complete(out: Path) -> None:
    """The final report of a finished search: all files, consistent with the storage."""
    study = _study(out)
    trials = study.get_trials()
    trained = [t for t in trials if t.user_attrs.get("status") in TRAINED]
    assert len(trained) == 3 and all(t.state.is_finished() for t in trials)
    assert not list(out.glob("trials/*/checkpoint.safetensors"))
    summary = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table.number) == [t.number for t in trials] and table.number.is_unique
    pareto = pd.read_csv(out / "pareto.csv")
    assert set(pareto.number) == {e["trial"] for e in summary["front"]}
    for entry in summary["front"]:
        assert (out / "front" / f"{entry['trial']:04d}" / "adapter.safetensors").is_file()
        if entry["retrain"] is None:  # not a finalist
            continue
        assert len(entry["retrain"]["values"]) == 2
        for seed in entry["retrain"]["seeds"][1:]:
            metrics = json.loads((out / "trials" / f"{entry['trial']:04d}" / f"seed-{seed}" / "metrics.json").read_text())
            assert metrics["validation"]["accuracy"] in entry["retrain"]["values"]
    for name in ("plan.json", "adapter.safetensors", "autopeft_config.json", "metrics.json"):
        assert (out / "best" / name).is_file()


def test_ctrl_c_and_sigkill_mid_rung_and_mid_final_stage_then_the_same_command_finishes(assets, tmp_path):
    out = tmp_path / "study"
    command = _command(assets, out)

    # 1. Ctrl-C while a trial after the warm start trains: it stops at a step, saves, exits 130. Steps are
    # slowed (>= 50 ms each) so trial 1 is still training when the signal comes: on a fast host it once
    # finished its 20-step rung in the time the test slept and refused a second search.
    search = Search(command, tmp_path / "run1.log", env=slow_steps_env(tmp_path / "slow"))
    search.wait_for(lambda: "] trial 0 (" in search.text(), "trial 0 started")
    assert main(["search", *command[4:], "--quiet"]) == 2  # meanwhile: a second search is refused (lock)
    search.wait_for(lambda: "] trial 1 (" in search.text(), "trial 1 started")
    time.sleep(0.2)
    assert search.signal(signal.SIGINT) == 130
    log = search.flat()
    assert "Traceback" not in log and log.endswith("interrupted")
    report = log[log.index("interrupted:"):]
    assert "re-run the same command to resume" in report
    study = _study(out)
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["status"] == "running"
    victim = waiting[0].number
    step = Checkpoint.load(out / "trials" / f"{victim:04d}" / "checkpoint.safetensors").step
    assert f"saved to continue: trial {victim} at step {step}" in report
    table = pd.read_csv(out / "trials.csv").set_index("number")
    assert table.loc[victim, "state"] == "waiting"  # the CSV files were rewritten before exiting
    finished = _finished(out)

    # 2. SIGKILL while a trial trains on after a rung that promoted it
    search = Search(command, tmp_path / "run2.log")

    def promoted_and_running():
        study = _study(out)
        for t in study.get_trials(states=(TrialState.RUNNING,)) if study else []:
            decisions = t.user_attrs.get("rung_decisions") or {}
            if any("promoted" in d for d in decisions.values()) and t.user_attrs.get("steps", 0) < 60:
                return t
        return None

    promoted = search.wait_for(promoted_and_running, "a promoted trial")
    assert search.signal(signal.SIGKILL) == -signal.SIGKILL
    _assert_kept(out, finished)
    # run 2 continued the Ctrl-C'd trial under its own number
    assert re.search(rf"\] trial {victim} \([^\[]*\(resumed\)", search.flat())
    rungs_before = promoted.user_attrs["rung_metrics"]
    finished = _finished(out)

    # 3. SIGKILL in the middle of a final-stage retraining
    search = Search(command, tmp_path / "run3.log", env=slow_steps_env(tmp_path / "slow"))
    line = search.wait_for(lambda: next((x for x in search.text().splitlines() if "final stage: trial" in x
                                         and ", seed " in x), None), "a final-stage retraining")
    time.sleep(0.2)
    assert search.signal(signal.SIGKILL) == -signal.SIGKILL
    number, seed = int(line.split("trial ")[1].split(",")[0]), int(line.split("seed ")[1])
    assert not (out / "trials" / f"{number:04d}" / f"seed-{seed}" / "metrics.json").is_file()
    _assert_kept(out, finished)
    study = _study(out)
    again = study.trials[promoted.number]
    # continued from its rung checkpoint: the rung it was killed after was re-evaluated to the same metric
    assert all(again.user_attrs["rung_metrics"][k] == v for k, v in rungs_before.items())
    assert again.user_attrs["interruptions"] >= 1

    # 4. the same command once more: only the missing retraining is done; the report is complete
    search = Search(command, tmp_path / "run4.log")
    assert search.wait() == 0, search.text()[-3000:]
    assert not re.search(r"\] trial \d+ \(\d+/\d+\)", search.text())  # no trial trained again
    _assert_kept(out, finished)
    _assert_complete(out)
    assert (out / "trials" / f"{number:04d}" / f"seed-{seed}" / "metrics.json").is_file()


def test_a_worker_joins_a_running_search_deliberately(assets, tmp_path, capsys):
    out = tmp_path / "study"
    command = _command(assets, out, "--trials", "4", "--max-steps", "90", "--min-steps", "90", "--seeds", "1")
    search = Search(command, tmp_path / "search.log")
    search.wait_for(lambda: "] trial 0 (" in search.text(), "the first trial")
    capsys.readouterr()
    assert main(["search", *command[4:], "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {search.process.pid}" in err[0]
    join = err[0].split("as a worker: ")[1].split()
    assert join[:2] == ["autopeft", "worker"]
    worker = subprocess.run([sys.executable, "-m", "autopeft", *join[1:], "--quiet"], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    assert search.wait() == 0, search.text()[-2000:]
    study = _study(out)
    trained = [t for t in study.get_trials() if t.user_attrs.get("status") in TRAINED]
    assert len(trained) == 4 and len({t.number for t in trained}) == 4
    assert {t.user_attrs["worker"]["pid"] for t in trained} <= {search.process.pid, *_worker_pids(study)}


def _worker_pids(study: optuna.Study) -> set[int]:
    return {t.user_attrs["worker"]["pid"] for t in study.get_trials() if "worker" in t.user_attrs}


# --- a full disk, a read-only directory ---------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (disk-full and read-only faults)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last bytes
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def _one_error_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip() and not x.startswith("[autopeft]")]
    assert "Traceback" not in text and len(lines) == 1, text[-3000:]
    return lines[0]


def test_full_disk_and_read_only_directory_stop_cleanly_and_the_study_resumes(assets, small_disk, tmp_path):
    out = small_disk / "study"
    command = _command(assets, out, "--seeds", "1")
    search = Search(command, tmp_path / "full.log")
    search.wait_for(lambda: "] trial 1 (" in search.text(), "trial 1")
    finished = _finished(out)
    assert finished  # the warm start
    filler = _fill(small_disk)
    assert search.wait(timeout=240) == 2
    line = _one_error_line(search.text())
    assert line.startswith("error: the disk is full") and "re-run the same command to resume" in line
    db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    filler.unlink()
    _assert_kept(out, finished)
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_kept(out, finished)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] >= 3

    # read-only: refused at once with one line; writable again: resumes (one more trial)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        refused = subprocess.run([*command, "--trials", "4"], env=ENV, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        assert "read-only" in _one_error_line(refused.stderr)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    finished = _finished(out)
    done = subprocess.run([*command, "--trials", "4"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_kept(out, finished)
    assert len(_finished(out)) == len(finished) + 1


def test_sigkill_mid_supernet_then_the_same_command_continues_it_bitwise(assets, tmp_path):
    """``--strategy oneshot``: the supernet trains in the search process, checkpointed every 50 steps; a
    SIGKILL between two checkpoints loses only the steps since the last, and the resumed supernet ends
    bitwise where an uninterrupted one does (same scores, same readouts, same supernet predictions)."""
    extra = ("--strategy", "oneshot", "--readouts", "2", "--max-steps", "120")
    whole = tmp_path / "whole"
    assert subprocess.run(_command(assets, whole, *extra), env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=600).returncode == 0

    out = tmp_path / "study"
    command = _command(assets, out, *extra)
    checkpoint = out / "oneshot" / "supernet.safetensors"
    search = Search(command, tmp_path / "run1.log", env=slow_steps_env(tmp_path / "slow"))
    search.wait_for(checkpoint.is_file, "the supernet's first checkpoint")
    assert search.signal(signal.SIGKILL) == -signal.SIGKILL
    assert Checkpoint.load(checkpoint).step == 50  # killed between its checkpoints at 50 and 100 (2.5 s apart)
    assert not (out / "oneshot" / "readouts.json").exists()

    search = Search(command, tmp_path / "run2.log")
    assert search.wait() == 0, search.text()[-3000:]
    resumed, expected = (json.loads((d / "oneshot" / "readouts.json").read_text()) for d in (out, whole))
    for record in (resumed, expected):
        record.pop("seconds")
    assert resumed == expected
    assert pd.read_csv(out / "trials.csv").plan.tolist() == pd.read_csv(whole / "trials.csv").plan.tolist()
