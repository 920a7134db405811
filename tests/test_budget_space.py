"""Budgets and the first search-space parser."""

import optuna
import pytest

from autopeft.arch import arch_from_config
from autopeft.budget import parse_budget
from autopeft.errors import UserError
from autopeft.space import list_presets, load_space, parse_space
from autopeft.testing import TINY_FAMILIES, tiny_config


@pytest.mark.parametrize(("text", "expected"), [
    ("0.5%", 5_000), ("100%", 1_000_000), ("120k", 120_000), ("1.5M", 1_500_000), ("250000", 250_000),
    ("2K", 2_000), (" 3m ", 3_000_000),
])
def test_parse_budget(text, expected):
    assert parse_budget(text, base_params=1_000_000) == expected


@pytest.mark.parametrize("text", ["0.5", "5%%", "-1%", "abc", "", "0%", "0", "101%", "1.5x"])
def test_malformed_budget_is_a_clear_error(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text, base_params=1_000_000)


def test_every_preset_parses_and_samples_on_every_family():
    assert "hybrid" in list_presets()
    for name in list_presets():
        space = load_space(name)
        for family in TINY_FAMILIES:
            arch = arch_from_config(tiny_config(family))
            study = optuna.create_study(directions=["maximize", "minimize"])
            for _ in range(5):
                trial = study.ask()
                plan, training = space.sample(trial, arch)
                assert plan.num_params(arch) >= 0
                plan.placements(arch)  # resolvable on this family
                assert set(training) <= {"lr"}


def test_sampling_is_conditional_and_groups_layers():
    space = parse_space("""
decisions:
  - name: d
    layers: all
    sites: [q, v]
    per: global
    methods:
      lora: {r: 4}
""", "inline", "inline")
    arch = arch_from_config(tiny_config("bert"))
    trial = optuna.create_study().ask()
    plan, _ = space.sample(trial, arch)
    assert len(plan.entries) == 1
    assert plan.entries[0].layers == (0, 1, 2)
    assert plan.num_params(arch) == 3 * 2 * 4 * (40 + 40)
    assert trial.params == {}  # a single method with fixed options samples nothing


@pytest.mark.parametrize(("doc", "message"), [
    ("decisions: [", "invalid YAML at line"),
    ("- 1", "mapping"),
    ("decisions: []", "non-empty"),
    ("bogus: 1\ndecisions: []", "unknown key 'bogus'"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {int: [8, 2]}}}}", "inverted range"),
    ("decisions:\n  - {sites: [q], methods: {lora: {rank: 4}}}", "unknown key 'rank'"),
    ("decisions:\n  - {sites: [q], methods: {loraa: {}}}", "unknown method 'loraa'"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {choice: []}}}}", "non-empty list"),
    ("decisions:\n  - {sites: [q], per: row, methods: {none: {}}}", "per='row'"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: [2, 4]}}}", "ambiguous"),
    ("decisions:\n  - {sites: [q], methods: {lora: {alpha: {float: [0, 1], log: true}}}}", "log range"),
])
def test_bad_space_files_give_clear_errors(doc, message):
    with pytest.raises(UserError, match=message):
        parse_space(doc, "space.yaml", "space")


def test_unknown_preset_lists_presets(tmp_path):
    with pytest.raises(UserError, match="presets: .*hybrid"):
        load_space("nope")
    with pytest.raises(UserError, match="not found"):
        load_space(str(tmp_path / "missing.yaml"))


def test_repair_fits_budget_and_enqueued_params_reproduce_the_repaired_plan():
    import random

    space = load_space("hybrid")
    arch = arch_from_config(tiny_config("llama"))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    budget = 1_500
    repaired_count = 0
    for n in range(30):
        sample = space.sample_choices(study.ask(), arch)
        repaired = space.repair(sample, arch, budget, random.Random(n))
        assert repaired is not None and repaired.plan().num_params(arch) <= budget
        if sample.plan().num_params(arch) > budget:
            repaired_count += 1
            study.enqueue_trial(repaired.trial_params())
            again = space.sample_choices(study.ask(), arch)
            assert again.plan() == repaired.plan() and again.training == repaired.training
    assert repaired_count > 5  # the budget is tight enough that repair is exercised


def test_space_that_cannot_fit_names_the_smallest_feasible_budget():
    space = parse_space("""
decisions:
  - {name: d, layers: all, sites: [q], methods: {lora: {r: {choice: [4, 8]}}}}
""", "inline", "inline")
    arch = arch_from_config(tiny_config("bert"))
    assert space.min_params(arch) == 3 * 4 * (40 + 40)
