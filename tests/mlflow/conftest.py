"""MLflow compatibility tests: the real ``mlflow`` client (PyPI) against the real ``runstream``
binary, started once per module on a free port."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from mlflow_harness import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("mlflow-server-data"))
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")}
    os.environ["MLFLOW_TRACKING_URI"] = s.url
    os.environ["MLFLOW_TRACKING_TOKEN"] = s.token
    # Fail fast instead of retrying refused requests for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri(s.url)
    try:
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s.stop()
