"""Optuna: ``study.optimize(objective, callbacks=[RunstreamCallback(run)])``.

The study is one run and each finished trial one step: the objective value(s), the trial's
duration and numeric parameters as series, categorical parameters and the trial state as
string series, and the best trial so far as attributes under ``optuna/best``.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..run import Run
from ._common import loggable_params


class RunstreamCallback:
    """An Optuna study callback that logs every finished trial to a runstream run."""

    def __init__(self, run: Run, *, prefix: str = "optuna", metric_name: str = "value") -> None:
        if not isinstance(run, Run):
            raise TypeError(f"run must be a runstream Run, not {type(run).__name__}")
        self.run = run
        self.prefix = prefix
        self.metric_name = metric_name
        self._best_number: int | None = None

    def __call__(self, study: Any, trial: Any) -> None:
        p = self.prefix
        step = trial.number
        metrics: dict[str, float] = {}
        values = trial.values
        if values is not None:
            if len(values) == 1:
                metrics[f"{p}/{self.metric_name}"] = float(values[0])
            else:
                for i, v in enumerate(values):
                    metrics[f"{p}/{self.metric_name}/{i}"] = float(v)
        if trial.duration is not None:
            metrics[f"{p}/duration_s"] = trial.duration.total_seconds()
        for name, v in trial.params.items():
            key = str(name).replace("/", "_")
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                metrics[f"{p}/params/{key}"] = float(v)
            else:
                self.run.log_text(f"{p}/params/{key}", str(v), step=step)
        self.run.log_text(f"{p}/state", trial.state.name, step=step)
        if metrics:
            self.run.log(metrics, step=step)
        self._log_best(study)

    def _log_best(self, study: Any) -> None:
        if len(study.directions) != 1:
            return
        try:
            best = study.best_trial
        except ValueError:  # no trial completed yet
            return
        if best.number == self._best_number:
            return
        self._best_number = best.number
        self.run.update(
            {"value": float(best.value), "trial": best.number, "params": loggable_params(best.params)},
            prefix=f"{self.prefix}/best",
        )
