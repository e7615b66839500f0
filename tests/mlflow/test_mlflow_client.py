"""The stock MLflow client logs to runstream and reads back what it logged, with MLflow's
semantics and errors."""

from __future__ import annotations

import math
import os
import time
import uuid

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from mlflow_harness import call, issue_token


def error_code(e: MlflowException) -> str:
    return e.error_code


def test_fluent_api_logs_params_metrics_tags_nested_runs_and_artifacts(server, tmp_path):
    mlflow.set_experiment("fluent")
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"optimizer": "adam", "epochs": 3})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.91, "nan_metric": float("nan")})
        mlflow.set_tag("team", "vision")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("x", 2.5)
        notes = tmp_path / "notes.txt"
        notes.write_text("hello artifacts")
        mlflow.log_artifact(str(notes))
        mlflow.log_dict({"layers": [64, 32]}, "config/model.json")

    c = MlflowClient()
    run = c.get_run(parent.info.run_id)
    assert run.info.run_name == "parent"
    assert run.info.status == "FINISHED"
    assert run.info.end_time >= run.info.start_time > 0
    assert run.info.lifecycle_stage == "active"
    assert run.data.params == {"lr": "0.01", "optimizer": "adam", "epochs": "3"}
    assert run.data.metrics["loss"] == pytest.approx(0.2)
    assert run.data.metrics["acc"] == pytest.approx(0.91)
    assert math.isnan(run.data.metrics["nan_metric"])
    assert run.data.tags["team"] == "vision"
    assert run.data.tags["mlflow.runName"] == "parent"

    exp = c.get_experiment_by_name("fluent")
    assert run.info.experiment_id == exp.experiment_id

    kid = c.get_run(child.info.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert kid.data.metrics == {"x": 2.5}

    history = c.get_metric_history(parent.info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])

    listed = {(f.path, f.is_dir) for f in c.list_artifacts(parent.info.run_id)}
    assert listed == {("notes.txt", False), ("config", True)}
    path = c.download_artifacts(parent.info.run_id, "notes.txt", str(tmp_path / "dl"))
    assert open(path).read() == "hello artifacts"
    assert mlflow.artifacts.load_dict(run.info.artifact_uri + "/config/model.json") == {"layers": [64, 32]}


def test_experiments_create_get_search_rename_delete_restore_and_tag(server):
    c = MlflowClient()
    suffix = uuid.uuid4().hex[:8]
    a = c.create_experiment(f"exp-a-{suffix}", tags={"owner": "ann"})
    b = c.create_experiment(f"exp-b-{suffix}")
    assert c.get_experiment(a).name == f"exp-a-{suffix}"
    assert c.get_experiment(a).tags == {"owner": "ann"}
    assert c.get_experiment_by_name(f"exp-b-{suffix}").experiment_id == b
    assert c.get_experiment_by_name(f"missing-{suffix}") is None

    with pytest.raises(MlflowException) as e:
        c.create_experiment(f"exp-a-{suffix}")
    assert error_code(e.value) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        c.get_experiment("987654321")
    assert error_code(e.value) == "RESOURCE_DOES_NOT_EXIST"

    found = c.search_experiments(filter_string=f"name LIKE 'exp-%-{suffix}'", order_by=["name DESC"])
    assert [x.name for x in found] == [f"exp-b-{suffix}", f"exp-a-{suffix}"]
    first = c.search_experiments(filter_string=f"name LIKE 'exp-%-{suffix}'", order_by=["name"], max_results=1)
    assert [x.name for x in first] == [f"exp-a-{suffix}"] and first.token
    second = c.search_experiments(
        filter_string=f"name LIKE 'exp-%-{suffix}'", order_by=["name"], max_results=1, page_token=first.token
    )
    assert [x.name for x in second] == [f"exp-b-{suffix}"]
    assert [x.experiment_id for x in c.search_experiments(filter_string="tags.owner = 'ann'")] == [a]

    c.rename_experiment(b, f"exp-c-{suffix}")
    assert c.get_experiment(b).name == f"exp-c-{suffix}"
    with pytest.raises(MlflowException) as e:
        c.rename_experiment(b, f"exp-a-{suffix}")
    assert error_code(e.value) == "RESOURCE_ALREADY_EXISTS"

    c.set_experiment_tag(a, "stage", "dev")
    assert c.get_experiment(a).tags == {"owner": "ann", "stage": "dev"}
    c.delete_experiment_tag(a, "owner")
    assert c.get_experiment(a).tags == {"stage": "dev"}

    kept = c.create_run(a).info.run_id
    gone = c.create_run(a).info.run_id
    c.delete_run(gone)
    c.delete_experiment(a)
    assert c.get_experiment(a).lifecycle_stage == "deleted"
    # As in MLflow, the experiment's runs are deleted with it, and all restored with it.
    assert c.get_run(kept).info.lifecycle_stage == "deleted"
    assert c.search_runs([a], run_view_type=ViewType.ACTIVE_ONLY) == []
    active = {x.experiment_id for x in c.search_experiments()}
    deleted = {x.experiment_id for x in c.search_experiments(view_type=ViewType.DELETED_ONLY)}
    assert a not in active and a in deleted and "0" in active
    with pytest.raises(MlflowException) as e:
        c.create_run(a)
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"
    c.restore_experiment(a)
    assert c.get_experiment(a).lifecycle_stage == "active"
    assert {r.info.run_id for r in c.search_runs([a])} == {kept, gone}
    assert c.get_run(gone).info.lifecycle_stage == "active"

    with pytest.raises(MlflowException) as e:
        c.delete_experiment("0")
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"


