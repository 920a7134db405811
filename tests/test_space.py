"""The search-space DSL: layer selections, granularity, typed nodes, converters, masks, forbid rules, repair."""

import random
import re
from pathlib import Path

import optuna
import pytest
from transformers import BertConfig

from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.space import Groups, list_presets, load_space, parse_selection, parse_space, stats
from autopeft.space.layers import SelectionError
from autopeft.space.to_optuna import branch_distributions
from autopeft.testing import tiny_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
BERT = arch_from_config(tiny_config("bert"))  # 3 layers, hidden 40, intermediate 56
LLAMA = arch_from_config(tiny_config("llama"))
# all-MiniLM-L6-v2's shapes (its config, without needing the asset): 6 layers, hidden 384, 22,713,216 params
MINILM = arch_from_config(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536, vocab_size=30522))
MINILM_PARAMS = 22_713_216


def space(text: str):
    return parse_space(text, "space.yaml", "space")


def random_trials(seed: int = 0):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        yield study.ask()


def trials(n: int, seed: int = 0):
    generator = random_trials(seed)
    return [next(generator) for _ in range(n)]


# --- layers and groups --------------------------------------------------------------------------

@pytest.mark.parametrize(("selection", "depth", "expected"), [
    ("all", 3, (0, 1, 2)), (1, 3, (1,)), (-1, 6, (5,)), ("-2", 6, (4,)), ("0-2", 6, (0, 1, 2)),
    ("-3..-1", 6, (3, 4, 5)), ("top 2", 6, (4, 5)), ("top 10", 3, (0, 1, 2)), ("top 50%", 6, (3, 4, 5)),
    ("top 10%", 6, (5,)), ("bottom 2", 6, (0, 1)), ("bottom 34%", 6, (0, 1)), ("every 2", 6, (0, 2, 4)),
    ("every 2 from 1", 6, (1, 3, 5)), ("Every 3 from -3", 6, (3,)), ([0, "top 1"], 6, (0, 5)),
    (["0-1", "1-2", -1], 30, (0, 1, 2, 29)),
])
def test_layer_selections_resolve_for_any_depth(selection, depth, expected):
    assert parse_selection(selection).resolve(depth) == expected


@pytest.mark.parametrize(("selection", "depth", "message"), [
    ("0-5", 3, "out of range"), (7, 6, "out of range"), ("-7", 6, "out of range"), ("2..1", 6, "empty"),
    ("every 2 from 5", 3, "out of range"),
])
def test_layer_selections_that_do_not_fit_the_model(selection, depth, message):
    with pytest.raises(SelectionError, match=message):
        parse_selection(selection).resolve(depth)


@pytest.mark.parametrize("selection", ["first 2", "top 0", "top 101%", "every 0", "1-", [], [[1]], 1.5, True, "a-b"])
def test_malformed_layer_selections(selection):
    with pytest.raises(SelectionError):
        parse_selection(selection)


@pytest.mark.parametrize(("groups", "layers", "sizes"), [
    (Groups(3), 6, [2, 2, 2]), (Groups(4), 6, [2, 2, 1, 1]), (Groups(4, "spindle"), 12, [2, 4, 4, 2]),
    (Groups(3, "spindle"), 12, [3, 6, 3]), (Groups(4, "spindle"), 30, [5, 10, 10, 5]),
    (Groups(4, "spindle"), 3, [1, 1, 1]), (Groups(1), 5, [5]),
])
def test_groups_are_contiguous_and_cover_every_layer(groups, layers, sizes):
    split = groups.split(tuple(range(layers)))
    assert [len(g) for g in split] == sizes
    assert [i for g in split for i in g] == list(range(layers))


def test_granularities_and_unit_names():
    base = "decisions:\n  - {{name: d, layers: all, sites: [q, v], {extra}methods: {{lora: {{r: 2}}}}}}"
    cases = {
        "per: global, ": [("all", (0, 1, 2), ("q", "v"))],
        "per: layer, ": [(f"L{i}", (i,), ("q", "v")) for i in range(3)],
        "per: site, ": [("q", (0, 1, 2), ("q",)), ("v", (0, 1, 2), ("v",))],
        "": [(f"L{i}.{s}", (i,), (s,)) for i in range(3) for s in "qv"],
        "groups: 2, ": [("G0", (0, 1), ("q", "v")), ("G1", (2,), ("q", "v"))],
        "groups: {spindle: 3}, per: group-site, ": [(f"G{i}.{s}", (i,), (s,)) for i in range(3) for s in "qv"],
    }
    for extra, expected in cases.items():
        units = space(base.format(extra=extra)).units(BERT)
        assert [(u.name, u.layers, u.sites) for _, u in units] == expected, extra


