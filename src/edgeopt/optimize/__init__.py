"""Budget-driven search over recipes of passes: ``edgeopt.optimize(model, data=..., runtime=..., target=...)``.

- ``target``: the device budget (``--target latency_ms=X,...`` and ``--max-drop``) and the limits missed;
- ``space``: the recipes searched (prune, quantize; define-by-run Optuna parameters);
- ``measure``: an artifact's latency, flash, arena and energy estimate in its runtime;
- ``screen``: a candidate without training, costed in the runtime;
- ``confirm``: a finalist's full recipe run and measured;
- ``search``: baseline, screening, confirmation, choice (``optimize``);
- ``outputs`` / ``report``: best.yaml, the artifact, pareto.json, report.html, the honest failure.
"""

import sys
import types
from typing import Any

from edgeopt.optimize.search import OptimizeFailed, optimize
from edgeopt.optimize.target import Budget, parse_target

__all__ = ["Budget", "OptimizeFailed", "optimize", "parse_target"]


class _CallableModule(types.ModuleType):
    """``edgeopt.optimize`` is both this package and the entry point: ``edgeopt.optimize(model, ...)``
    calls :func:`optimize` (importing the package makes it the ``edgeopt.optimize`` attribute)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return optimize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
