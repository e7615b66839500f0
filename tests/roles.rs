//! The roles as separate processes: `runstream ingest`, `runstream project` and `runstream query`
//! over one log, with the views in a real ClickHouse server. Writes go to ingest only, reads to
//! query only, and the projector in between is the only writer of the views.

mod common;

use common::{Server, client, event_id, get_json, post_events};
use serde_json::{Value, json};

const PROJECT: &str = "default";

#[tokio::test(flavor = "multi_thread")]
async fn ingest_project_and_query_run_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let views = runstream_testkit::clickhouse_url("roles");
    let flags = ["--views", views.as_str()];
    // Ingest first: it creates the workspace and registers the admin token the others follow.
    let ingest = Server::start_role("ingest", dir.path(), &flags);
    let query = Server::start_role("query", dir.path(), &flags);
    let projector = Server::start_role("project", dir.path(), &flags);

    for s in [&ingest, &query, &projector] {
        let r = client().get(s.url("/readyz")).send().await.expect("readyz");
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    }

    let steps: Vec<i64> = (0..1000).collect();
    let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
    let events = json!({"events": [
        {"id": event_id(), "run": "r1", "run_created": {"name": "apart"}},
        {"id": event_id(), "run": "r1", "attributes_set": {"attributes": {"params": {"lr": 0.01}}}},
        {"id": event_id(), "run": "r1", "float_points": {"series": "loss", "steps": steps, "values": values}},
    ]});
    let (status, body) = post_events(&ingest, PROJECT, &events).await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_str().expect("position").to_string();

    // The query process sees the write once the projector process has applied it.
    let r = client()
        .post(query.url(&format!("/api/v1/projects/{PROJECT}/runs:search")))
        .bearer_auth(&query.token)
        .json(&json!({
            "filter": "attr.params/lr = 0.01",
            "columns": ["max(metric.loss)", "count(metric.loss)"],
            "min_position": position,
            "wait_ms": 30000,
        }))
        .send()
        .await
        .expect("search");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["runs"][0]["run"], json!("r1"), "{body}");
    assert_eq!(body["runs"][0]["columns"]["max(metric.loss)"], json!(499.5), "{body}");
    assert_eq!(body["runs"][0]["columns"]["count(metric.loss)"], json!(1000), "{body}");

    // Only the projector folds the log.
    for (s, projects) in [(&ingest, false), (&query, false), (&projector, true)] {
        let m = client().get(s.url("/metrics")).send().await.expect("metrics");
        let text = m.text().await.expect("text");
        assert_eq!(text.contains("runstream_projector_points_total"), projects, "{text}");
    }

    // Each process serves its own role's routes only.
    let (status, _) = post_events(&query, PROJECT, &events).await;
    assert_eq!(status, 404, "the query role takes no writes");
    let (status, _) = get_json(&ingest, &format!("/api/v1/projects/{PROJECT}/runs/r1")).await;
    assert_eq!(status, 404, "the ingest role answers no reads");
    let (status, _) = get_json(&projector, &format!("/api/v1/projects/{PROJECT}/runs/r1")).await;
    assert_eq!(status, 404, "the projector answers no reads");
    let (status, body) = get_json(&query, &format!("/api/v1/projects/{PROJECT}/runs/r1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["name"], json!("apart"), "{body}");
}
