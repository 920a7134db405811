"""End-to-end: real searches through the CLI on real (offline) models and data, plus resume."""

import json

import pandas as pd
import pytest

from autopeft.cli.main import main
from autopeft.training.data import load_task_data

pytestmark = pytest.mark.slow


def _search(out, *extra):
    # --steps is --max-steps: rungs 8 and 25 (eta 3); one seed in the final stage to stay quick. trec (short
    # questions, 1k validation + test examples) rather than the default rotten_tomatoes: the same code path
    # at a quarter of the evaluation cost, which dominates this test on CPUs without native bf16
    return main(["search", "--dataset", "trec", "--out", str(out), "--trials", "3", "--steps", "25", "--quiet",
                 "--budget", "0.5%", "--seeds", "1", "--workers", "1", "--baselines", "none", *extra])


def test_minilm_search_eval_and_resume(tmp_path, capsys):
    out = tmp_path / "study"
    assert _search(out) == 0
    for name in ("study.db", "trials.csv", "pareto.csv", "summary.json", "settings.json",
                 "best/plan.json", "best/adapter.safetensors", "best/autopeft_config.json", "best/metrics.json"):
        assert (out / name).is_file(), name
    trials = pd.read_csv(out / "trials.csv")
    for column in ("number", "state", "metric", "params", "params_pct", "duration_s", "plan"):
        assert column in trials.columns
    trained = trials[trials.status.isin(["complete", "stopped"])]
    assert len(trained) == 3
    complete = trials[trials.state == "complete"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rungs"] == [8, 25]
    assert (trained.params <= summary["budget_params"]).all()
    assert (trials[trials.status == "infeasible"].params > summary["budget_params"]).all()
    pareto = pd.read_csv(out / "pareto.csv")
    assert 1 <= len(pareto) <= 3 and set(pareto.number) <= set(complete.number)
    # warm start: trial 0 trains the space's smallest plan (head only), which anchors the front
    assert trials.loc[trials.number == 0, "params"].item() == 0
    assert 0 in set(pareto.params)
    metrics = json.loads((out / "best/metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # with one seed, the pick is the front's best full-fidelity trial
    assert metrics["validation"]["accuracy"] == max(pareto.metric) == metrics["retrain"]["mean"]

    # eval reproduces the recorded validation metric exactly
    capsys.readouterr()
    assert main(["eval", str(out / "best"), "--split", "validation", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == metrics["validation"]["accuracy"]
    assert evaluated["macro_f1"] == metrics["validation"]["macro_f1"]

    # pareto prints a table and JSON
    assert main(["pareto", str(out)]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert main(["pareto", str(out), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(pareto)

    # same command: resumes, trains nothing new; one more trial: trains exactly one
    def trained_count():
        return pd.read_csv(out / "trials.csv").status.isin(["complete", "stopped"]).sum()

    assert _search(out) == 0
    assert trained_count() == 3
    assert _search(out, "--trials", "4") == 0  # the later --trials wins
    assert trained_count() == 4

    # other settings on the same --out are refused, naming the difference
    assert _search(out, "--max-length", "32") == 2
    assert "max_length" in capsys.readouterr().err


def test_causal_lm_search_on_smollm2_hamlet(tmp_path, capsys):
    """The first fifth of Hamlet as a csv of text rows: evaluating a 135M model on every validation and test
    token dominates this test on CPUs without native bf16, and the built-in alias is tested in test_data."""
    excerpt = tmp_path / "hamlet.csv"
    rows = load_task_data("hamlet").splits["train"]["text"]
    pd.DataFrame({"text": rows[: len(rows) // 5]}).to_csv(excerpt, index=False)
    out = tmp_path / "lm"
    code = main(["search", "--model", "smollm2-135m", "--dataset", str(excerpt), "--out", str(out), "--trials", "2",
                 "--steps", "4", "--batch-size", "2", "--max-length", "32", "--budget", "0.1%", "--quiet",
                 "--seeds", "1", "--workers", "1", "--baselines", "none"])
    assert code == 0
    metrics = json.loads((out / "best/metrics.json").read_text())
    assert metrics["validation"]["loss"] > 0 and metrics["test"]["perplexity"] > 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "loss"
    capsys.readouterr()
    assert main(["eval", str(out / "best"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == metrics["validation"]["loss"]


def test_train_a_plan_and_eval_its_adapter(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["plan", "--method", "ia3", "--sites", "k,v,down", "--out", str(plan)]) == 0
    out = tmp_path / "adapter"
    capsys.readouterr()
    assert main(["train", "--plan", str(plan), "--dataset", "trec", "--steps", "20", "--out", str(out),
                 "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["adapter_params"] == 6 * (384 + 384 + 1536)
    assert main(["eval", str(out), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == trained["test"]["accuracy"]