def test_runs_update_delete_restore_tags_batch_and_their_errors(server):
    c = MlflowClient()
    exp = c.create_experiment(f"runs-{uuid.uuid4().hex[:8]}")
    run = c.create_run(exp, tags={"k": "v"}, run_name="r1", start_time=1_700_000_000_000)
    rid = run.info.run_id
    assert run.info.start_time == 1_700_000_000_000
    assert run.data.tags["k"] == "v"

    c.log_batch(
        rid,
        metrics=[Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(100)],
        params=[Param("p1", "a"), Param("p2", "b")],
        tags=[RunTag("t", "x")],
    )
    got = c.get_run(rid)
    assert got.data.metrics["m"] == 99.0
    assert got.data.params == {"p1": "a", "p2": "b"}
    assert got.data.tags["t"] == "x"

    # Params are immutable: the same value again is fine, another is an error.
    c.log_param(rid, "p1", "a")
    with pytest.raises(MlflowException) as e:
        c.log_param(rid, "p1", "changed")
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"
    assert c.get_run(rid).data.params["p1"] == "a"

    # The client splits big batches itself; the server still holds MLflow's limits.
    too_many = [{"key": "big", "value": 1.0, "timestamp": 0, "step": i} for i in range(1001)]
    status, body = call(server, "POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": rid, "metrics": too_many})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "at most 1000 metrics" in body["message"]
    assert "big" not in c.get_run(rid).data.metrics
    with pytest.raises(MlflowException) as e:
        c.log_metric(rid, "neg", 1.0, step=-1)
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"

    c.set_tag(rid, "gone", "soon")
    c.delete_tag(rid, "gone")
    assert "gone" not in c.get_run(rid).data.tags
    with pytest.raises(MlflowException) as e:
        c.delete_tag(rid, "gone")
    assert error_code(e.value) == "RESOURCE_DOES_NOT_EXIST"

    c.update_run(rid, name="renamed")
    assert c.get_run(rid).info.run_name == "renamed"
    c.set_terminated(rid, status="KILLED", end_time=1_700_000_100_000)
    info = c.get_run(rid).info
    assert (info.status, info.end_time) == ("KILLED", 1_700_000_100_000)

    c.delete_run(rid)
    assert c.get_run(rid).info.lifecycle_stage == "deleted"
    assert [r.info.run_id for r in c.search_runs([exp])] == []
    assert [r.info.run_id for r in c.search_runs([exp], run_view_type=ViewType.DELETED_ONLY)] == [rid]
    with pytest.raises(MlflowException) as e:
        c.log_param(rid, "late", "x")
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"
    c.restore_run(rid)
    assert [r.info.run_id for r in c.search_runs([exp])] == [rid]

    missing = uuid.uuid4().hex
    for call_missing in (lambda: c.get_run(missing), lambda: c.log_param(missing, "a", "b")):
        with pytest.raises(MlflowException) as e:
            call_missing()
        assert error_code(e.value) == "RESOURCE_DOES_NOT_EXIST"
        assert e.value.get_http_status_code() == 404