def test_block_aliases_and_model_level_sites():
    s = space("""
decisions:
  - {name: a, sites: [after_attn, after_mlp], per: layer, methods: {adapter: {size: 2}}}
  - {name: p, sites: prefix, per: global, layers: "top 1", methods: {prefix: {length: 2}}}
  - {name: prompt, sites: prompt, methods: {prompt: {length: 3}}}
  - {name: gate, sites: [gate, in], methods: {none: {}, lora: {r: 1}}}
""")
    assert s.decisions[0].sites == ("o", "down") and s.decisions[1].sites == ("attn",)
    assert [u.name for _, u in s.units(BERT) if _.name == "prompt"] == ["model"]
    assert [u.sites for d, u in s.units(BERT) if d.name == "gate"] == [("up",)] * 3  # no gate in BERT
    assert any("gate skipped" in note for note in s.resolve(BERT).notes)
    assert {u.sites for d, u in s.units(LLAMA) if d.name == "gate"} == {("gate",), ("up",)}
    trial = optuna.create_study().ask()
    plan = s.sample_choices(trial, BERT).plan()
    entries = {e.method: e for e in plan.entries}
    assert entries["prefix"].layers == (2,)
    assert plan.num_params(BERT) == s.sample_choices(trial, BERT).num_params(BERT)


# --- sampling and the Optuna converter ----------------------------------------------------------

def test_a_known_method_is_a_single_point():
    s = space("decisions:\n  - {name: lora, sites: [q, v], per: global, methods: {lora: {r: 8, alpha: 16}}}")
    trial = optuna.create_study().ask()
    plan, training = s.sample(trial, MINILM)
    assert trial.params == {} and training == {}
    assert plan == Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),))
    assert stats.size(s, MINILM).points == 1
    assert s.min_params(MINILM) == s.max_params(MINILM) == 6 * 2 * 8 * (384 + 384)


def test_sampling_is_conditional_and_uses_optunas_distributions():
    s = space("""
training: {lr: {float: [1.0e-4, 1.0e-2], log: true}, batch_size: {int: [8, 32], step: 8}, warmup_ratio: 0.1}
decisions:
  - name: d
    sites: [q]
    per: global
    methods:
      none: {}
      lora: {r: {int: [1, 64], log: true}, alpha: {float: [1, 32], step: 0.5}, dropout: 0.1}
      adapter: {size: {choice: [2, 4]}, activation: {choice: [relu, gelu]}}
""")
    seen = set()
    for trial in trials(40):
        sample = s.sample_choices(trial, BERT)
        method = sample.choices[0].method
        seen.add(method)
        expected = branch_distributions("d.all", s.decisions[0].choice, method)
        assert {k: v for k, v in trial.distributions.items() if not k.startswith("training.")} == expected
        assert sample.trial_params() == trial.params  # fixed values (warmup_ratio, dropout) are not parameters
        assert sample.training["warmup_ratio"] == 0.1 and s.contains(sample, BERT)
    assert seen == {"none", "lora", "adapter"}


def test_enqueued_trial_params_reproduce_a_sample_with_masks():
    s = load_space("sappa")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        sample = s.sample_choices(study.ask(), BERT)
        study.enqueue_trial(sample.trial_params())
        again = s.sample_choices(study.ask(), BERT)
        assert again == sample and again.plan() == sample.plan()


