"""Callbacks for ML libraries. Each module imports its library only when used.

- ``runstream.integrations.xgboost.RunstreamCallback``: XGBoost training callback.
- ``runstream.integrations.lightgbm.runstream_callback``: LightGBM callback.
- ``runstream.integrations.optuna.RunstreamCallback``: Optuna study callback.
"""
