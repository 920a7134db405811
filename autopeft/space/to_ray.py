"""The Ray Tune converter: a space on one model as a Ray Tune ``param_space``, and Ray configs back to samples.

Each unit becomes ``tune.choice`` over its branches, each branch a dict ``{"method": name, option: domain}``
(Ray's variant generator resolves the domains nested in the chosen branch only: conditional sampling).
Bounds stay inclusive: ``Int(lo, hi)`` is ``tune.randint(lo, hi + 1)`` (Ray's upper bound is exclusive),
a stepped range is a ``tune.choice`` of its grid (Ray's ``qrandint`` rounds to multiples of the step,
not to ``lo + k * step``). Keys mirror the Optuna parameter names: ``<decision>.<unit>``,
``mask.<mask>.L<i>``, ``training.<key>``. Searchers that need flat spaces (Ray's OptunaSearch) cannot
take nested choices; use autopeft's own Optuna search for those.
"""

from __future__ import annotations

from typing import Any

from autopeft.core.arch import ModelArch
from autopeft.core.errors import UserError

from .model import Sample, UnitChoice, training_param
from .nodes import Choice, Fixed, Float, Int, Node
from .search_space import SearchSpace


def ray_domain(node: Node) -> Any:
    from ray import tune

    if isinstance(node, Fixed):
        return node.value
    if isinstance(node, Choice):
        return tune.choice(list(node.options))
    if isinstance(node, Int):
        if node.step != 1:
            return tune.choice(list(node.values()))
        return tune.lograndint(node.low, node.high + 1) if node.log else tune.randint(node.low, node.high + 1)
    assert isinstance(node, Float)
    if node.step is not None:
        return tune.choice(list(node.values()))
    return tune.loguniform(node.low, node.high) if node.log else tune.uniform(node.low, node.high)


def to_ray(space: SearchSpace, arch: ModelArch) -> dict[str, Any]:
    """The Ray Tune search space (``Tuner(param_space=...)``) of ``space`` on ``arch``."""
    from ray import tune

    resolved = space.resolve(arch)
    config: dict[str, Any] = {}
    for name, layers in resolved.mask_layers.items():
        for i in layers:
            config[f"mask.{name}.L{i}"] = tune.choice([True, False])
    for decision, unit in resolved.units:
        branches = [{"method": m, **{k: ray_domain(n) for k, n in nodes.items()}} for m, nodes in
                    decision.methods.items()]
        config[f"{decision.name}.{unit.name}"] = branches[0] if len(branches) == 1 else tune.choice(branches)
    for key, node in space.training.items():
        config[training_param(key)] = ray_domain(node)
    return config


def from_ray(space: SearchSpace, arch: ModelArch, config: dict[str, Any]) -> Sample:
    """The sample a resolved Ray config stands for; a ``UserError`` if it is not a point of the space."""
    resolved = space.resolve(arch)
    masks = {name: tuple(i for i in layers if _get(config, f"mask.{name}.L{i}") is True)
             for name, layers in resolved.mask_layers.items()}
    choices = []
    for decision, unit in resolved.units:
        prefix = f"{decision.name}.{unit.name}"
        branch = dict(_get(config, prefix))
        method = branch.pop("method", None)
        choices.append(UnitChoice(prefix, decision, unit.layers, unit.sites, method, branch))
    training = {k: _get(config, training_param(k)) for k in space.training}
    sample = Sample(tuple(choices), training, masks, space.fixed_training)
    if not space.contains(sample, arch):
        raise UserError(f"the Ray config is not a point of space '{space.name}'")
    return sample


def _get(config: dict[str, Any], key: str) -> Any:
    if key not in config:
        raise UserError(f"the Ray config has no '{key}'")
    return config[key]
