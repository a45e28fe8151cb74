"""How the search asks Optuna for candidates: a sampler that does not repeat itself, and the space's corners.

Two things a small categorical space needs beyond Optuna's TPE (measured on the digits enumeration
in ``benchmarks/nas.py``, docs/nas.md):

* **No repeated configurations.** With a few hundred configurations and a trial budget of ~10% of
  them, TPE's joint (multivariate) proposal often lands on a configuration the study has already
  trained, which spends a trial and teaches nothing. :class:`DistinctSampler` wraps any sampler:
  when its joint proposal equals a completed, running or queued trial's parameters it draws again
  (up to ``tries`` times from the inner sampler, then uniformly among the same choices), so every
  trial it proposes is new when a new one exists. Trials the inner sampler draws at random (TPE's
  start-up trials, random search) get a uniform draw that repeats no trial. Knobs outside the joint
  search space (a define-by-run knob that not every trial asks) are drawn one at a time, unchecked.
* **The corners first.** A fresh study is seeded with the space's cheapest and largest
  configurations (:func:`edgeopt.nas.space.corner_params`): they anchor both ends of the
  accuracy/cost front, which random start-up trials reach only by luck. Under a budget the largest
  corner is usually infeasible and costs one pricing (it is not trained).

``search_sampler(name, seed)`` is the sampler ``edgeopt search`` uses; ``make_sampler`` in
:mod:`edgeopt.nas.search` stays the plain Optuna sampler (the recipe search uses it).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

_ASKED = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _covers(proposal: dict[str, Any], seen: dict[str, Any]) -> bool:
    """``proposal`` gives every parameter of the earlier trial ``seen`` the same value. With a
    define-by-run space the parameters a walk asks for follow from the values drawn before them, so
    equal values for all of ``seen``'s parameters mean the same configuration."""
    return bool(seen) and all(k in proposal and proposal[k] == v for k, v in seen.items())


class DistinctSampler(optuna.samplers.BaseSampler):
    """``inner``'s proposals, redrawn when a joint proposal repeats a trial the study already has.

    Cost: up to ``tries`` extra ``sample_relative`` calls of the inner sampler per trial (TPE: a few
    milliseconds each at these study sizes) plus a scan of the study's trials.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, seed: int | None = None, tries: int = 16) -> None:
        self.inner = inner
        self.tries = tries
        self._rng = np.random.default_rng(seed)
        self.redraws = 0  # proposals redrawn because they repeated a trial (for reports and tests)
        self._intersection = optuna.search_space.IntersectionSearchSpace()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # the inner sampler's joint space, else the knobs every trial so far asked (random search, or
        # a sampler that draws each knob alone): those get a distinct uniform draw here
        return self.inner.infer_relative_search_space(study, trial) or self._intersection.calculate(study)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        seen = [t.params for t in study.get_trials(deepcopy=False, states=_ASKED) if t.number != trial.number]
        proposal = self._complete(self.inner.sample_relative(study, trial, search_space), search_space)
        if not proposal:  # the inner sampler draws this trial at random (start-up trials, random search)
            return self._uniform(search_space, seen) if seen else {}
        for _ in range(self.tries):
            if not any(_covers(proposal, s) for s in seen):
                return proposal
            self.redraws += 1
            proposal = self._complete(self.inner.sample_relative(study, trial, search_space), search_space)
        # the inner sampler keeps proposing what the study has: a uniform draw among the same choices
        return self._uniform(search_space, seen) or proposal

    def _complete(self, proposal: dict[str, Any], search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """A partial joint proposal (NSGA-II leaves the knobs it mutates to be drawn at random one by one)
        completed here with the same uniform draws, so that the whole configuration can be checked."""
        if not proposal:
            return proposal
        for k, d in search_space.items():
            if k not in proposal and isinstance(d, CategoricalDistribution):
                proposal[k] = d.choices[int(self._rng.integers(len(d.choices)))]
        return proposal

    def _uniform(self, search_space: dict[str, BaseDistribution], seen: list[dict[str, Any]]) -> dict[str, Any]:
        """A uniform draw over ``search_space`` (categorical knobs only) that repeats none of ``seen``;
        {} when the space has other kinds of knobs or every draw repeated."""
        if not search_space or not all(isinstance(d, CategoricalDistribution) for d in search_space.values()):
            return {}
        for _ in range(64):
            draw = {k: d.choices[int(self._rng.integers(len(d.choices)))] for k, d in search_space.items()}  # type: ignore[attr-defined]
            if not any(_covers(draw, s) for s in seen):
                return draw
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: list[float] | None
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng = np.random.default_rng()


def search_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler of ``edgeopt search``: Optuna's (``make_sampler``) wrapped in :class:`DistinctSampler`
    (random search then draws distinct configurations too)."""
    from edgeopt.nas.search import make_sampler

    return DistinctSampler(make_sampler(name, seed), seed)


def seed_corners(study: optuna.Study, params: list[dict[str, Any]]) -> int:
    """Queue ``params`` (the space's corners) on a study that has no trials yet; returns how many were queued.

    ``skip_if_exists`` keeps a second worker joining at the same moment from queueing them twice.
    """
    if study.get_trials(deepcopy=False):
        return 0
    queued = 0
    for p in {_key(p): p for p in params if p}.values():
        study.enqueue_trial(p, skip_if_exists=True)
        queued += 1
    return queued
