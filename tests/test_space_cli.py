"""`autopeft spaces` and `autopeft space check|sample`, on tiny model configs (fast) and the real models (slow)."""

import json

import pytest

from autopeft.cli.commands.space import check_report, model_shapes
from autopeft.cli.main import main
from autopeft.space import list_presets, load_space
from autopeft.testing import TINY_FAMILIES, tiny_config


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A config-only model folder per tiny family: `space` commands need no weights."""
    dirs = {}
    for family in TINY_FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        tiny_config(family).save_pretrained(folder)
        dirs[family] = str(folder)
    return dirs


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_lists_every_preset_with_its_description(capsys):
    code, out, _ = run(capsys, "spaces", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list_presets()
    assert all(r["description"] for r in rows)
    assert {"hybrid", "lora", "adapters", "prefix", "sappa", "s3delta", "mam", "unipelt"} <= set(list_presets())
    code, out, _ = run(capsys, "spaces")
    assert code == 0 and all(r["name"] in out for r in rows)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_preset_passes_space_check_on_tiny_models(capsys, tiny_dirs, family):
    for name in list_presets():
        code, out, err = run(capsys, "space", "check", name, "--model", tiny_dirs[family], "--budget", "5%",
                             "--samples", "200", "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["units"] > 0 and report["points"] >= 1
        assert 0 <= report["min_params"] <= report["max_params"]
        assert 0 <= report["fits_fraction"] <= 1 and 0 <= report["draws_fit_fraction"] <= 1


def test_space_check_text_output_and_errors(capsys, tiny_dirs, tmp_path):
    code, out, _ = run(capsys, "space", "check", "hybrid", "--model", tiny_dirs["bert"], "--budget", "2%")
    assert code == 0
    assert "valid" in out and "size: " in out and "params: min 0" in out and "(exact count)" in out
    code, out, _ = run(capsys, "space", "check", "sappa", "--model", tiny_dirs["llama"], "--budget", "2%",
                       "--samples", "100")
    assert code == 0 and "estimate from 100 uniform samples" in out and "3 mask flags" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("decisions:\n  - {sites: [q], per: layers, methods: {none: {}}}\n")
    code, _, err = run(capsys, "space", "check", str(bad), "--model", tiny_dirs["bert"])
    assert code == 2 and err.startswith(f"error: {bad}:2:18: decisions[0].per: per='layers'; allowed:")
    tight = tmp_path / "tight.yaml"
    tight.write_text("budget: 10\ndecisions:\n  - {sites: [q], methods: {lora: {r: {int: [1, 4]}}}}\n")
    code, out, err = run(capsys, "space", "check", str(tight), "--model", tiny_dirs["bert"])
    assert code == 2 and "0% of the space's points fit" in out
    assert "the smallest feasible budget is 240 params" in err


def test_space_sample_prints_plans_within_the_budget(capsys, tiny_dirs):
    code, out, _ = run(capsys, "space", "sample", "hybrid", "--model", tiny_dirs["gpt2"], "--n", "6",
                       "--budget", "1000", "--seed", "3", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6
    assert all(r["params"] <= 1000 for r in rows)
    assert any(r["repaired_from"] for r in rows) and all(0 < r["training"]["lr"] < 1 for r in rows)
    assert len({json.dumps(r["plan"]) for r in rows}) == 6
    again = json.loads(run(capsys, "space", "sample", "hybrid", "--model", tiny_dirs["gpt2"], "--n", "6",
                           "--budget", "1000", "--seed", "3", "--json")[1])
    assert again == rows  # seeded
    code, out, _ = run(capsys, "space", "sample", "lora", "--model", tiny_dirs["llama"], "--n", "2")
    assert code == 0 and out.count(" params (") == 2


@pytest.mark.slow
@pytest.mark.parametrize(("model", "budget"), [("minilm", "0.05%"), ("smollm2-135m", "0.1%")])
def test_every_preset_passes_space_check_on_the_real_models(capsys, model, budget):
    """Config only (SmolLM2's is converted from its GGUF once and cached; see autopeft.training.models)."""
    arch, base = model_shapes(model)
    assert base == {"minilm": 22_713_216, "smollm2-135m": 134_515_008}[model]
    for name in list_presets():
        space = load_space(name)
        budget_params = int(base * float(budget[:-1]) / 100)
        report = check_report(space, arch, base, budget_params, samples=300)
        assert report["min_params"] <= budget_params < report["max_params"], name
    code, out, err = run(capsys, "space", "check", "hybrid", "--model", model, "--budget", budget)
    assert code == 0, err
    code, out, err = run(capsys, "space", "sample", "sappa", "--model", model, "--budget", budget, "--n", "3")
    assert code == 0 and out.count(" params (") == 3
