"""XGBoost: ``xgb.train(..., callbacks=[RunstreamCallback(run)])``.

Logs every evaluation metric after each boosting round as ``{prefix}{data}/{metric}`` at the
round's step, the booster's full configuration as the file ``xgboost/config.json``, feature
importance (gain) as attributes, and optionally the trained model as a file with an output
lineage link carrying its digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import xgboost as xgb

from ..run import Run


class RunstreamCallback(xgb.callback.TrainingCallback):
    """An XGBoost training callback that logs to a runstream run."""

    def __init__(
        self,
        run: Run,
        *,
        prefix: str = "",
        log_config: bool = True,
        log_importance: bool = True,
        log_model: bool = False,
        model_name: str = "xgboost-model",
        model_path: str = "model/model.ubj",
    ) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"run must be a runstream Run, not {type(run).__name__}")
        self.run = run
        self.prefix = prefix
        self.log_config = log_config
        self.log_importance = log_importance
        self.log_model = log_model
        self.model_name = model_name
        self.model_path = model_path

    def before_training(self, model: Any) -> Any:
        if self.log_config and hasattr(model, "save_config"):
            self.run.log_bytes("xgboost/config.json", model.save_config().encode(), media_type="application/json")
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, dict[str, list[Any]]]) -> bool:
        metrics: dict[str, float] = {}
        for data, by_metric in evals_log.items():
            for metric, history in by_metric.items():
                if not history:
                    continue
                last = history[-1]
                name = f"{self.prefix}{data}/{metric}"
                if isinstance(last, tuple):  # xgb.cv: (mean, std)
                    metrics[f"{name}-mean"], metrics[f"{name}-std"] = float(last[0]), float(last[1])
                else:
                    metrics[name] = float(last)
        if metrics:
            self.run.log(metrics, step=epoch)
        return False

    def after_training(self, model: Any) -> Any:
        if self.log_importance and hasattr(model, "get_score"):
            try:
                scores = model.get_score(importance_type="gain")
            except Exception:  # linear boosters have no tree importance
                scores = {}
            if scores:
                self.run.update({str(k).replace("/", "_"): float(v) for k, v in scores.items()},
                                prefix="xgboost/importance_gain")
        if self.log_model and hasattr(model, "save_model"):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, os.path.basename(self.model_path))
                model.save_model(path)
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                self.run.log_file(self.model_path, path)
                self.run.log_output(self.model_name, kind="model", version=f"rounds-{model.num_boosted_rounds()}",
                                    digest=f"sha256:{digest}")
        return model
