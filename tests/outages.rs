//! Outages of the distributed deployment's servers, as separate processes against real ones:
//! - ClickHouse down for 30 s: ingest goes on acknowledging (the log is the system of record),
//!   the projector backs off, and once ClickHouse is back the views catch up with everything
//!   acknowledged;
//! - the broker down: ingest answers 503 with Retry-After and never acknowledges, readiness says
//!   the log is unreachable, and once the broker is back writes are acknowledged again and every
//!   acknowledged event is in the views.

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, event_id, get_json, merge_positions, post_events};
use serde_json::{Value, json};

const PROJECT: &str = "default";

/// A batch of `n` points of `loss` at steps `from..from + n` of `run`, with fresh event ids.
fn points(run: &str, from: i64, n: i64) -> Value {
    let steps: Vec<i64> = (from..from + n).collect();
    let values: Vec<f64> = steps.iter().map(|s| *s as f64).collect();
    json!({"events": [{"id": event_id(), "run": run, "float_points": {"series": "loss", "steps": steps, "values": values}}]})
}

fn created(run: &str) -> Value {
    json!({"events": [{"id": event_id(), "run": run, "run_created": {"name": run}}]})
}

/// The summary of `run`'s `loss` once the views have reached `position`.
async fn loss_of(s: &Server, run: &str, position: &str) -> Value {
    let (status, body) = get_json(
        s,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}?min_position={position}&wait_ms=90000"),
    )
    .await;
    assert_eq!(status, 200, "{run}: {body}");
    body["metrics"]["loss"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_for_30_s_delays_the_views_not_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = runstream_testkit::Broker::start();
    let mut ch = runstream_testkit::OwnClickHouse::start("outage");
    let log = broker.url("outage");
    let views = ch.url("outage");
    let flags = ["--log", log.as_str(), "--views", views.as_str(), "--partitions", "2"];
    let data = dir.path().join("data");
    let ingest = Server::start_role("ingest", &data, &flags);
    let projector = Server::start_role("project", &data, &flags);
    let query = Server::start_role("query", &data, &flags);

    let (status, body) = post_events(&ingest, PROJECT, &created("r")).await;
    assert_eq!(status, 200, "{body}");
    let mut positions = vec![body["position"].as_str().expect("position").to_string()];
    let first = loss_of(&query, "r", &positions[0]).await;
    assert_eq!(first, Value::Null, "no points yet");

    // ClickHouse goes away; clients keep writing for 30 s and every write is acknowledged at
    // once.
    ch.stop();
    let down = Instant::now();
    let mut step = 0;
    let mut slowest = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(30) {
        let started = Instant::now();
        let (status, body) = post_events(&ingest, PROJECT, &points("r", step, 1000)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "ingest refused a write while ClickHouse was down: {body}");
        positions.push(body["position"].as_str().expect("position").to_string());
        step += 1000;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a write took {slowest:?} while ClickHouse was down"
    );
    // Meanwhile the projector cannot flush: it says so, and keeps trying.
    let (status, body) = get_json(&projector, "/readyz").await;
    assert_eq!(status, 503, "the projector reports ready without its views: {body}");

    ch.restart();
    let loss = loss_of(&query, "r", &merge_positions(&positions)).await;
    assert_eq!(loss["count"], json!(step), "{loss}");
    assert_eq!(loss["last"], json!((step - 1) as f64), "{loss}");
    assert_eq!(loss["min"], json!(0.0), "{loss}");
    let (status, _) = get_json(&projector, "/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_means_503_with_retry_after_and_no_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = runstream_testkit::Broker::start_persistent(&dir.path().join("broker"));
    let log = broker.url("down");
    let server = Server::start_role(
        "serve",
        &dir.path().join("data"),
        &["--log", log.as_str(), "--partitions", "2"],
    );

    let (status, body) = post_events(&server, PROJECT, &created("r")).await;
    assert_eq!(status, 200, "{body}");
    let mut acknowledged = vec![body["position"].as_str().expect("position").to_string()];
    let (status, body) = post_events(&server, PROJECT, &points("r", 0, 1000)).await;
    assert_eq!(status, 200, "{body}");
    acknowledged.push(body["position"].as_str().expect("position").to_string());

    broker.kill();
    // Three clients write while the broker is gone: each gets a 503 with Retry-After, none an
    // acknowledgement, however long the producer holds the records.
    let writes: Vec<_> = (0..3)
        .map(|c| {
            let (url, token) = (
                server.url(&format!("/api/v1/projects/{PROJECT}/events")),
                server.token.clone(),
            );
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .bearer_auth(token)
                    .json(&points("r", 1000 + c * 1000, 1000))
                    .send()
                    .await
                    .expect("an answer while the broker is down");
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                (r.status().as_u16(), retry_after, r.text().await.unwrap_or_default())
            })
        })
        .collect();
    for w in writes {
        let (status, retry_after, body) = w.await.expect("client");
        assert_eq!(status, 503, "a write while the broker is down: {body}");
        assert!(
            retry_after.is_some_and(|s| s.parse::<u64>().is_ok()),
            "503 without Retry-After: {body}"
        );
    }
    let (status, body) = get_json(&server, "/readyz").await;
    assert_eq!(status, 503, "ready without the log: {body}");

    // Back: a client retrying gets its write acknowledged, and everything acknowledged is there.
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    let retried = points("r", 4000, 1000);
    loop {
        let (status, body) = post_events(&server, PROJECT, &retried).await;
        if status == 200 {
            acknowledged.push(body["position"].as_str().expect("position").to_string());
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "writes still refused 120 s after the broker came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let loss = loss_of(&server, "r", &merge_positions(&acknowledged)).await;
    // Steps 0..1000 and 4000..5000 were acknowledged; what was refused may or may not have
    // reached the log, but an acknowledged point is never missing.
    let count = loss["count"].as_u64().expect("count");
    assert!((2000..=5000).contains(&count), "{loss}");
    assert_eq!(loss["last"], json!(4999.0), "{loss}");
    let (status, _) = get_json(&server, "/readyz").await;
    assert_eq!(status, 200);
}
