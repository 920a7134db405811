"""Property-based tests of the space parser and sampler (hypothesis, bounded to a few seconds each).

- random and mutated documents never raise anything but ``UserError`` (no traceback for the user);
- generated valid documents parse, and every plan sampled from them (repaired to a random budget)
  respects the budget, matches its counted parameters, and injects into a tiny model and back out.
"""

import copy
import os
import random
from functools import cache
from pathlib import Path

import optuna
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autopeft
from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.space import SearchSpace, parse_space
from autopeft.testing import TINY_FAMILIES, tiny_config, tiny_model

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "search_spaces").glob("*.yaml"))
# AUTOPEFT_FUZZ_EXAMPLES=5000 runs a longer fuzzing session; no example database is written into the tree
SCALE = int(os.environ.get("AUTOPEFT_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=SCALE, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["description", "budget", "training", "masks", "decisions", "forbid", "name", "layers", "sites", "per",
         "groups", "mask", "methods", "none", "lora", "dora", "adapter", "prefix", "prompt", "bitfit", "ln_tuning",
         "parallel_adapter", "r", "alpha", "size", "length", "gated", "activation", "int", "float", "choice",
         "log", "step", "together", "in", "lr", "batch_size", "all", "q", "v", "o", "down", "attn", "input",
         "after_mlp", "layer", "layer-site", "global", "group", "spindle", "top 2", "every 2", "0-1", "-1",
         "relu", "0.5%", "120k", "true"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(WORDS), st.text(max_size=6))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=4)), inner, max_size=5)),
    max_leaves=30,
)


def accepts_or_explains(text: str) -> SearchSpace | None:
    try:
        space = parse_space(text, "fuzz.yaml", "fuzz")
    except UserError as exc:
        assert str(exc).startswith("fuzz.yaml") and "\n" not in str(exc)
        return None
    arch = ARCHS["bert"]
    try:
        sample = space.sample_choices(optuna.create_study().ask(), arch)
    except UserError:  # the space does not fit this model (a layer out of range, overlapping decisions)
        return space
    if space.infeasible_reason(sample, arch, None):  # breaks a forbid rule: recorded infeasible, never built
        return space
    sample.plan().placements(arch)
    return space


@FAST
@given(documents)
def test_random_documents_give_a_space_or_a_user_error(doc):
    accepts_or_explains(yaml.safe_dump({"decisions": doc} if not isinstance(doc, dict) else doc))


@FAST
@given(st.sampled_from(PRESETS), st.data())
def test_mutated_presets_give_a_space_or_a_user_error(path, data):
    lines = path.read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "insert", "replace", "truncate", "indent"]))
        line = lines[i]
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "insert":
            at = data.draw(st.integers(0, len(line)))
            token = data.draw(st.sampled_from(WORDS + [":", "{", "]", ",", "- ", "&a ", "*a", "!!str ", "#", "'"]))
            lines[i] = line[:at] + token + line[at:]
        elif kind == "replace":
            word = data.draw(st.sampled_from(WORDS))
            for old in ("4", "lora", "all", "per", "none", "layer-site", "[", "true", "q"):
                if old in line:
                    lines[i] = line.replace(old, word, 1)
                    break
        elif kind == "truncate":
            lines[i] = line[: data.draw(st.integers(0, len(line)))]
        else:
            lines[i] = " " * data.draw(st.integers(1, 3)) + line
        if not lines:
            break
    accepts_or_explains("\n".join(lines))


# --- valid documents ---------------------------------------------------------------------------------

ARCHS = {family: arch_from_config(tiny_config(family)) for family in TINY_FAMILIES}
LINEAR = ["q", "k", "v", "o", "up", "down"]


@cache
def model(family: str):
    return tiny_model(family)


def int_range(lo: int, hi: int):
    return st.one_of(
        st.integers(lo, hi),
        st.lists(st.integers(lo, hi), min_size=1, max_size=4, unique=True).map(lambda v: {"choice": v}),
        st.tuples(st.integers(lo, hi), st.integers(lo, hi), st.booleans()).map(
            lambda t: {"int": sorted(t[:2]), "log": t[2]}),
    )