def test_search_runs_filters_orders_and_pages(server):
    c = MlflowClient()
    exp = c.create_experiment(f"search-{uuid.uuid4().hex[:8]}")
    ids = {}
    for i in range(10):
        r = c.create_run(exp, run_name=f"run-{i}")
        c.log_batch(
            r.info.run_id,
            metrics=[Metric("acc", i / 10, 0, 0)],
            params=[Param("opt", "adam" if i % 2 == 0 else "sgd")],
            tags=[RunTag("group", "even" if i % 2 == 0 else "odd")],
        )
        ids[i] = r.info.run_id

    found = c.search_runs([exp], "metrics.acc > 0.25 and params.opt = 'adam'", order_by=["metrics.acc DESC"])
    assert [r.info.run_id for r in found] == [ids[8], ids[6], ids[4]]
    found = c.search_runs([exp], "tags.group != 'even' and attributes.run_name LIKE 'run-%'", order_by=["metrics.acc"])
    assert [r.info.run_id for r in found] == [ids[1], ids[3], ids[5], ids[7], ids[9]]
    found = c.search_runs([exp], f"attributes.run_id IN ('{ids[2]}', '{ids[3]}')")
    assert {r.info.run_id for r in found} == {ids[2], ids[3]}
    assert len(c.search_runs([exp], "attributes.status = 'RUNNING'")) == 10

    seen = []
    token = None
    while True:
        page = c.search_runs([exp], order_by=["metrics.acc DESC"], max_results=3, page_token=token)
        seen += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    assert seen == [ids[i] for i in reversed(range(10))]

    # Further clauses order the runs that tie on the first, on every page.
    by_opt = [ids[i] for i in (8, 6, 4, 2, 0, 9, 7, 5, 3, 1)]
    found = c.search_runs([exp], order_by=["params.opt", "metrics.acc DESC"])
    assert [r.info.run_id for r in found] == by_opt
    seen, token = [], None
    while True:
        page = c.search_runs([exp], order_by=["params.opt ASC", "metrics.acc DESC"], max_results=3, page_token=token)
        seen += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    assert seen == by_opt
    # A key no run has ties them all, and the further clauses order them.
    found = c.search_runs([exp], order_by=["params.nowhere DESC", "tags.group DESC", "attributes.run_name DESC"])
    assert [r.info.run_id for r in found] == [ids[i] for i in (9, 7, 5, 3, 1, 8, 6, 4, 2, 0)]
    with pytest.raises(MlflowException) as e:
        c.search_runs([exp], order_by=["params.opt", "metrics.acc"], page_token=page_token_of_first(c, exp))
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"

    for bad in ("metrics.acc > 'x'", "params.opt > 'a'", "nonsense.key = 1", "metrics.acc >"):
        with pytest.raises(MlflowException) as e:
            c.search_runs([exp], bad)
        assert error_code(e.value) == "INVALID_PARAMETER_VALUE", bad


def page_token_of_first(c, exp):
    """A page token of a search ordered by one clause (a keyset token)."""
    return c.search_runs([exp], order_by=["metrics.acc DESC"], max_results=1).token