@pytest.mark.parametrize("name", ["compact", "hybrid", "sappa"])
def test_the_smallest_plan_can_be_enqueued_as_a_warm_start(name):
    s = load_space(name)
    smallest = s.smallest(MINILM)
    assert smallest.num_params(MINILM) == s.min_params(MINILM) == 0  # head only
    study = optuna.create_study()
    study.enqueue_trial(smallest.trial_params())
    again = s.sample_choices(study.ask(), MINILM)
    assert again.plan() == smallest.plan() and again.masks == smallest.masks


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_compact_ties_every_layer_and_holds_the_standard_recipes(family):
    arch = arch_from_config(tiny_config(family))
    s = load_space("compact")
    layers = tuple(range(arch.num_layers))
    for trial in trials(20, 3):
        for entry in s.sample_choices(trial, arch).plan().entries:
            assert entry.layers == layers and len(entry.sites) == 1  # one unit per site, all layers
    assert stats.size(s, arch).points == 4 ** 6 * 7 ** 2
    # LoRA r8 q,v (the in-search baseline) and LoRA r4 q,k,v,o (the ceiling study's best) are points of it
    study = optuna.create_study()
    study.enqueue_trial({"lora.q.method": "lora", "lora.q.lora.r": 8, "lora.v.method": "lora", "lora.v.lora.r": 8,
                         **{f"lora.{site}.method": "none" for site in ("k", "o", "up", "down")},
                         "adapter.o.method": "none", "adapter.down.method": "none", "training.lr": 1e-3})
    plan = s.sample_choices(study.ask(), arch).plan()
    assert [(e.method, e.sites, e.options["r"]) for e in plan.entries] == [("lora", ("q",), 8), ("lora", ("v",), 8)]


def test_a_tied_option_follows_its_source_in_every_plan_and_is_no_parameter():
    s = space("""
decisions:
  - name: d
    sites: [q, v]
    per: layer-site
    methods:
      none: {}
      lora: {r: {choice: [2, 4, 8]}, alpha: 2r}
      adapter: {size: {choice: [4, 8]}, scaling: 0.5 * size}
""")
    budget = 2_000
    for n, trial in enumerate(trials(30)):
        sample = s.sample_choices(trial, BERT)
        assert not any(k.endswith((".alpha", ".scaling")) for k in trial.params)  # not Optuna parameters
        for entry in sample.plan().entries:
            tied, source = ("alpha", "r") if entry.method == "lora" else ("scaling", "size")
            assert entry.options[tied] == (2 if tied == "alpha" else 0.5) * entry.options[source]
        assert sample.plan().num_params(BERT) == sample.num_params(BERT) and s.contains(sample, BERT)
        repaired = s.repair(sample, BERT, budget, random.Random(n))  # a shrunk rank takes its alpha along
        assert repaired is not None and all(e.options["alpha"] == 2 * e.options["r"]
                                            for e in repaired.plan().entries if e.method == "lora")
    plan = s.sample_choices(optuna.trial.FixedTrial({**{f"d.L{i}.{site}.method": "lora" for i in range(3)
                                                       for site in ("q", "v")},
                                                    **{f"d.L{i}.{site}.lora.r": 2 for i in range(3)
                                                       for site in ("q", "v")}}), BERT).plan()
    assert plan.entries == tuple(PlanEntry("lora", (0, 1, 2), (site,), {"r": 2, "alpha": 4}) for site in ("q", "v"))


def test_sappa_mask_is_shared_by_the_three_modules():
    s = load_space("sappa")
    for trial in trials(20, 1):
        sample = s.sample_choices(trial, MINILM)
        on = sample.masks["active"]
        assert set(on) == {i for i in range(6) if trial.params[f"mask.active.L{i}"]}
        for entry in sample.plan().entries:
            assert entry.layers == on
    assert stats.size(s, MINILM).points == 11 ** 3 * 2 ** 6


# --- the Ray Tune converter -----------------------------------------------------------------------

def test_ray_space_samples_map_to_valid_plans():
    pytest.importorskip("ray")
    from ray.tune.search.variant_generator import generate_variants

    from autopeft.space.to_ray import from_ray, to_ray

    s = space("""
masks: {m: all}
training: {lr: {float: [1.0e-4, 1.0e-2], log: true}, weight_decay: {float: [0, 0.1], step: 0.05}}
decisions:
  - name: lora
    sites: [q, v]
    mask: m
    methods:
      none: {}
      lora: {r: {int: [2, 16], log: true}, alpha: {int: [4, 16], step: 4}}
      dora: {r: {choice: [2, 4]}, alpha: 2r}
  - {name: pre, sites: [attn], per: layer, methods: {none: {}, prefix: {length: {int: [1, 5]}}}}
""")
    ray_space = to_ray(s, BERT)
    random.seed(0)  # Ray's variant generator draws from numpy/random global state
    import numpy as np
    np.random.seed(0)
    methods, ranks = set(), set()
    for _ in range(60):
        _, config = next(iter(generate_variants(ray_space)))
        sample = from_ray(s, BERT, config)  # raises if any value is outside the space
        plan = sample.plan()
        assert plan.num_params(BERT) == sample.num_params(BERT)
        plan.placements(BERT)
        methods |= {c.method for c in sample.choices}
        ranks |= {c.values["r"] for c in sample.choices if c.method == "lora"}
        assert all(e.options["alpha"] == 2 * e.options["r"] for e in plan.entries if e.method == "dora")  # tied
    assert methods == {"none", "lora", "dora", "prefix"}
    assert ranks <= set(range(2, 17)) and len(ranks) > 4
    with pytest.raises(UserError, match="not a point"):
        from_ray(s, BERT, {**config, "pre.L0": {"method": "prefix", "length": 9}})


