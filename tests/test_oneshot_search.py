"""``autopeft search --strategy oneshot``: one supernet run, its readouts trained as the study's trials."""

import json

import optuna
import pandas as pd
import pytest

from autopeft.cli.main import main


def _args(assets, out, *extra):
    model, data, space = assets
    return ["search", "--model", str(model), "--dataset", str(data), "--space", str(space), "--out", str(out),
            "--budget", "1.2k", "--batch-size", "8", "--workers", "1", "--quiet", "--baselines", "none",
            "--max-steps", "20", "--min-steps", "20", "--seeds", "1", *extra]


def test_oneshot_trains_only_the_warm_start_and_the_readouts_then_resumes_without_retraining(tiny_search_assets, tmp_path,
                                                                                           capsys):
    out = tmp_path / "study"
    args = _args(tiny_search_assets, out, "--trials", "50", "--strategy", "oneshot", "--readouts", "4")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "oneshot" and summary["compute"]["supernet_steps"] == 20
    recorded = summary["oneshot"]["readouts"]
    assert 1 <= len(recorded) <= 4
    trials = pd.read_csv(out / "trials.csv")
    readouts = trials[trials.readout.notna()].sort_values("readout")
    assert list(readouts.readout.astype(int)) == list(range(len(recorded)))
    for row, record in zip(readouts.itertuples(), recorded, strict=True):
        assert row.params == record["params"] <= summary["budget_params"]
        assert json.loads(row.plan) == record["plan"]
        assert 0.0 <= record["supernet_metric"] <= 1.0
        assert record["source"] in ("ranking", "sampled")
    measured = json.loads((out / "oneshot" / "readouts.json").read_text())["measured"]
    for record in recorded:  # each readout was chosen among the sub-networks measured inside the supernet
        assert {k: record[k] for k in ("params", "supernet_metric", "kept")} in measured
    trained = trials[trials.status.isin(["complete", "stopped"])]
    assert len(trained) == 1 + len(recorded)  # the warm start and the readouts: the sampler proposed nothing
    ranking = json.loads((out / "oneshot" / "readouts.json").read_text())["ranking"]
    assert len(ranking) == 3 * 2 * 2  # 3 layers x (q, v) x ranks {2, 4} as two nested slices
    assert (out / "best" / "metrics.json").is_file()
    assert main(["report", str(out)]) == 0  # the report shows every readout beside its verified metric
    page = (out / "report.html").read_text()
    assert "One-shot supernet" in page and page.count("ranking of the candidates") == 1
    assert "sub-networks measured inside the supernet" in page
    assert "Units kept at each readout budget" in page
    records = json.loads((out / "oneshot" / "readouts.json").read_text())["readouts"]
    for record in records:
        # the grid's cells are the readout's plan: each kept unit (here one layer and site) at its rank
        placed = sorted((f'L{layer}.{site}', f'{e["method"]} {e["options"]["r"]}') for e in record["plan"]["entries"]
                        for layer in e["layers"] for site in e["sites"])
        assert sorted((unit.split(".", 1)[1], kept) for unit, kept in record["kept"].items()) == placed
    capsys.readouterr()
    assert main(["show", str(out), "--readouts"]) == 0
    shown = capsys.readouterr().out
    assert "Units the supernet kept" in shown
    assert all(kept in shown for record in records for kept in record["kept"].values())

    assert main(args) == 0  # resumed: the study is finished, the supernet is not trained again
    assert len(pd.read_csv(out / "trials.csv")) == len(trials)


def test_readouts_are_verified_at_the_supernets_learning_rate_when_the_space_contains_it(tiny_search_assets,
                                                                                      tmp_path):
    from autopeft.searching.oneshot_stage import readout_training
    from autopeft.space import load_space
    from autopeft.training.config import TrainConfig

    compact = load_space("compact")  # lr searched in [5e-4, 3e-3]
    assert readout_training(compact, TrainConfig(lr=1e-3)) == {"lr": 1e-3}
    assert readout_training(compact, TrainConfig(lr=1e-2)) == {}  # outside the range: the sampler's choice
    out = tmp_path / "study"
    assert main(_args(tiny_search_assets, out, "--trials", "50", "--strategy", "oneshot", "--readouts", "2",
                      "--lr", "0.01")) == 0  # inside the tiny space's [5e-3, 3e-2]
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    readouts = [t for t in study.trials if "oneshot_readout" in t.user_attrs]
    assert readouts and all(t.params["training.lr"] == 0.01 for t in readouts)


