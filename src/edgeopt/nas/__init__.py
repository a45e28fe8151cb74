"""Neural architecture search under a device budget (issue 11).

Spaces are YAML data (:mod:`edgeopt.nas.space`); a sampled architecture is a zoo record of a
searchable family (``edgeopt.models.searchable``). The multi-trial engine (:mod:`edgeopt.nas.search`)
drives Optuna's multi-objective samplers with the budget as constraints, costs priced by
:mod:`edgeopt.nas.cost`; :func:`search` runs a whole search and measures the front in the runtimes.
"""

from edgeopt.nas.cost import Budget, architecture_cost, violations
from edgeopt.nas.run import search
from edgeopt.nas.search import SearchSettings, hypervolume_2d, pareto_front
from edgeopt.nas.space import SearchSpace, enumerate_configs, load_space, parse_space, random_chooser, sample

__all__ = [
    "Budget",
    "SearchSettings",
    "SearchSpace",
    "architecture_cost",
    "enumerate_configs",
    "hypervolume_2d",
    "load_space",
    "pareto_front",
    "parse_space",
    "random_chooser",
    "sample",
    "search",
    "violations",
]