# --- errors -----------------------------------------------------------------------------------------

ERRORS = [
    ("decisions: [", ":1:13: invalid YAML"),
    ("- 1", "a search space is a mapping"),
    ("", "empty"),
    ("decisions: []", "decisions: 'decisions' must be a non-empty list"),
    ("bogus: 1\ndecisions: []", ":1:1: bogus: unknown key 'bogus'; allowed: description, budget"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {int: [8, 2]}}}}", ":2:39: decisions[0].methods.lora.r.int: inverted"),
    ("decisions:\n  - {sites: [q], methods: {lora: {rank: 4}}}", "lora.rank: unknown key 'rank'; allowed: r, alpha"),
    ("decisions:\n  - {sites: [q], methods: {loraa: {}}}", "unknown method 'loraa'; available: adalora"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {choice: []}}}}", "non-empty list"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {choice: [2, 2]}}}}", "listed twice"),
    ("decisions:\n  - {sites: [q], per: row, methods: {none: {}}}", "per='row'; allowed: layer-site, layer"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: [2, 4]}}}", "ambiguous"),
    ("decisions:\n  - {sites: [q], methods: {lora: {alpha: {float: [0, 1], log: true}}}}", "log range needs low > 0"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {int: [1, 8], step: 2}}}}", "multiple of step"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {int: [1, 8], log: true, step: 1}, alpha: {float: [1, 2], "
     "log: true, step: 0.5}}}}", "log and step cannot be combined"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: {float: [1, 8]}}}}", "integer"),
    ("decisions:\n  - {sites: [q], methods: {lora: {gated: {int: [0, 1]}}}}", "true/false"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: 0}}}", "r must be > 0"),
    ("decisions:\n  - {sites: [q], methods: {adapter: {activation: swish}}}", "activation='swish' is not allowed"),
    ("decisions:\n  - {sites: [qq], methods: {none: {}}}", "unknown site 'qq'; sites: q, k, v, o"),
    ("decisions:\n  - {sites: [q, query], methods: {none: {}}}", "listed twice"),
    ("decisions:\n  - {sites: [q], methods: {prefix: {}}}", "method 'prefix' does not go on site 'q'; it goes on: attn"),
    ("decisions:\n  - {sites: [q], layers: 'top x', methods: {none: {}}}", "'top x' is not a layer selection"),
    ("decisions:\n  - {sites: [q], per: group, methods: {none: {}}}", "needs 'groups: N'"),
    ("decisions:\n  - {sites: [q], groups: 2, per: layer, methods: {none: {}}}", "groups only apply"),
    ("decisions:\n  - {sites: [q], groups: {pyramid: 2}, methods: {none: {}}}", "{spindle: N}"),
    ("decisions:\n  - {sites: [q], mask: m, methods: {none: {}}}", "unknown mask 'm'"),
    ("masks: {m: all}\ndecisions:\n  - {sites: [q], methods: {none: {}}}", ":1:9: masks.m: mask 'm' is not used"),
    ("decisions:\n  - {sites: [input], per: layer, methods: {prompt: {}}}", "site of the whole model"),
    ("decisions:\n  - {name: a.b, sites: [q], methods: {none: {}}}", "decision name 'a.b'"),
    ("decisions:\n  - {name: a, sites: [q], methods: {none: {}}}\n  - {name: a, sites: [v], methods: {none: {}}}",
     ":3:6: decisions[1].name: decision name 'a' is used twice"),
    ("decisions:\n  - {sites: [q], methods: {none: {lora: 1}}}", "none takes no options"),
    ("decisions:\n  - {methods: {none: {}}}", "needs 'sites'"),
    ("decisions:\n  - {sites: [q]}", "needs 'methods'"),
    ("decisions:\n  - {sites: [q], methods: {lora: {}}}\nforbid:\n  - {together: [lora, prefix]}",
     ":4:23: forbid[0].together[1]: 'prefix' is not offered"),
    ("decisions:\n  - {sites: [q], methods: {lora: {}}}\nforbid:\n  - {together: [lora]}", "at least two"),
    ("decisions:\n  - {sites: [q], methods: {lora: {}, dora: {}}}\nforbid:\n  - {together: [lora, dora], in: row}",
     "in='row'; allowed: layer, site, model"),
    ("budget: lots\ndecisions:\n  - {sites: [q], methods: {none: {}}}", ":1:1: budget: 'lots' is not a budget"),
    ("training: {epochs: 3}\ndecisions:\n  - {sites: [q], methods: {none: {}}}", "unknown key 'epochs'; allowed: lr"),
    ("training: {lr: 0}\ndecisions:\n  - {sites: [q], methods: {none: {}}}", "lr must be a number > 0"),
    ("training: {batch_size: 2.5}\ndecisions:\n  - {sites: [q], methods: {none: {}}}", "must be an integer"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: !!python/object:os.system {}}}}", "not allowed"),
    ("base: &b {sites: [q], methods: {none: {}}}\ndecisions:\n  - {<<: *b}", "merge keys"),
    ("decisions:\n  - {sites: [q], sites: [v], methods: {none: {}}}", "duplicate key 'sites'"),
    ("a: &a [*a]\ndecisions: []", ":1:4: a[0]: an alias refers to itself"),
    ("decisions:\n  - sites: [q]\n    methods: {lora: {r: .nan}}", "plain value"),
    ("decisions:\n  - {sites: [q], methods: {lora: {alpha: 2r}}}", "lora.alpha: '2r' ties alpha to option 'r', which "
     "this method's options do not set (not given)"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: 4, alpha: 2alpha}}}", "(itself)"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: 2 alpha, alpha: 2r}}}", "tied itself"),
    ("decisions:\n  - {sites: [q], methods: {adapter: {activation: relu, size: 2activation}}}", "not a number"),
    ("decisions:\n  - {sites: [q], methods: {adapter: {scaling: 2.0, size: 1.5scaling}}}", "whole number"),
    ("decisions:\n  - {sites: [q], methods: {lora: {r: 2, alpha: 2x}}}", "'2x' ties alpha to option 'x'"),
]