def test_oneshot_then_bayes_enqueues_the_readouts_first(tiny_search_assets, tmp_path):
    out = tmp_path / "study"
    assert main(_args(tiny_search_assets, out, "--trials", "6", "--strategy", "oneshot+bayes", "--readouts", "2")) == 0
    trials = pd.read_csv(out / "trials.csv")
    trained = trials[trials.status.isin(["complete", "stopped"])].sort_values("number")
    readouts = int(trials.readout.notna().sum())
    assert 1 <= readouts <= 2 and len(trained) == 6
    assert trained.readout.iloc[1:1 + readouts].notna().all()  # right after the warm start
    assert trained.readout.iloc[1 + readouts:].isna().all()  # then the sampler's plans


def test_oneshot_option_mistakes_are_one_line_errors(tiny_search_assets, tmp_path, capsys):
    assert main(["show", str(tmp_path), "--readouts"]) == 2  # no one-shot study there
    assert "has no one-shot readouts" in capsys.readouterr().err
    assert main(_args(tiny_search_assets, tmp_path / "a", "--strategy", "oneshot", "--readouts", "0")) == 2
    assert "--readouts must be >= 1" in capsys.readouterr().err
    assert main(_args(tiny_search_assets, tmp_path / "b", "--strategy", "oneshot", "--space", "sappa")) == 2
    assert "masks" in capsys.readouterr().err


def test_a_supernet_over_the_memory_cap_is_refused_before_training(tiny_search_assets, tmp_path, capsys):
    from autopeft.oneshot.candidates import candidates
    from autopeft.oneshot.supernet import supernet_plan
    from autopeft.searching.objectives import estimate_memory
    from autopeft.space import load_space
    from autopeft.training.config import TrainConfig
    from autopeft.training.options import DataOptions
    from autopeft.training.pipeline import prepare

    model, data, space = tiny_search_assets
    prepared = prepare(DataOptions(model=str(model), dataset=str(data)))
    supernet = supernet_plan(candidates(load_space(str(space)), prepared.loaded.arch))
    needed = estimate_memory(prepared, supernet, TrainConfig(steps=20, batch_size=8))
    code = main(_args(tiny_search_assets, tmp_path / "m", "--strategy", "oneshot", "--memory", f"{needed - 1}B"))
    assert code == 2 and "the supernet's training step needs" in capsys.readouterr().err
    assert not (tmp_path / "m" / "oneshot" / "supernet.safetensors").exists()  # refused before training


def test_a_subnets_supernet_enqueues_its_measured_best_subnetworks_and_reports_them(tiny_search_assets, tmp_path,
                                                                                     capsys):
    out = tmp_path / "study"
    args = _args(tiny_search_assets, out, "--trials", "50", "--strategy", "oneshot", "--readouts", "3",
                 "--supernet", "subnets")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    recorded = summary["oneshot"]["readouts"]
    assert summary["oneshot"]["training"] == "subnets" and 1 <= len(recorded) <= 3
    saved = json.loads((out / "oneshot" / "readouts.json").read_text())
    assert "ranking" not in saved  # the gates learned nothing: no ranking to show
    assert all(record["source"] == "sampled" for record in recorded)
    measured = saved["measured"]
    assert len(measured) > len(recorded)
    assert [m["supernet_metric"] for m in measured] == sorted((m["supernet_metric"] for m in measured), reverse=True)
    for record in recorded:  # each readout is one of the measured sub-networks, within its budget
        assert {"params": record["params"], "supernet_metric": record["supernet_metric"],
                "kept": record["kept"]} in measured
        assert record["params"] <= record["budget"] <= summary["budget_params"]
    trials = pd.read_csv(out / "trials.csv")
    assert int(trials.readout.notna().sum()) == len(recorded)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "sub-networks measured inside the supernet" in page and "ranking of the candidates" not in page
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # argparse names the option and its choices
        main(_args(tiny_search_assets, tmp_path / "x", "--strategy", "oneshot", "--supernet", "soft"))
    assert exc.value.code == 2 and "--supernet: invalid choice: 'soft'" in capsys.readouterr().err
