"""Sub-network training of the one-shot supernet (#19): random hard sub-networks are valid plans within
the budget; probes and readouts of a ``subnets`` supernet are measured inside it (its training and
bitwise resume: tests/test_oneshot_supernet.py)."""

import random

import pytest
import torch
from fast_fixtures import one_thread, toy_session  # noqa: F401

from autopeft.core.arch import arch_from_config
from autopeft.oneshot.candidates import candidates, kept_units, sample_of
from autopeft.oneshot.gates import SliceSpec
from autopeft.oneshot.run import subnet_metric, train_supernet
from autopeft.oneshot.subnets import random_subnet, unit_options
from autopeft.oneshot.supernet import build_supernet
from autopeft.space import load_space
from autopeft.testing import tiny_config
from autopeft.training.config import TrainConfig
from autopeft.training.trial_run import TrialRun

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("space_name", ["compact", "s3delta"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_random_subnets_are_valid_plans_within_the_budget_at_every_size(family, space_name):
    arch = arch_from_config(tiny_config(family))
    space = load_space(space_name)
    slices = candidates(space, arch)
    specs = [SliceSpec(s.cost, s.parent, s.unit) for s in slices]
    budget = 0.4 * sum(s.cost for s in slices)
    draw = random.Random(0).random
    sizes, methods = [], set()
    for _ in range(200):
        kept = random_subnet(specs, budget, draw)
        cost = sum(slices[i].cost for i in kept)
        assert cost <= budget
        assert all(slices[i].parent is None or slices[i].parent in kept for i in kept)  # nested: parents kept
        kept_units(slices, kept)  # raises when a unit keeps two methods
        sample = sample_of(space, arch, slices, kept)
        assert sample.plan().num_params(arch) == cost
        assert space.infeasible_reason(sample, arch, int(budget)) is None
        sizes.append(cost)
        methods |= {s.method for s in (slices[i] for i in kept)}
    # the log-uniform target: tiny and near-budget sub-networks are both drawn, every method is
    assert min(sizes) < 0.1 * budget and max(sizes) > 0.6 * budget
    assert methods == {s.method for s in slices}


def test_unit_options_are_each_method_at_each_size():
    arch = arch_from_config(tiny_config("bert"))
    slices = candidates(load_space("compact"), arch)
    options = unit_options([SliceSpec(s.cost, s.parent, s.unit) for s in slices])
    q = options["lora.q"]
    assert [[slices[i].size for i in chain] for chain in q] == [[2], [2, 4], [2, 4, 8]]
    assert len(options["adapter.o"]) == 6  # serial and parallel adapter, sizes 4/8/16


def _small_run():
    session = toy_session("bert", dropout=False)
    space = load_space("compact")
    slices = candidates(space, session.arch)
    return session, space, slices, 0.3 * sum(s.cost for s in slices), TrainConfig(
        steps=4, batch_size=8, lr=1e-2, seed=0, prefix_cache="off")


def test_probes_are_evaluated_with_only_their_slices_open():
    session, space, slices, budget, config = _small_run()
    probes = [(0,), tuple(random_subnet([SliceSpec(s.cost, s.parent, s.unit) for s in slices], budget,
                                        random.Random(1).random))]
    result, _ = train_supernet(session, space, budget, config, training="subnets", probes=probes)
    assert set(result.probes) == set(probes)
    assert all(0.0 <= v <= 1.0 for v in result.probes.values())
    # the same number as evaluating the probe by hand in the same trained supernet
    torch.manual_seed(0)
    session.reset_head(0)
    supernet = build_supernet(session.model, session.arch, space, budget, training="subnets")
    with TrialRun(session, supernet, config) as run:
        run.advance(4)
        assert subnet_metric(run, supernet, probes[1]) == result.probes[probes[1]]
        assert supernet.fixed_openings is None  # restored after the evaluation


def test_a_subnets_supernet_reads_out_the_best_subnetwork_it_measured_at_each_budget():
    session, space, slices, budget, config = _small_run()
    result, plans = train_supernet(session, space, budget, config, readouts_k=4, training="subnets")
    assert 1 <= len(plans) <= 4
    assert len({r.slices for r in plans}) == len(plans)
    assert len(result.probes) > len(plans)  # the readouts were chosen among measured candidates
    for r in plans:
        assert r.params == sum(slices[i].cost for i in r.slices) <= r.budget <= budget
        assert space.infeasible_reason(r.sample, session.arch, int(budget)) is None
        assert r.supernet_metric == result.probes[r.slices]
    # each budget's pool holds the smaller budget's winner: a larger readout is at least as good inside
    metrics = [r.supernet_metric for r in plans]
    assert metrics == sorted(metrics)
    again, replans = train_supernet(session, space, budget, config, readouts_k=4, training="subnets")
    assert [r.slices for r in replans] == [r.slices for r in plans]  # deterministic
