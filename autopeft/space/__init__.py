"""Search spaces: a YAML description of hybrid PEFT configurations, parsed into typed nodes.

A space is a list of *decisions*. Each decision picks, for some layers and sites, one method among
several (``none`` = nothing) and that method's hyperparameters::

    budget: 0.5%                     # optional default budget (the command line overrides it)
    training:
      lr: {float: [1.0e-3, 5.0e-3], log: true}
    decisions:
      - name: lora
        layers: all                  # all | 3 | -1 | "0-5" | "top 4" | "bottom 2" | "every 2" | [ ... ]
        sites: [q, v]
        per: layer-site              # layer-site | layer | site | group | group-site | global
        methods:
          none: {}
          lora: {r: {choice: [2, 4, 8]}, alpha: 16}
    forbid:
      - {together: [lora, prefix], in: layer}

A hyperparameter is a fixed value (``alpha: 16``) or a typed range with inclusive bounds:
``{int: [lo, hi], log?, step?}``, ``{float: [lo, hi], log?, step?}``, ``{choice: [a, b, ...]}``, or a
multiple of another option of the same method (``alpha: 2r``: tied, not searched; ``nodes.Tie``).
The full reference is README.md's "Search spaces" section.

Modules: :mod:`.nodes` (typed nodes), :mod:`.layers` (layer selections, groups, sites), :mod:`.source`
(safe YAML with line/column marks), :mod:`.parse` (the grammar), :mod:`.model` (decisions, units,
samples, forbid rules), :mod:`.search_space` (sampling, extremes, feasibility), :mod:`.repair` (budget
repair), :mod:`.stats` (size, fraction that fits), :mod:`.to_optuna` and :mod:`.to_ray` (converters),
:mod:`.presets` (shipped presets), :mod:`.shapes` (a model's shapes and base count from its config.json, for
``autopeft space check`` without torch).
"""

from .layers import Groups, LayerSelection, parse_selection
from .model import NONE, Decision, Forbid, Mask, Sample, Unit, UnitChoice, Violation
from .nodes import Choice, Conditional, Fixed, Float, Int, Node, Tie
from .parse import parse_space
from .presets import PRESETS_PACKAGE, list_presets, load_space, preset_path
from .search_space import SearchSpace

__all__ = [
    "NONE", "PRESETS_PACKAGE", "Choice", "Conditional", "Decision", "Fixed", "Float", "Forbid", "Groups", "Int",
    "LayerSelection", "Mask", "Node", "Sample", "SearchSpace", "Tie", "Unit", "UnitChoice", "Violation", "list_presets",
    "load_space", "parse_selection", "parse_space", "preset_path",
]