METHODS = {  # method -> (sites it takes, option strategies)
    "lora": (LINEAR, {"r": int_range(1, 8), "alpha": st.sampled_from([8, 16, {"float": [4, 32], "log": True}]),
                      "gated": st.booleans()}),
    "dora": (LINEAR, {"r": int_range(1, 4)}),
    "bitfit": (LINEAR, {}),
    "ia3": (["k", "v", "down"], {}),
    "adapter": (["o", "down"], {"size": int_range(1, 8), "activation": st.sampled_from(["relu", {"choice": ["gelu", "tanh"]}])}),
    "parallel_adapter": (["o", "down"], {"size": int_range(1, 8), "scaling": st.sampled_from([1.0, 4.0])}),
    "prefix": (["attn"], {"length": int_range(1, 6)}),
    "ptuning_v2": (["attn"], {"length": int_range(1, 4)}),
    "ln_tuning": (["ln_attn", "ln_mlp"], {}),
}
SELECTIONS = st.sampled_from(["all", 0, -1, "0-1", "top 2", "bottom 1", "every 2", "top 50%", [0, "top 1"]])


@st.composite
def valid_documents(draw):
    decisions, used = [], set()
    for d in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from(sorted(set(METHODS) - used)))
        used.add(method)
        sites_allowed, options = METHODS[method]
        others = [m for m in METHODS if m not in used and set(METHODS[m][0]) >= set(sites_allowed)]
        extra = draw(st.lists(st.sampled_from(others), max_size=2, unique=True)) if others else []
        used.update(extra)
        sites = draw(st.lists(st.sampled_from(sites_allowed), min_size=1, max_size=3, unique=True))
        per = draw(st.sampled_from(["layer-site", "layer", "site", "global", "group", "group-site"]))
        methods = {"none": {}} if draw(st.booleans()) else {}
        for m in [method, *extra]:
            methods[m] = {k: draw(v) for k, v in METHODS[m][1].items() if draw(st.booleans())}
        decision = {"name": f"d{d}", "layers": draw(SELECTIONS), "sites": sites, "per": per, "methods": methods}
        if per.startswith("group"):
            decision["groups"] = draw(st.sampled_from([1, 2, 4, {"spindle": 3}]))
        decisions.append(decision)
    doc = {"decisions": decisions}
    if draw(st.booleans()):
        doc["training"] = {"lr": {"float": [1e-4, 1e-2], "log": True}}
    return doc


@settings(max_examples=max(1, SCALE * 2 // 5), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_documents(), st.sampled_from(TINY_FAMILIES), st.integers(0, 2**16), st.floats(0, 1))
def test_sampled_plans_respect_the_budget_and_inject(doc, family, seed, position):
    space = parse_space(yaml.safe_dump(doc), "valid.yaml", "valid")  # must not raise
    arch = ARCHS[family]
    try:
        low, high = space.min_params(arch), space.max_params(arch)
    except UserError as exc:  # e.g. prefix and ptuning_v2 both forced on a layer: one attention method each
        assert "the forbid rules exclude every plan" in str(exc)
        return
    budget = int(low + position * (high - low))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    net = model(family)
    for n in range(3):
        sample = space.sample_choices(study.ask(), arch)
        if space.infeasible_reason(sample, arch, budget):
            sample = space.repair(sample, arch, budget, random.Random(n))
            assert sample is not None  # low <= budget, so a feasible point exists
        plan = sample.plan()
        assert plan.num_params(arch) == sample.num_params(arch) <= budget
        assert space.contains(sample, arch)
        handle = autopeft.apply(net, plan)
        try:
            assert handle.num_adapter_params() == plan.num_params(arch)
        finally:
            handle.remove()


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


@FAST
@given(valid_documents(), st.data())
def test_perturbed_valid_documents_give_a_space_or_a_user_error(doc, data):
    """One value of a valid document replaced by a random one (or its key dropped)."""
    doc = copy.deepcopy(doc)  # the strategies share constant dicts: never mutate what they drew
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(documents)
    accepts_or_explains(yaml.safe_dump(doc))
