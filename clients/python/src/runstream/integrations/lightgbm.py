"""LightGBM: ``lgb.train(..., callbacks=[runstream_callback(run)])``.

Logs each evaluation result as ``{prefix}{data}/{metric}`` at the iteration's step (mean and
std for ``lgb.cv``), and the training parameters under ``params/`` at the first iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..run import Run
from ._common import loggable_params


def runstream_callback(run: Run, *, prefix: str = "", log_params: bool = True) -> Callable[[Any], None]:
    """A LightGBM callback (a function of ``CallbackEnv``) that logs to a runstream run."""
    if not isinstance(run, Run):
        raise TypeError(f"run must be a runstream Run, not {type(run).__name__}")

    def _callback(env: Any) -> None:
        if log_params and env.iteration == env.begin_iteration and env.params:
            params = loggable_params(env.params)
            if params:
                run.update(params, prefix="params")
        metrics: dict[str, float] = {}
        for item in env.evaluation_result_list or ():
            data, metric, value = item[0], item[1], item[2]
            name = f"{prefix}{data}/{metric}"
            if len(item) == 5:  # lgb.cv: (data, metric, mean, higher_better, std)
                metrics[f"{name}-mean"], metrics[f"{name}-std"] = float(value), float(item[4])
            else:
                metrics[name] = float(value)
        if metrics:
            run.log(metrics, step=env.iteration)

    _callback.order = 30  # type: ignore[attr-defined]  # after LightGBM's own recorders
    return _callback