@pytest.mark.parametrize(("doc", "message"), ERRORS)
def test_bad_space_files_name_the_position_the_key_and_what_is_allowed(doc, message):
    with pytest.raises(UserError) as info:
        space(doc)
    text = str(info.value)
    assert message in text, text
    assert text.startswith("space.yaml") and "\n" not in text


def test_errors_that_need_the_model_name_the_decision():
    s = space("decisions:\n  - {name: d, sites: [q], layers: [0, 5], methods: {none: {}, lora: {}}}")
    with pytest.raises(UserError, match=r"space.yaml:2:5: decisions\[0\]: layer 5 is out of range .* 3 layers"):
        s.units(BERT)
    assert len(s.units(MINILM)) == 2
    overlap = space("decisions:\n  - {name: a, sites: [q], methods: {lora: {}}}\n"
                    "  - {name: b, sites: [q, v], layers: 'top 1', methods: {none: {}, lora: {}}}")
    with pytest.raises(UserError, match="decisions 'a' and 'b' both offer 'lora' on layer 2 site q"):
        overlap.units(BERT)
    masked = space("masks: {m: 'top 1'}\ndecisions:\n  - {name: a, sites: [q], mask: m, methods: {lora: {}}}")
    with pytest.raises(UserError, match=r"space.yaml:3:5: .*uses mask 'm' on layers \[0, 1\]"):
        masked.units(BERT)


