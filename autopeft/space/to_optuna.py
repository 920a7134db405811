"""The Optuna converter: each node becomes an Optuna distribution, sampled define-by-run.

Conditional parameters are what define-by-run gives for free: a method's options are suggested only
after (and only if) the method was chosen, so a trial holds exactly the parameters of its branches.
Any Optuna sampler works; TPE with ``group=True`` models each branch's parameters jointly.

Sampling only calls the trial's ``suggest_*`` methods, so Optuna itself is imported where distributions are
built: loading and checking a space (``autopeft spaces``, ``autopeft space check``) does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .nodes import Choice, Conditional, Fixed, Float, Int, Node, is_parameter

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

NONE = "none"


def distribution(node: Node) -> BaseDistribution | None:
    """The Optuna distribution of a node (``None`` for a fixed value, which is not a parameter)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(node, Fixed):
        return None
    if isinstance(node, Int):
        return IntDistribution(node.low, node.high, log=node.log, step=node.step)
    if isinstance(node, Float):
        return FloatDistribution(node.low, node.high, log=node.log, step=node.step)
    assert isinstance(node, Choice)
    return CategoricalDistribution(list(node.options))


def suggest(trial: optuna.Trial, name: str, node: Node) -> Any:
    if isinstance(node, Fixed):
        return node.value
    if isinstance(node, Int):
        return trial.suggest_int(name, node.low, node.high, log=node.log, step=node.step)
    if isinstance(node, Float):
        return trial.suggest_float(name, node.low, node.high, log=node.log, step=node.step)
    return trial.suggest_categorical(name, list(node.options))


def suggest_branch(trial: optuna.Trial, prefix: str, node: Conditional) -> tuple[str, dict[str, Any]]:
    """Choose a branch (``<prefix>.method``), then only that branch's options (``<prefix>.<branch>.<key>``)."""
    names = list(node.names)
    branch = names[0] if len(names) == 1 else trial.suggest_categorical(f"{prefix}.method", names)
    values = {k: suggest(trial, f"{prefix}.{branch}.{k}", n) for k, n in node.branches[branch].items()}
    return branch, values


def branch_distributions(prefix: str, node: Conditional, branch: str) -> dict[str, BaseDistribution]:
    """The distributions of the parameters a trial holds when ``branch`` was chosen (for ``add_trial``)."""
    from optuna.distributions import CategoricalDistribution

    out: dict[str, BaseDistribution] = {}
    if len(node.names) > 1:
        out[f"{prefix}.method"] = CategoricalDistribution(list(node.names))
    for key, option in node.branches[branch].items():
        if is_parameter(option):
            dist = distribution(option)
            assert dist is not None
            out[f"{prefix}.{branch}.{key}"] = dist
    return out
