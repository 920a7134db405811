"""The search engine end to end on a tiny local model and dataset: rungs, promotion, final stage,
study files, resume (also after SIGKILL mid-trial), memory objective, user errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from autopeft.cli.main import main


@pytest.fixture(scope="module")
def assets(tiny_search_assets):
    return tiny_search_assets  # tests/conftest.py


def _args(assets, out, *extra):
    model, data, space = assets
    return ["search", "--model", str(model), "--dataset", str(data), "--space", str(space), "--out", str(out),
            "--budget", "1.2k", "--batch-size", "8", "--workers", "1", "--quiet", "--baselines", "none", *extra]


def _trials(out):
    return pd.read_csv(out / "trials.csv")


def test_search_with_rungs_final_stage_and_resume(assets, tmp_path, capsys):
    out = tmp_path / "study"
    args = _args(assets, out, "--trials", "5", "--max-steps", "40", "--min-steps", "10", "--eta", "2", "--seeds", "2")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rungs"] == [10, 20, 40]
    trials = _trials(out)
    trained = trials[trials.status.isin(["complete", "stopped"])]
    assert len(trained) == 5 and (trained.state != "fail").all()
    # every trained plan reached a rung; stopped ones stopped below the top, complete ones at the top
    assert set(trained[trained.status == "stopped"].steps) <= {10, 20}
    assert set(trained[trained.status == "complete"].steps) == {40}
    for row in trained.itertuples():
        rungs = json.loads(row.rung_metrics)
        assert set(rungs) == {str(r) for r in summary["rungs"] if r <= row.steps}
        assert row.seed == row.number  # --seed 0 + trial number
    complete = trained[trained.status == "complete"]
    assert (complete.metric == [json.loads(r)["40"] for r in complete.rung_metrics]).all()
    assert (trials[trials.status == "infeasible"].params > summary["budget_params"]).all()
    assert trials.loc[trials.number == 0, "params"].item() == 0  # warm start: the smallest plan first
    assert summary["compute"]["search_steps"] == trained.steps.sum()

    # the front: top-rung plans only, its adapters under front/<n>/; the finalists (the 3 best by seed
    # mean, or own run if not retrained) retrained with 2 seeds, seed 2 shared by all of them
    pareto = pd.read_csv(out / "pareto.csv")
    assert set(pareto.number) == {e["trial"] for e in summary["front"]} <= set(complete.number)
    finalists = [e for e in summary["front"] if e["retrain"] is not None]
    ranked = sorted(summary["front"], key=lambda e: (-(e["retrain"] or {"mean": e["metric"]})["mean"], e["params"]))
    assert {e["trial"] for e in ranked[:3]} <= {e["trial"] for e in finalists}
    assert len({tuple(e["retrain"]["seeds"][1:]) for e in finalists}) == 1  # common random numbers
    for entry in summary["front"]:
        retrain = entry["retrain"]
        if retrain is not None:
            assert len(retrain["seeds"]) == 2 and retrain["seeds"][0] == entry["trial"]
            assert retrain["mean"] == pytest.approx(sum(retrain["values"]) / 2)
            assert retrain["values"][0] == entry["metric"]  # seed 1 is the trial's own full-fidelity run
        front_metrics = json.loads((out / "front" / f"{entry['trial']:04d}" / "metrics.json").read_text())
        assert front_metrics["retrain"] == retrain
        assert (out / "front" / f"{entry['trial']:04d}" / "adapter.safetensors").is_file()
    assert pareto.retrain_mean.notna().sum() == len(finalists)

    # best/: the pick's adapter, validation + test metrics, test over every seed
    best = json.loads((out / "best" / "metrics.json").read_text())
    chosen = max(finalists, key=lambda e: (e["retrain"]["mean"], -e["params"]))
    assert best["trial"] == chosen["trial"] and best["retrain"] == chosen["retrain"]
    assert best["seed"] in best["retrain"]["seeds"] and len(best["test_retrain"]["values"]) == 2
    assert best["validation"]["accuracy"] in best["retrain"]["values"]
    capsys.readouterr()
    assert main(["eval", str(out / "best"), "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == best["validation"]["accuracy"]

    # the same command resumes: nothing is trained again, the result is the same
    before = _trials(out)
    assert main(args) == 0
    again = _trials(out)
    assert len(again) == len(before) and (again.metric.fillna(-1) == before.metric.fillna(-1)).all()
    assert json.loads((out / "best" / "metrics.json").read_text()) == best
    # one more trial trains exactly one more plan
    assert main([*args[:args.index("--trials") + 1], "6", *args[args.index("--trials") + 2:]]) == 0
    assert _trials(out).status.isin(["complete", "stopped"]).sum() == 6

    # a different rung layout on the same --out is refused, naming the difference
    capsys.readouterr()
    assert main([*args, "--min-steps", "20"]) == 2
    assert "rungs" in capsys.readouterr().err


def test_memory_objective_and_constraint(assets, tmp_path, capsys):
    out = tmp_path / "mem"
    args = _args(assets, out, "--trials", "3", "--max-steps", "6", "--seeds", "1", "--objectives",
                 "metric,params,memory", "--memory", "1GiB", "--sampler", "random")
    assert main(args) == 0
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete and all(t.values[2] == t.user_attrs["memory_bytes"] > 0 for t in complete)
    trials = _trials(out)
    assert trials[trials.status != "infeasible"].memory_bytes.notna().all()
    # a memory limit below what the smallest plan needs is refused before any training
    capsys.readouterr()
    assert main(_args(assets, tmp_path / "tiny-mem", "--memory", "1KiB")) == 2
    assert "--memory 1KiB is below what the smallest plan" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--objectives", "params"], "must include metric"),
    (["--memory", "lots"], "not a memory size"),
    (["--min-steps", "300"], "--min-steps"),
    (["--eta", "1"], "--eta"),
    (["--seeds", "0"], "--seeds"),
    (["--workers", "many"], "--workers 'many'"),
    (["--storage", "nosuchdb://x"], "--storage"),
])
def test_search_option_mistakes_are_one_line_errors(assets, tmp_path, capsys, extra, message):
    assert main(_args(assets, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def _cli(assets, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "autopeft", *_args(assets, out, *extra)], env


def _running_with_checkpoint(out: Path):
    """Number of a trial after the first that trains past its first rung (a checkpoint exists), or None.
    (Trial 0 has then finished: the kill must not lose it.)"""
    if not (out / "study.db").is_file():
        return None
    try:
        study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - the database may be mid-creation
        return None
    for t in running:
        if t.number > 0 and (out / "trials" / f"{t.number:04d}" / "checkpoint.safetensors").is_file():
            return t.number
    return None


@pytest.mark.slow  # three search processes
def test_sigkill_mid_trial_then_same_command_resumes_without_losing_anything(assets, tmp_path):
    # eta 1.5: most plans continue past the first rung, so there is a trial to kill between rungs
    flags = ("--trials", "3", "--max-steps", "120", "--min-steps", "40", "--eta", "1.5", "--seeds", "1")
    # reference: the same search, never interrupted
    reference = tmp_path / "reference"
    command, env = _cli(assets, reference, *flags)
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    # the same search, killed while a trial trains past its first rung
    out = tmp_path / "killed"
    command, env = _cli(assets, out, *flags)
    log = tmp_path / "killed.log"
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while (victim := _running_with_checkpoint(out)) is None:
        ended = process.poll()
        assert ended is None and time.time() < deadline, (
            f"the search ended (code {ended}) before it could be killed:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _trials(out)
    finished_before = before[before.status.isin(["complete", "stopped"])]
    # re-run the same command: resumes the killed trial from its checkpoint, completes the budget
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    after = _trials(out)
    trained = after[after.status.isin(["complete", "stopped"])]
    assert len(trained) == 3 and trained.number.is_unique
    kept = after.set_index("number").loc[finished_before.number]
    assert (kept.status.values == finished_before.status.values).all()
    assert (kept.rung_metrics.values == finished_before.rung_metrics.values).all()
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    resumed = study.trials[victim].user_attrs
    assert resumed["interruptions"] == 1 and resumed["resumed_from_step"] >= 40
    # continued from its checkpoint, the killed trial reached exactly the uninterrupted run's metrics
    ref = _trials(reference).set_index("number")
    assert after.set_index("number").loc[victim, "rung_metrics"] == ref.loc[victim, "rung_metrics"]
    assert (out / "best" / "metrics.json").is_file() and (out / "summary.json").is_file()


@pytest.mark.slow  # starts a second process
def test_local_worker_processes_share_the_sqlite_study(assets, tmp_path):
    out = tmp_path / "two"
    # long enough trials that the second process has started before the first one ran them all
    args = _args(assets, out, "--trials", "6", "--max-steps", "400", "--min-steps", "130", "--seeds", "2")
    args[args.index("--workers") + 1] = "2"
    assert main(args) == 0
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("complete", "stopped")]
    assert len(trained) == 6 and len({t.user_attrs["worker"]["pid"] for t in trained}) == 2
    assert (out / "logs" / "worker-1.log").is_file() and (out / "best" / "metrics.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert all(len(e["retrain"]["values"]) == 2 for e in summary["front"] if e["retrain"])
