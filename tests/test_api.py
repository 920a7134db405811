"""The Python API: documented examples run, adapters save/load and refuse other base models, and
``autopeft.searching.run`` mirrors ``autopeft search`` through the CLI's own parser."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest
import torch
from tiny_assets import randomize, tiny_csv, tiny_model_dir

import autopeft
import autopeft.api
from autopeft.cli.main import build_parser, main
from autopeft.searching.options import SEARCH_OPTIONS
from autopeft.testing import tiny_batch, tiny_model

ROOT = Path(__file__).resolve().parents[1]
LORA = autopeft.Plan.from_dict({"entries": [{"method": "lora", "layers": [0, 1, 2], "sites": ["q", "v"],
                                             "options": {"r": 4}}]})


def _docstring_example(doc: str) -> str:
    block = doc.split("::\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def test_module_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _docstring_example(autopeft.api.__doc__)
    assert "autopeft.load_adapter" in code
    exec(compile(code, "autopeft.api example", "exec"), {})
    assert (tmp_path / "adapter_dir" / "adapter.safetensors").is_file()


def test_save_and_load_round_trip_and_removal(tmp_path):
    model = tiny_model("bert")
    handle = autopeft.apply(model, LORA)
    randomize(handle)
    batch = tiny_batch()
    with torch.no_grad():
        expected = model(**batch).logits
    autopeft.save_adapter(model, tmp_path / "a", metrics={"validation": {"accuracy": 0.5}})
    config = json.loads((tmp_path / "a" / "autopeft_config.json").read_text())
    assert config["family"] == "bert" and config["base_fingerprint"]["base_params"] == config["base_params"]
    handle.remove()
    fresh = tiny_model("bert")
    reference = {k: v.clone() for k, v in fresh.state_dict().items()}
    with autopeft.load_adapter(fresh, tmp_path / "a"), torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, expected, rtol=0, atol=0)
    assert all(torch.equal(reference[k], v) for k, v in fresh.state_dict().items())
    # a plan path works as well as a Plan
    LORA.save(tmp_path / "plan.json")
    autopeft.apply(tiny_model("bert"), tmp_path / "plan.json").remove()


def test_save_needs_an_applied_plan():
    model = tiny_model("bert")
    with pytest.raises(autopeft.UserError, match="no autopeft plan applied"):
        autopeft.save_adapter(model, "x")
    autopeft.apply(model, LORA).remove()
    with pytest.raises(autopeft.UserError, match="was removed"):
        autopeft.save_adapter(model, "x")


@pytest.mark.parametrize(("other", "reason"), [
    (lambda: tiny_model("bert", seed=1), "different weights"),  # same architecture, other checkpoint
    (lambda: tiny_model("llama"), "different family"),
    (lambda: _wider_bert(), "different parameter count, architecture config"),
])
def test_load_refuses_another_base_model_naming_both(tmp_path, other, reason):
    model = tiny_model("bert")
    autopeft.apply(model, LORA)
    autopeft.save_adapter(model, tmp_path / "a", base_model="tiny-bert-seed0")
    with pytest.raises(autopeft.UserError) as exc:
        autopeft.load_adapter(other(), tmp_path / "a")
    message = str(exc.value)
    assert "was made for base model 'tiny-bert-seed0' (bert" in message and "not for this model '" in message
    assert reason in message and "\n" not in message


def _wider_bert():
    from transformers import AutoModelForSequenceClassification

    from autopeft.testing import tiny_config

    config = tiny_config("bert")
    config.intermediate_size = 64
    return AutoModelForSequenceClassification.from_config(config)


def test_search_mirrors_the_cli_parser(tmp_path):
    options = autopeft.api.search_options()
    cli = vars(build_parser().parse_args(["search"]))
    assert options == {k: v for k, v in cli.items() if k not in ("command", "handler", "verbose")}
    assert {"budget", "time_budget", "trials", "space", "quiet"} <= set(options)
    given = {"budget": "1%", "time_budget": "20m", "quiet": True, "trials": 3, "seed": None}
    parsed = vars(build_parser().parse_args(["search", "--budget", "1%", "--time-budget", "20m", "--quiet",
                                             "--trials", "3"]))
    assert SEARCH_OPTIONS.resolve(given, "search") == {k: parsed[k] for k in options}
    assert SEARCH_OPTIONS.resolve({"max_steps": "90"}, "search")["steps"] == 90  # --max-steps = --steps
    with pytest.raises(TypeError, match="unknown option.*'bugdet'"):
        autopeft.search(bugdet="1%")
    with pytest.raises(autopeft.UserError, match="invalid int value: 'many'"):
        autopeft.search(trials="many", out=str(tmp_path / "s"))
    with pytest.raises(autopeft.UserError, match="is not a budget"):  # the search itself ran and refused
        autopeft.search(budget="abc", out=str(tmp_path / "s"))


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README has no section '{title}'"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_api_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README's "Python API" section, in order, on the real MiniLM."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", _readme_section("Python API"), flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README Python API", "exec"), namespace)


@pytest.mark.slow
def test_trainer_example_runs(tmp_path, capsys):
    model = tiny_model_dir(tmp_path / "model")
    data = tiny_csv(tmp_path / "data.csv")
    plan = tmp_path / "plan.json"
    autopeft.Plan.from_dict({"entries": [
        {"method": "lora", "layers": [0, 1], "sites": ["q", "v"], "options": {"r": 2}},
        {"method": "adapter", "layers": [2], "sites": ["down"], "options": {"size": 4}}]}).save(plan)
    example = runpy.run_path(str(ROOT / "examples" / "trainer_example.py"), run_name="trainer_example")
    result = example["main"](["--plan", str(plan), "--model", str(model), "--dataset", str(data), "--steps", "4",
                              "--batch-size", "8", "--max-length", "16", "--out", str(tmp_path / "out")])
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter.safetensors").is_file()
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert 0.0 <= metrics["validation"]["accuracy"] <= 1.0
    assert result["validation_accuracy"] == metrics["validation"]["accuracy"]
    assert result["adapter_params"] == autopeft.Plan.load(plan).num_params(arch_of(model))
    # the saved adapter is a normal autopeft adapter: `autopeft eval` rebuilds the data and re-evaluates it
    capsys.readouterr()
    assert main(["eval", str(adapter), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    # same adapter, same split; autopeft pads and batches differently from Trainer: at most one of 12 flips
    assert evaluated["accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=0.09)


def arch_of(model_dir):
    from autopeft.core.arch import arch_from_config
    from autopeft.training.models import load_config

    return arch_from_config(load_config(str(model_dir)))
