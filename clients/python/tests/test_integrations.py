"""Each integration logs a small real training run, end to end, read back from the server.

The libraries come from PyPI (xgboost-cpu, lightgbm, optuna); a missing one fails the test
rather than skipping it, so CI cannot pass without exercising them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runstream

from conftest import PROJECT, Server

pytestmark = pytest.mark.integration


def data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] + rng.normal(scale=0.3, size=n) > 0).astype(np.float64)
    return x, y


def start(server: Server, spool: Path, name: str) -> runstream.Run:
    return runstream.init(project=PROJECT, name=name, url=server.url, token=server.token, spool_dir=spool,
                          capture_environment=False, system_metrics=False)


def api_floats(values: list[Any]) -> list[float]:
    return [{"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v] if isinstance(v, str) else v
            for v in values]


def test_xgboost_callback(server: Server, spool: Path) -> None:
    import xgboost as xgb
    from runstream.integrations.xgboost import RunstreamCallback

    x, y = data()
    dtrain = xgb.DMatrix(x[:300], label=y[:300])
    dvalid = xgb.DMatrix(x[300:], label=y[300:])
    history: dict[str, Any] = {}
    run = start(server, spool, "xgboost")
    booster = xgb.train(
        {"objective": "binary:logistic", "eval_metric": ["logloss", "error"], "max_depth": 3, "nthread": 1},
        dtrain, num_boost_round=15, evals=[(dtrain, "train"), (dvalid, "valid")], evals_result=history,
        callbacks=[RunstreamCallback(run, log_model=True)],
    )
    assert run.finish(timeout=60)
    got = server.run(run.id, min_position=run.last_position)
    for data_name in ("train", "valid"):
        for metric in ("logloss", "error"):
            steps, _, values = server.points(run.id, f"{data_name}/{metric}")
            assert steps == list(range(15))
            assert api_floats(values) == [float(v) for v in history[data_name][metric]]
    model, _ = server.file(run.id, "model/model.ubj")
    assert len(model) > 100
    restored = xgb.Booster(model_file=bytearray(model))
    assert np.allclose(restored.predict(dvalid), booster.predict(dvalid))
    (link,) = [l for l in got["lineage"] if l["direction"] == "output"]
    assert link["kind"] == "model" and link["version"] == "rounds-15" and link["digest"].startswith("sha256:")
    assert any(k.startswith("xgboost/importance_gain/") for k in got["attributes"])
    assert b'"learner"' in server.file(run.id, "xgboost/config.json")[0]


def test_lightgbm_callback(server: Server, spool: Path) -> None:
    import lightgbm as lgb

    from runstream.integrations.lightgbm import runstream_callback

    x, y = data(seed=1)
    train = lgb.Dataset(x[:300], label=y[:300])
    valid = lgb.Dataset(x[300:], label=y[300:], reference=train)
    history: dict[str, Any] = {}
    run = start(server, spool, "lightgbm")
    lgb.train(
        {"objective": "binary", "metric": ["binary_logloss", "auc"], "num_leaves": 7, "verbose": -1,
         "num_threads": 1, "learning_rate": 0.1},
        train, num_boost_round=12, valid_sets=[train, valid], valid_names=["train", "valid"],
        callbacks=[runstream_callback(run), lgb.record_evaluation(history)],
    )
    assert run.finish(timeout=60)
    got = server.run(run.id, min_position=run.last_position)
    for data_name in ("train", "valid"):
        for metric in ("binary_logloss", "auc"):
            steps, _, values = server.points(run.id, f"{data_name}/{metric}")
            assert steps == list(range(12))
            assert api_floats(values) == [float(v) for v in history[data_name][metric]]
    assert got["attributes"]["params/num_leaves"] == 7
    assert got["attributes"]["params/objective"] == "binary"
    assert got["attributes"]["params/learning_rate"] == 0.1


def test_optuna_callback(server: Server, spool: Path) -> None:
    import optuna

    from runstream.integrations.optuna import RunstreamCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = data(seed=2)

    def objective(trial: optuna.Trial) -> float:
        # A real (small) model: ridge-regularised least squares, scored on held-out data.
        alpha = trial.suggest_float("alpha", 1e-3, 10.0, log=True)
        features = trial.suggest_categorical("features", ["all", "first3"])
        xs = x if features == "all" else x[:, :3]
        a, b = xs[:300], xs[300:]
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ y[:300])
        return float(np.mean((b @ w - y[300:]) ** 2))

    run = start(server, spool, "optuna")
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=12, callbacks=[RunstreamCallback(run)])
    assert run.finish(timeout=60)
    got = server.run(run.id, min_position=run.last_position)
    steps, _, values = server.points(run.id, "optuna/value")
    assert steps == [t.number for t in study.trials]
    assert values == [t.value for t in study.trials]
    assert server.points(run.id, "optuna/params/alpha")[2] == [t.params["alpha"] for t in study.trials]
    assert server.lines(run.id, "optuna/params/features")["lines"] == [t.params["features"] for t in study.trials]
    assert server.lines(run.id, "optuna/state")["lines"] == ["COMPLETE"] * 12
    a = got["attributes"]
    assert a["optuna/best/trial"] == study.best_trial.number
    assert a["optuna/best/value"] == study.best_value
    assert a["optuna/best/params/alpha"] == study.best_params["alpha"]