def test_metric_history_pages_and_bulk_interval(server):
    c = MlflowClient()
    run = c.create_run("0")
    rid = run.info.run_id
    for start in range(0, 3000, 1000):
        c.log_batch(rid, metrics=[Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(start, start + 1000)])
    history = c.get_metric_history(rid, "loss")
    assert [m.step for m in history] == list(range(3000))

    page = f"/api/2.0/mlflow/metrics/get-history?run_id={rid}&metric_key=loss&max_results=1000"
    status, body = call(server, "GET", page)
    assert status == 200 and len(body["metrics"]) == 1000 and body["next_page_token"]
    status, body = call(server, "GET", page + "&page_token=" + body["next_page_token"])
    assert status == 200 and [m["step"] for m in body["metrics"]] == list(range(1000, 2000))
    status, body = call(
        server,
        "GET",
        f"/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={rid}&metric_key=loss&start_step=100&end_step=199&max_results=10",
    )
    assert status == 200, body
    steps = [m["step"] for m in body["metrics"]]
    assert len(steps) == 10 and steps[0] == 100 and steps[-1] == 199
    assert all(m["run_id"] == rid for m in body["metrics"])


def test_metrics_logged_again_at_a_step_keep_every_value(server):
    """MLflow logs a metric without a step at step 0: its history keeps every value, in time order,
    and the latest is the run's metric."""
    c = MlflowClient()
    rid = c.create_run("0").info.run_id
    values = [0.5, 0.4, 0.45, 0.3]
    for i, v in enumerate(values):
        c.log_metric(rid, "loss", v, timestamp=1_700_000_000_000 + i)
    c.log_metric(rid, "acc", 0.7, timestamp=1_700_000_000_000, step=3)
    c.log_metric(rid, "acc", 0.6, timestamp=1_700_000_000_009, step=2)
    c.log_metric(rid, "acc", 0.8, timestamp=1_700_000_000_001, step=3)
    history = c.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in history] == [(0, v) for v in values]
    assert [(m.step, m.value) for m in c.get_metric_history(rid, "acc")] == [(2, 0.6), (3, 0.7), (3, 0.8)]
    metrics = c.get_run(rid).data.metrics
    assert metrics["loss"] == 0.3 and metrics["acc"] == 0.8

    # A page that ends inside step 0 resumes there.
    page = f"/api/2.0/mlflow/metrics/get-history?run_id={rid}&metric_key=loss&max_results=3"
    status, body = call(server, "GET", page)
    assert status == 200 and [m["value"] for m in body["metrics"]] == values[:3] and body["next_page_token"]
    status, body = call(server, "GET", page + "&page_token=" + body["next_page_token"])
    assert status == 200 and [m["value"] for m in body["metrics"]] == values[3:]
    assert "next_page_token" not in body

    # The fluent API in a loop, no step and no timestamp given.
    with mlflow.start_run() as run:
        for v in range(5):
            mlflow.log_metric("x", float(v))
            time.sleep(0.002)
    assert [m.value for m in c.get_metric_history(run.info.run_id, "x")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r.info.run_id for r in c.search_runs([run.info.experiment_id], "metrics.x = 4")] == [run.info.run_id]


def test_search_answers_follow_every_change_to_a_run(server):
    """A search answers the same runs again and again; each answer has every change made since."""
    c = MlflowClient()
    exp = c.create_experiment(f"follow-{uuid.uuid4().hex[:8]}")
    rid = c.create_run(exp).info.run_id
    c.log_metric(rid, "m", 1.0)
    for _ in range(2):
        run = c.search_runs([exp])[0]
        assert run.data.metrics == {"m": 1.0} and "t" not in run.data.tags
        assert run.info.status == "RUNNING"
    c.set_tag(rid, "t", "v")
    c.log_metric(rid, "m", 2.0, step=1)
    run = c.search_runs([exp])[0]
    assert run.data.tags["t"] == "v" and run.data.metrics == {"m": 2.0}
    c.set_terminated(rid)
    assert c.search_runs([exp])[0].info.status == "FINISHED"
    c.log_param(rid, "p", "x")
    assert c.search_runs([exp], "params.p = 'x'")[0].data.params == {"p": "x"}


