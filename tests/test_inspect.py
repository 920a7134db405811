"""Inspecting studies: pareto table/JSON/plots, plan pictures, report.html, progress, Optuna compatibility.

Most tests use a study built with Optuna directly (realistic trial attributes, including the optional
ones newer searches record: retrain, memory_bytes, steps, baseline), so they run in seconds; one slow
test runs a real tiny search and inspects, exports and retrains its result."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib.image
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from rich.console import Console
from tiny_assets import tiny_csv, tiny_model_dir

from autopeft.cli.main import main
from autopeft.core.arch import arch_from_config
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.report.plan_picture import plan_cells
from autopeft.searching.progress import Reporter
from autopeft.study.view import hypervolume_2d, load_study_view
from autopeft.testing import tiny_config
from autopeft.training.session import native_bf16

ARCH = arch_from_config(tiny_config("bert", 2))
BASE = 42128
DISTRIBUTIONS = {"training.lr": FloatDistribution(1e-3, 5e-3, log=True),
                 "lora.method": CategoricalDistribution(["none", "lora"])}


def _plan(*entries) -> Plan:
    return Plan(tuple(PlanEntry(m, tuple(layers), tuple(sites), dict(o)) for m, layers, sites, o in entries))


HEAD = _plan()
LORA2 = _plan(("lora", (0, 1, 2), ("q", "v"), {"r": 2}))
LORA8 = _plan(("lora", (0, 1, 2), ("q", "v"), {"r": 8}))
HYBRID = _plan(("lora", (0, 1), ("q",), {"r": 4}), ("lora", (2,), ("v",), {"r": 2}), ("ia3", (2,), ("v",), {}),
               ("adapter", (2,), ("down",), {"size": 8}), ("prefix", (1,), ("attn",), {"length": 4}))
# number, state, metric, plan, extra user attrs
TRIALS = [
    (0, TrialState.COMPLETE, 0.60, HEAD, {"memory_bytes": 9 * 2**20}),
    (1, TrialState.COMPLETE, 0.70, LORA2, {"retrain": {"seeds": [0, 1, 2], "values": [0.70, 0.72, 0.71],
                                                       "mean": 0.71, "std": 0.01}, "memory_bytes": 12 * 2**20}),
    (2, TrialState.COMPLETE, 0.68, LORA8, {}),
    (3, TrialState.COMPLETE, 0.75, HYBRID, {"steps": 40, "rung_metrics": {"10": 0.6, "40": 0.75}}),
    (4, TrialState.PRUNED, None, LORA8, {"status": "infeasible", "reason": "over budget"}),
    (5, TrialState.FAIL, None, LORA2, {"status": "failed", "reason": "RuntimeError: boom"}),
    (6, TrialState.COMPLETE, 0.69, LORA8, {"baseline": "lora r8 q,v"}),
    (7, TrialState.COMPLETE, 0.66, LORA2, {}),
]


def make_study(root, model_dir, trials=TRIALS) -> str:
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="autopeft", directions=["maximize", "minimize"])
    for number, state, metric, plan, extra in trials:
        params = plan.num_params(ARCH)
        attrs = {"plan": plan.to_dict(), "params": params, "params_pct": 100 * params / BASE, "seed": number,
                 "status": "complete", "duration_s": 2.0 + number, "step_time_s": 0.05,
                 "train_config": {"steps": 10, "lr": 0.002}, **extra}
        if metric is not None:
            attrs["validation"] = {"accuracy": metric}
        study.add_trial(optuna.trial.create_trial(
            state=state, values=[metric, float(params)] if state == TrialState.COMPLETE else None,
            params={"training.lr": 1e-3 * (1 + number % 4), "lora.method": "none" if plan is HEAD else "lora"},
            distributions=DISTRIBUTIONS, user_attrs=attrs))
    # newer searches keep the final-stage retrain record of a front trial in a study attribute
    study.set_user_attr("retrain:3", {"seeds": [3, 4], "values": [0.75, 0.73], "mean": 0.74, "std": 0.01414,
                                      "collapsed_seeds": [4]})
    settings = {"identity": {"data": {"model": str(model_dir), "dataset": "tiny.csv"}, "budget": "20%",
                             "space": "hybrid", "seed": 0, "train": {"steps": 10, "batch_size": 8, "lr": 0.001}},
                "base_params": BASE, "budget_params": 8425, "data": {"task": "classification"}}
    (root / "settings.json").write_text(json.dumps(settings))
    (root / "summary.json").write_text(json.dumps({"metric": "accuracy", "elapsed_s": 95.0,
                                                   "best": {"trial": 3, "test": {"accuracy": 0.74}}}))
    return url


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "bert")


@pytest.fixture
def study(tmp_path, model_dir):
    make_study(tmp_path / "study", model_dir)
    return tmp_path / "study"


def test_hypervolume_by_hand():
    ref = (1.0, 0.0)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(0.0, 0.5)], ref) == pytest.approx(0.5)
    # (0, .5) and (.5, .8): 0.5 * 1 + (0.8 - 0.5) * 0.5 = 0.65; a dominated point adds nothing
    assert hypervolume_2d([(0.0, 0.5), (0.5, 0.8), (0.6, 0.7)], ref) == pytest.approx(0.65)
    assert hypervolume_2d([(1.5, 0.9)], ref) == 0.0  # outside the reference box


def test_view_reads_attributes_and_front(study):
    view = load_study_view(study)
    assert [t.number for t in view.front] == [0, 1, 3]  # sorted by params; 2, 6 and 7 are dominated
    t1 = view.trial(1)
    assert (t1.metric_mean, t1.metric_std, t1.memory_bytes) == (0.71, 0.01, 12 * 2**20)
    assert (view.trial(3).metric_mean, view.trial(3).metric_std) == (0.74, 0.01414)
    assert view.trial(3).steps == 40 and view.trial(2).steps == 10 and view.trial(4).steps == 0
    assert view.best().number == 3
    assert view.counts() == {"complete": 6, "infeasible": 1, "fail": 1}
    assert [(b.name, b.params) for b in view.baselines] == [("lora r8 q,v", LORA8.num_params(ARCH))]
    curve = view.efficiency_curve()
    assert [p["steps"] for p in curve] == [10, 20, 30, 70, 80, 90, 100]  # the infeasible trial never trained
    assert all(a["hypervolume"] <= b["hypervolume"] + 1e-12 for a, b in zip(curve, curve[1:], strict=False))


def test_pareto_table_json_and_all(study, capsys):
    assert main(["pareto", str(study)]) == 0
    out = capsys.readouterr().out
    assert "0.7100 ± 0.0100" in out and "12.0 MiB" in out and "L0-2:lora(q,v r2)" in out
    rows = [line for line in out.splitlines() if re.match(r"^│ \d", line)]
    assert [int(r.split("│")[1]) for r in rows] == [0, 1, 3]
    assert main(["pareto", str(study), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in data] == [0, 1, 3] and data[1]["metric_std"] == 0.01
    # a retrained seed that predicted one class is shown next to the mean it is part of
    assert [r["collapsed_seeds"] for r in data] == [[], [], [4]] and "(1 of 2 seeds collapsed to one class)" in out
    assert main(["pareto", str(study), "--all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in data} == {"complete", "infeasible", "failed"} and len(data) == len(TRIALS)


def test_pareto_plot_files(study, capsys):
    assert main(["pareto", str(study), "--plot"]) == 0
    png = matplotlib.image.imread(study / "pareto.png")
    assert png.shape[0] > 300 and png.shape[1] > 500
    html = (study / "pareto.html").read_text()
    assert len(html) < 100_000 and "cdn.plot.ly" in html  # plotly.js from the CDN, not embedded
    assert "L0-1:lora(q r4)" in html and "lora r8 q,v" in html  # hover shows plans; the baseline is drawn


def test_show_plan_adapter_and_study(tmp_path, study, model_dir, capsys):
    plan_file = tmp_path / "plan.json"
    HYBRID.save(plan_file)
    assert main(["show", str(plan_file), "--png", str(tmp_path / "a.png")]) == 0  # no model: no counts
    assert main(["show", str(plan_file), "--model", str(model_dir), "--png", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert f"{HYBRID.num_params(ARCH) / 1e3:.1f}k params" in out
    assert main(["show", str(study), "--png", str(tmp_path / "c.png")]) == 0  # the study's best: trial 3
    assert "trial 3 of" in capsys.readouterr().out
    assert main(["show", f"{study}:1", "--png", str(tmp_path / "d.png")]) == 0
    for name in "abcd":
        assert matplotlib.image.imread(tmp_path / f"{name}.png").shape[0] > 100
    negative = tmp_path / "neg.json"
    _plan(("lora", (-1,), ("q",), {})).save(negative)
    assert main(["show", str(negative), "--png", str(tmp_path / "e.png")]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_hybrid_cell_holds_every_method():
    cells, layers, columns = plan_cells(HYBRID, ARCH)
    at = {(c.layer, c.site): [] for c in cells}
    for c in cells:
        at[(c.layer, c.site)].append((c.method, c.label))
    assert sorted(at[(2, "v")]) == [("ia3", ""), ("lora", "r2")]
    assert at[(1, "attn")] == [("prefix", "P4")] and at[(2, "down")] == [("adapter", "8")]
    assert layers == 3 and columns == ["q", "k", "v", "o", "up", "down", "attn"]
    assert sum(c.params for c in cells) == HYBRID.num_params(ARCH)


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_report(study, capsys):
    assert main(["report", str(study)]) == 0
    html = (study / "report.html").read_text()
    for heading in ("Settings", "Best plan", "Pareto front (3 plans)", "Search efficiency", "Parameter importances",
                    "Timings"):
        assert heading in html
    images = _images(html)
    assert len(images) == 4 and all(i.startswith(b"\x89PNG") for i in images)  # best plan, front, efficiency, importances
    assert "training.lr" in html  # importance of a searched parameter
    assert "reference point: params = budget, accuracy = 0" in html
    assert "0.7100 ± 0.0100" in html and "test accuracy" in html and "0.7400" in html
    assert 'href="pareto.html"' in html and (study / "pareto.html").is_file()


def test_report_with_too_few_trials(tmp_path, model_dir, capsys):
    make_study(tmp_path / "s", model_dir, trials=TRIALS[:2])
    assert main(["report", str(tmp_path / "s")]) == 0
    html = (tmp_path / "s" / "report.html").read_text()
    assert "not computed: 2 completed trial(s); parameter importances need at least 5" in html


def test_optuna_loads_the_study_and_attributes_hold_the_plan(study):
    """What optuna-dashboard needs: `optuna-dashboard sqlite:///STUDY/study.db` reads the same storage."""
    loaded = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{study / 'study.db'}")
    for trial in loaded.get_trials():
        assert Plan.from_dict(trial.user_attrs["plan"]).num_params(ARCH) == trial.user_attrs["params"]


def test_reporter_plain_status_lines():
    buffer = io.StringIO()
    reporter = Reporter(time_budget_s=60, live=False, console=Console(file=buffer, width=200))
    reporter.trial_start(0, 1, 3, "(head only)", 0, 0.0)
    reporter.trial_done(0, "accuracy", 0.6, 1.0, 1)
    reporter.trial_pruned(1, "over budget")
    reporter.trial_start(2, 2, 3, "L0:lora(q r2)", 160, 0.4)
    reporter.trial_failed(2, "RuntimeError: boom")
    lines = [line for line in buffer.getvalue().splitlines() if "status:" in line]
    assert len(lines) == 2
    assert lines[-1].startswith("[autopeft] status: 1/3 done · 0 running · 1 pruned · 1 failed · front 1 · "
                                "best accuracy 0.6000 · 0s of 1m00s")


def test_reporter_live_line_and_sync(study):
    buffer = io.StringIO()
    reporter = Reporter(live=True, console=Console(file=buffer, force_terminal=True, width=200))
    reporter.search_started(total=8, time_budget_s=3600)
    update = reporter.step_callback(10)
    update(4, 0.5)
    reporter.sync(optuna.load_study(study_name="autopeft", storage=f"sqlite:///{study / 'study.db'}"))
    reporter._live.refresh()
    reporter.close()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert "6/8 done · 0 running · 1 pruned · 1 failed · front 3 · best metric 0.7500" in text
    assert "4/10 steps" in text and "of 1h00m" in text
    assert "status:" not in text  # a live line, not log lines


@pytest.mark.slow
def test_real_tiny_study_inspect_export_retrain(tmp_path, capsys):
    """A real search (tiny model, tiny CSV) through the Python API, then every inspect/reuse command."""
    import autopeft

    model = tiny_model_dir(tmp_path / "model")
    data = tiny_csv(tmp_path / "data.csv")
    out = tmp_path / "study"
    view = autopeft.search(model=str(model), dataset=str(data), out=str(out), trials=5, steps=4, min_steps=4,
                           seeds=2, batch_size=8, budget="20%", max_length=16, quiet=True, precision="fp32",
                           baselines="none")
    assert view.root == out and len(view.completed) == 5 and view.best() is not None
    assert view.front and all(t.metric_std is not None for t in view.front)  # the front was retrained
    # optuna-dashboard compatibility: the storage loads with optuna, trial attributes hold the plan
    loaded = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in loaded.trials if t.state == TrialState.COMPLETE]
    assert all(Plan.from_dict(t.user_attrs["plan"]) is not None for t in complete)
    assert main(["pareto", str(out), "--plot"]) == 0
    assert main(["show", str(out), "--png", str(tmp_path / "best.png")]) == 0
    assert main(["report", str(out)]) == 0
    assert len(_images((out / "report.html").read_text())) >= 3
    best = view.best()
    assert main(["export", str(out), "--out", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "README.md").is_file()
    assert main(["export", str(out), "--trial", str(best.number), "--out", str(tmp_path / "exported-trial")]) == 0
    assert f"front/{best.number:04d}" in capsys.readouterr().out  # the retrained adapter, not the search one
    # retrain a found plan from the study: model, data and lr come from the study
    capsys.readouterr()
    assert main(["train", "--plan", f"{out}:{best.number}", "--steps", "3", "--batch-size", "8",
                 "--precision", "auto", "--out", str(tmp_path / "retrained"), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["adapter_params"] == best.params
    config = json.loads((tmp_path / "retrained" / "autopeft_config.json").read_text())
    assert config["data"]["model"] == str(model) and config["data"]["max_length"] == 16
    assert config["train"]["lr"] == best.attrs["train_config"]["lr"]
    # what "auto" resolved to on this machine is recorded beside it, and the model card shows both
    ran = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    assert config["train"]["precision"] == "auto" and config["precision_ran"] == ran
    assert json.loads((out / "summary.json").read_text())["precision_ran"] == "fp32"  # the study asked fp32
    assert main(["export", str(tmp_path / "retrained"), "--out", str(tmp_path / "exported-retrained")]) == 0
    assert f"precision auto (ran {ran})" in (tmp_path / "exported-retrained" / "README.md").read_text()


def test_plan_sources_and_inherited_training_options(study, model_dir):
    import argparse

    from autopeft.cli.commands.train import inherit
    from autopeft.study.plan_source import resolve_plan_source

    source = resolve_plan_source(f"{study}:1")
    assert source.plan == LORA2 and source.model == str(model_dir) and source.train["lr"] == 0.002
    assert resolve_plan_source(study).plan == HYBRID  # the recorded best
    with pytest.raises(Exception, match="has no trial 99"):
        resolve_plan_source(f"{study}:99")
    blank = dict.fromkeys(("model", "dataset", "task", "text_column", "text_pair_column", "label_column",
                           "max_length", "split_seed", "quantize", "lr", "head_lr_scale", "batch_size", "precision",
                           "steps"))
    args = argparse.Namespace(**blank)
    data = {"model": "m", "dataset": "d.csv", "text_column": "review", "max_length": 16}
    inherited = inherit(args, data, {"lr": 0.002, "steps": 600})
    assert (args.model, args.dataset, args.text_column, args.max_length, args.lr) == ("m", "d.csv", "review", 16, 0.002)
    assert "lr 0.002" in inherited and args.batch_size == 16  # not recorded: the CLI default
    assert args.steps == 600 and "steps 600" in inherited  # a study's full fidelity: the training it searched for
    args = argparse.Namespace(**{**blank, "dataset": "other.csv", "lr": 0.1})
    inherit(args, data, {"lr": 0.002})
    # another dataset: its columns and length are not the study's; an explicit lr wins
    assert (args.model, args.text_column, args.max_length, args.lr) == ("m", None, 64, 0.1)