def test_unknown_preset_lists_presets(tmp_path):
    with pytest.raises(UserError, match="presets: .*hybrid"):
        load_space("nope")
    with pytest.raises(UserError, match="not found"):
        load_space(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("decisions:\n  - {sites: [q], methods: {lora: {rank: 4}}}\n")
    with pytest.raises(UserError, match=re.escape(f"{bad}:2:35: decisions[0].methods.lora.rank")):
        load_space(str(bad))


# --- budgets, forbid rules, repair --------------------------------------------------------------

def test_budget_in_the_file():
    s = space("budget: 0.5%\ndecisions:\n  - {sites: [q], methods: {none: {}, lora: {r: 2}}}")
    assert s.budget == "0.5%" and s.budget_params(1_000_000) == 5_000
    assert space("budget: 120k\ndecisions:\n  - {sites: [q], methods: {none: {}}}").budget_params(10) == 120_000
    assert space("decisions:\n  - {sites: [q], methods: {none: {}}}").budget_params(10) is None


def test_forbid_rules_are_detected_and_repaired():
    s = space("""
decisions:
  - {name: lora, sites: [q, v], methods: {none: {}, lora: {r: 2}}}
  - {name: pre, sites: [attn], per: layer, methods: {none: {}, prefix: {length: 2}}}
  - {name: ad, sites: [o], methods: {none: {}, adapter: {size: 2}}}
forbid:
  - {together: [lora, prefix], in: layer}
  - {together: [lora, adapter], in: model}
""")
    broken = 0
    rng = random.Random(0)
    for trial in trials(40, 2):
        sample = s.sample_choices(trial, BERT)
        found = s.violations(sample)
        layers_with = {m: {i for e in sample.plan().entries if e.method == m for i in e.layers}
                       for m in ("lora", "prefix", "adapter")}
        expect = bool(layers_with["lora"] & layers_with["prefix"]) or bool(layers_with["lora"] and layers_with["adapter"])
        assert bool(found) == expect
        if found:
            broken += 1
            assert s.infeasible_reason(sample, BERT, 10**9).startswith("forbidden: ")
            repaired = s.repair(sample, BERT, 10**9, rng)
            assert repaired is not None and not s.violations(repaired) and s.contains(repaired, BERT)
    assert broken > 10


def test_repair_fits_budget_and_enqueued_params_reproduce_the_repaired_plan():
    s = load_space("hybrid")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    budget = 1_500
    repaired_count = 0
    for n in range(30):
        sample = s.sample_choices(study.ask(), LLAMA)
        repaired = s.repair(sample, LLAMA, budget, random.Random(n))
        assert repaired is not None and repaired.plan().num_params(LLAMA) <= budget
        assert s.contains(repaired, LLAMA)
        if sample.plan().num_params(LLAMA) > budget:
            repaired_count += 1
            study.enqueue_trial(repaired.trial_params())
            again = s.sample_choices(study.ask(), LLAMA)
            assert again.plan() == repaired.plan() and again.training == repaired.training
    assert repaired_count > 5  # the budget is tight enough that repair is exercised


def test_repair_shrinks_sizes_before_switching_units_off():
    s = space("decisions:\n  - {name: d, sites: [q, v], per: layer-site, methods: "
              "{none: {}, lora: {r: {choice: [1, 2, 4, 8, 16]}}}}")
    study = optuna.create_study()
    params = {f"d.L{i}.{site}.method": "lora" for i in range(3) for site in "qv"}
    params.update({f"d.L{i}.{site}.lora.r": 16 for i in range(3) for site in "qv"})
    study.enqueue_trial(params)
    sample = s.sample_choices(study.ask(), BERT)
    per_rank = 2 * 40  # r * (d_in + d_out) on a 40-wide projection
    assert sample.num_params(BERT) == 6 * 16 * per_rank
    for seed in range(10):
        # room for every unit at r=4: shrinking keeps all six units on
        repaired = s.repair(sample, BERT, 6 * 4 * per_rank, random.Random(seed))
        assert [c.method for c in repaired.choices] == ["lora"] * 6
        assert repaired.num_params(BERT) <= 6 * 4 * per_rank
        # not even every unit at r=1 fits: some go, the others keep as much rank as fits
        repaired = s.repair(sample, BERT, 3 * per_rank, random.Random(seed))
        assert 0 < sum(c.method == "lora" for c in repaired.choices) <= 3
        assert repaired.num_params(BERT) <= 3 * per_rank


def test_tight_budget_still_gives_diverse_feasible_plans():
    """0.05% of MiniLM (11,356 params) in the default space: every plan fits, and they differ."""
    s = load_space("hybrid")
    budget = MINILM_PARAMS * 5 // 10_000
    plans, methods, units_on = set(), set(), []
    trials = random_trials(7)
    for n in range(40):
        sample = s.sample_choices(next(trials), MINILM)
        assert sample.num_params(MINILM) > budget  # the budget is tight: every draw needs repair
        repaired = s.repair(sample, MINILM, budget, random.Random(n))
        assert repaired.plan().num_params(MINILM) <= budget
        plans.add(repaired.plan().to_json())
        methods |= {e.method for e in repaired.plan().entries}
        units_on.append(sum(c.method != "none" for c in repaired.choices))
    assert len(plans) == 40
    assert methods == {"lora", "dora", "adapter", "parallel_adapter", "prefix"}
    assert sum(units_on) / len(units_on) >= 3  # several components kept per plan, not just one


def test_space_that_cannot_fit_names_the_smallest_feasible_budget():
    s = space("decisions:\n  - {name: d, layers: all, sites: [q], methods: {lora: {r: {choice: [8, 4]}}}}")
    assert s.min_params(BERT) == 3 * 4 * (40 + 40)
    with pytest.raises(UserError, match="smallest feasible budget is 960 params"):
        s.ensure_fits(BERT, 959)
    s.ensure_fits(BERT, 960)
    assert s.repair(s.largest(BERT), BERT, 959, random.Random(0)) is None


def test_smallest_prefers_a_cheaper_method_when_none_is_not_offered():
    s = space("decisions:\n  - {sites: [q], per: global, methods: {lora: {r: {int: [2, 8]}}, bitfit: {}}}")
    assert s.smallest(BERT).plan().entries[0].method == "bitfit"
    assert s.min_params(BERT) == 3 * 40
    assert s.largest(BERT).plan().entries[0].options == {"r": 8}


# --- size and the share that fits ---------------------------------------------------------------

def test_exact_share_that_fits_matches_brute_force():
    s = space("""
decisions:
  - {name: a, sites: [q], per: layer, methods: {none: {}, lora: {r: {choice: [1, 2, 3]}}}}
  - {name: b, sites: [down], per: global, methods: {none: {}, adapter: {size: {int: [1, 4]}}}}
""")
    assert stats.size(s, BERT).points == 4 ** 3 * 5
    budget = 500
    import itertools
    fits = total = 0
    a_costs = [0] + [r * 80 for r in (1, 2, 3)]
    b_costs = [0] + [3 * (2 * m * 40 + m + 40) for m in range(1, 5)]
    for a in itertools.product(a_costs, repeat=3):
        for b in b_costs:
            total += 1
            fits += sum(a) + b <= budget
    fit = stats.fraction_that_fits(s, BERT, budget)
    assert fit.exact and fit.fraction == pytest.approx(fits / total)
    # the uniform estimate agrees with the exact count
    rng = random.Random(0)
    draws = [stats.uniform_sample(s, BERT, rng).num_params(BERT) <= budget for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(fits / total, abs=0.03)


def test_share_that_fits_is_estimated_with_masks():
    fit = stats.fraction_that_fits(load_space("sappa"), MINILM, MINILM_PARAMS // 200, samples=500)
    assert not fit.exact and "estimate from 500" in fit.detail and 0 < fit.fraction < 1


# --- every YAML shipped, and the README's examples ----------------------------------------------

def shipped_space_files():
    skip = {".venv", "runs", "build", "dist", ".git", "node_modules"}
    return sorted(p for ext in ("*.yaml", "*.yml") for p in ROOT.rglob(ext)
                  if not skip & set(p.relative_to(ROOT).parts))


def test_every_shipped_yaml_is_a_valid_space_that_samples_on_every_tiny_family():
    from autopeft.testing import TINY_FAMILIES

    files = shipped_space_files()
    assert {p.stem for p in files if p.parent.name == "search_spaces"} == set(list_presets())
    for path in files:
        s = load_space(str(path))
        assert s.description, f"{path}: a preset needs a description"
        for family in TINY_FAMILIES:
            arch = arch_from_config(tiny_config(family))
            trials = random_trials()
            for _ in range(3):
                sample = s.sample_choices(next(trials), arch)
                assert sample.plan().num_params(arch) == sample.num_params(arch)
                assert s.contains(sample, arch)
            assert s.min_params(arch) <= s.max_params(arch)


def test_presets_document_their_source_at_the_top():
    for name in list_presets():
        head = (ROOT / "search_spaces" / f"{name}.yaml").read_text().splitlines()[0]
        assert head.startswith(f"# {name} ")


def test_readme_space_examples_parse():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Search spaces", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        if "decisions:" in block:
            s = parse_space(block, "README", "readme")
            s.sample_choices(optuna.create_study().ask(), MINILM)