def test_error_shapes_match_what_the_client_parses(server):
    status, body = call(server, "GET", "/api/2.0/mlflow/runs/get")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE" and "run_id" in body["message"]
    status, body = call(server, "POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": uuid.uuid4().hex, "key": "k"})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE" and "value" in body["message"]
    status, body = call(server, "GET", "/api/2.0/mlflow/runs/get?run_id=" + uuid.uuid4().hex)
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, body = call(server, "POST", "/api/2.0/mlflow/no/such-endpoint", {})
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"
    status, body = call(server, "GET", "/ajax-api/2.0/mlflow/experiments/get?experiment_id=0")
    assert status == 200 and body["experiment"]["name"] == "Default"
    status, body = call(server, "POST", "/api/2.0/mlflow/experiments/create", {"name": ""})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"


def test_tokens_basic_auth_and_roles(server, monkeypatch):
    viewer = issue_token(server, "viewer")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "anyone")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.token)
    c = MlflowClient()
    run = c.create_run("0", run_name="basic-auth")
    assert c.get_run(run.info.run_id).info.run_name == "basic-auth"

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", viewer)
    assert MlflowClient().get_run(run.info.run_id).info.run_id == run.info.run_id
    with pytest.raises(MlflowException) as e:
        MlflowClient().create_run("0")
    assert error_code(e.value) == "PERMISSION_DENIED"
    assert e.value.get_http_status_code() == 403

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-token-at-all")
    with pytest.raises(MlflowException) as e:
        MlflowClient().get_run(run.info.run_id)
    assert e.value.get_http_status_code() == 401


def test_runs_are_shared_with_runstreams_own_api(server):
    # A run logged through runstream's own API shows up in MLflow under its experiment's name.
    rid = "native-" + uuid.uuid4().hex[:12]
    events = [
        {"id": str(uuid.uuid4()), "run": rid, "run_created": {"name": "native", "experiment": "shared-exp"}},
        {"id": str(uuid.uuid4()), "run": rid, "attributes_set": {"attributes": {"params": {"lr": 0.1}}}},
        {"id": str(uuid.uuid4()), "run": rid, "float_points": {"series": "loss", "steps": [0, 1], "values": [0.5, 0.25]}},
    ]
    status, body = call(server, "POST", "/api/v1/projects/default/events", {"events": events})
    assert status == 200, body
    server.run(rid, min_position=body["position"])
    c = MlflowClient()
    exp = c.get_experiment_by_name("shared-exp")
    assert exp is not None
    [run] = c.search_runs([exp.experiment_id])
    assert run.info.run_id == rid
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 0.25}
    assert [r.info.run_id for r in c.search_runs([exp.experiment_id], "params.lr = '0.1'")] == [rid]

    # And an MLflow run is an ordinary runstream run.
    mlflow_run = c.create_run(exp.experiment_id, run_name="from-mlflow")
    c.log_param(mlflow_run.info.run_id, "batch", "32")
    c.log_metric(mlflow_run.info.run_id, "loss", 0.1, step=3)
    c.get_run(mlflow_run.info.run_id)
    native = server.run(mlflow_run.info.run_id)
    assert native["run"]["name"] == "from-mlflow"
    assert native["run"]["experiment"] == "shared-exp"
    assert native["attributes"]["params/batch"] == "32"


def test_sklearn_autolog_logs_params_metrics_and_a_loadable_model(server):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment("autolog")
    mlflow.sklearn.autolog(log_input_examples=False, silent=True)
    try:
        X, y = load_iris(return_X_y=True)
        with mlflow.start_run() as run:
            LogisticRegression(max_iter=300).fit(X, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    got = MlflowClient().get_run(run.info.run_id)
    assert got.data.params["max_iter"] == "300"
    assert got.data.metrics["training_accuracy_score"] > 0.9
    assert got.data.tags["estimator_name"] == "LogisticRegression"
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert models[0].status.to_proto() == 2  # READY
    # Autologging links its training metrics to the model too.
    assert models[0].metrics and all(m.model_id == models[0].model_id for m in models[0].metrics)
    model = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    assert list(model.predict(X[:2])) == [0, 0]
