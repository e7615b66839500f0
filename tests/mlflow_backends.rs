//! MLflow's REST API over the ClickHouse views (`runstream serve --views clickhouse://...`) and
//! over the embedded default, with the same workload and the same expected answers: runs,
//! params, tags, latest metrics, param immutability, search with a filter, an order and pages,
//! metric history, and an experiment's deletion reaching its runs. (The stock MLflow client's
//! own suite, tests/mlflow, runs on the embedded default.)

mod common;

use common::{Server, client};
use serde_json::{Value, json};

async fn mlflow(s: &Server, endpoint: &str, body: Value) -> (u16, Value) {
    let url = s.url(&format!("/api/2.0/mlflow/{endpoint}"));
    let req = if endpoint.starts_with("metrics/get-history") || endpoint == "runs/get" {
        let q: Vec<(String, String)> = body
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        client().get(url).query(&q)
    } else {
        client().post(url).json(&body)
    };
    let r = req.bearer_auth(&s.token).send().await.expect("mlflow call");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ok(s: &Server, endpoint: &str, body: Value) -> Value {
    let (status, answer) = mlflow(s, endpoint, body).await;
    assert_eq!(status, 200, "{endpoint}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_calls_over_clickhouse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let views = runstream_testkit::clickhouse_url("mlflow");
    workload(&Server::start_role("serve", dir.path(), &["--views", views.as_str()])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_calls_on_the_embedded_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    workload(&Server::start(dir.path())).await;
}

async fn workload(s: &Server) {
    let exp = ok(s, "experiments/create", json!({"name": "over-clickhouse"})).await["experiment_id"]
        .as_str()
        .expect("experiment id")
        .to_string();
    let mut runs = Vec::new();
    for i in 0..6i64 {
        let run = ok(
            s,
            "runs/create",
            json!({"experiment_id": exp, "run_name": format!("r{i}"), "start_time": 1_700_000_000_000i64 + i}),
        )
        .await;
        let id = run["run"]["info"]["run_id"].as_str().expect("run id").to_string();
        let params: Vec<Value> = (0..20)
            .map(|p| json!({"key": format!("p{p}"), "value": format!("v{}", (i + p) % 3)}))
            .collect();
        // Three points each; the last one is the run's metric.
        let metrics: Vec<Value> = (0..3)
            .map(|step| json!({"key": "loss", "value": 1.0 / (i + 1) as f64 + step as f64 * 0.001, "timestamp": 1_700_000_000_000i64 + step, "step": step}))
            .collect();
        ok(
            s,
            "runs/log-batch",
            json!({"run_id": id, "params": params, "metrics": metrics, "tags": [{"key": "team", "value": "vision"}]}),
        )
        .await;
        runs.push(id);
    }

    let got = ok(s, "runs/get", json!({"run_id": runs[2]})).await;
    let data = &got["run"]["data"];
    assert_eq!(data["params"].as_array().map(Vec::len), Some(20), "{got}");
    assert!(
        data["params"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "p0", "value": "v2"})),
        "{got}"
    );
    assert!(
        data["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "team", "value": "vision"})),
        "{got}"
    );
    assert_eq!(data["metrics"][0]["step"], json!(2), "{got}");
    assert_eq!(got["run"]["info"]["run_name"], json!("r2"), "{got}");
    assert_eq!(got["run"]["info"]["experiment_id"], json!(exp), "{got}");

    // Params are immutable, with MLflow's error.
    let (status, err) = mlflow(
        s,
        "runs/log-parameter",
        json!({"run_id": runs[2], "key": "p0", "value": "other"}),
    )
    .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{err}"
    );

    // Search: runs with p0 = 'v1' (i = 1 and 4) and a last loss under 0.6 (0.502 and 0.202), by loss
    // descending.
    let found = ok(
        s,
        "runs/search",
        json!({"experiment_ids": [exp], "filter": "params.p0 = 'v1' and metrics.loss < 0.6", "order_by": ["metrics.loss DESC"]}),
    )
    .await;
    let ids: Vec<&str> = found["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["info"]["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [runs[1].as_str(), runs[4].as_str()], "{found}");
    let page = ok(
        s,
        "runs/search",
        json!({"experiment_ids": [exp], "max_results": 4, "order_by": ["attributes.start_time"]}),
    )
    .await;
    assert_eq!(page["runs"].as_array().map(Vec::len), Some(4), "{page}");
    let rest = ok(
        s,
        "runs/search",
        json!({"experiment_ids": [exp], "max_results": 4, "order_by": ["attributes.start_time"], "page_token": page["next_page_token"]}),
    )
    .await;
    assert_eq!(rest["runs"].as_array().map(Vec::len), Some(2), "{rest}");

    let history = ok(
        s,
        "metrics/get-history",
        json!({"run_id": runs[0], "metric_key": "loss"}),
    )
    .await;
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 1, 2], "{history}");

    // Deleting the experiment deletes its runs; restoring it restores them.
    ok(s, "experiments/delete", json!({"experiment_id": exp})).await;
    let got = ok(s, "runs/get", json!({"run_id": runs[3]})).await;
    assert_eq!(got["run"]["info"]["lifecycle_stage"], json!("deleted"), "{got}");
    let active = ok(s, "runs/search", json!({"experiment_ids": [exp]})).await;
    assert!(active["runs"].as_array().is_none_or(Vec::is_empty), "{active}");
    ok(s, "experiments/restore", json!({"experiment_id": exp})).await;
    let all = ok(s, "runs/search", json!({"experiment_ids": [exp]})).await;
    assert_eq!(all["runs"].as_array().map(Vec::len), Some(6), "{all}");
}
