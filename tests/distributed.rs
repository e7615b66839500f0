//! The distributed deployment end to end, every part a separate process: a Kafka-protocol broker
//! (tansu, persistent), a ClickHouse server, one `runstream ingest`, two `runstream project` and
//! one `runstream query`. Four clients stream 1,000,000 points over 50 runs; mid-stream one
//! projector, holding its share of the partitions, is killed with SIGKILL (no flush, no leaving
//! the group) and started again under its name (`--projector-id`), which gives it its partitions
//! back,
//! and the broker is killed and restarted once (clients retry the 503s and lost connections with
//! the same event ids). At the
//! end the views hold exactly what was acknowledged (counts, sums, extremes and last values per
//! series, so nothing is missing or counted twice), and the embedded default, given the same
//! events, answers the same.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, client, merge_positions};
use serde_json::{Value, json};

const PROJECT: &str = "default";
const RUNS: usize = 50;
const CLIENTS: usize = 4;
const POINTS_PER_RUN: i64 = 20_000;
const BATCH: i64 = 2_000;

fn value(run: usize, step: i64) -> f64 {
    ((step * 7919 + run as i64 * 31) % 10_007) as f64 * 0.25 - 1000.0
}

/// Posts one batch of events until it is acknowledged, retrying what the server says to retry
/// (503 with Retry-After) and lost connections, with the same event ids each time. Returns the
/// position token of the acknowledgement.
async fn post_until_acknowledged(base: &str, token: &str, body: &Value) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "a batch was not acknowledged within 300 s");
        let r = client()
            .post(format!("{base}/api/v1/projects/{PROJECT}/events"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 200 => {
                let body: Value = r.json().await.expect("json");
                return body["position"].as_str().expect("position").to_string();
            }
            Ok(r) if r.status().as_u16() == 503 => {
                assert!(r.headers().contains_key("retry-after"), "503 without Retry-After");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => panic!(
                "unexpected answer {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every event the clients send, batch by batch: run creations, then the points in batches of
/// `BATCH` steps, runs interleaved.
fn batches(client: usize) -> Vec<Value> {
    let runs: Vec<usize> = (0..RUNS).filter(|r| r % CLIENTS == client).collect();
    let mut out = vec![json!({"events": runs.iter().map(|r| json!({
        "id": format!("00000000-0000-4000-8000-{:012}", r), "run": format!("run-{r:02}"),
        "run_created": {"name": format!("run {r}")}})).collect::<Vec<_>>()})];
    for start in (0..POINTS_PER_RUN).step_by(BATCH as usize) {
        for &r in &runs {
            let steps: Vec<i64> = (start..start + BATCH).collect();
            let values: Vec<f64> = steps.iter().map(|s| value(r, *s)).collect();
            out.push(json!({"events": [{
                "id": format!("00000000-0000-4000-9000-{:06}{:06}", r, start / BATCH),
                "run": format!("run-{r:02}"),
                "float_points": {"series": "loss", "steps": steps, "values": values},
            }]}));
        }
    }
    out
}

async fn run_detail(s: &Server, run: &str, position: &str) -> Value {
    let r = client()
        .get(s.url(&format!(
            "/api/v1/projects/{PROJECT}/runs/{run}?min_position={position}&wait_ms=60000"
        )))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get run");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{run}: {body}");
    body
}

/// Waits (up to a minute) until each projector holds some partitions and together all four, once.
async fn wait_until_shared(projectors: &[Server; 2]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut shares = Vec::new();
        for p in projectors {
            let text = client().get(p.url("/metrics")).send().await.expect("metrics");
            let text = text.text().await.expect("text");
            shares.extend(
                text.lines()
                    .filter(|l| l.starts_with("runstream_projector_partitions"))
                    .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()),
            );
        }
        if shares.len() == 2 && shares.iter().all(|s| *s > 0.0) && shares.iter().sum::<f64>() == 4.0 {
            return;
        }
        assert!(Instant::now() < deadline, "partitions not shared: {shares:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_points_survive_a_killed_projector_and_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = runstream_testkit::Broker::start_persistent(&dir.path().join("broker"));
    let log = broker.url("dist");
    let views = runstream_testkit::clickhouse_url("distributed");
    let flags = ["--log", log.as_str(), "--views", views.as_str(), "--partitions", "4"];
    let data = dir.path().join("data");
    let ingest = Server::start_role("ingest", &data, &flags);
    let query = Server::start_role("query", &data, &flags);
    let projector = |name: &str| {
        let mut with_name = flags.to_vec();
        with_name.extend(["--projector-id", name]);
        Server::start_role("project", &data, &with_name)
    };
    let mut projectors = [projector("p0"), projector("p1")];
    let metrics = |s: &Server| {
        let url = s.url("/metrics");
        async move {
            client()
                .get(url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    let sample = |text: &str, name: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    // Both projectors hold a share before anything is sent, so the one killed below dies holding
    // partitions it was folding.
    wait_until_shared(&projectors).await;

    // Four clients stream; the test watches their progress to strike mid-stream.
    let sent = Arc::new(AtomicUsize::new(0));
    let total: usize = (0..CLIENTS).map(|c| batches(c).len()).sum();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (base, token, sent) = (ingest.base.clone(), ingest.token.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for b in batches(c) {
                positions.push(post_until_acknowledged(&base, &token, &b).await);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            positions
        }));
    }
    let wait_for = |fraction: f64| {
        let sent = sent.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while (sent.load(Ordering::Relaxed) as f64) < fraction * total as f64 {
                assert!(Instant::now() < deadline, "the clients stopped sending");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(0.3).await;
    projectors[0].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    projectors[0] = projector("p0");
    wait_for(0.6).await;
    broker.restart();
    let mut positions = Vec::new();
    for c in clients {
        positions.extend(c.await.expect("client"));
    }
    let position = merge_positions(&positions);

    // The views hold exactly what was acknowledged.
    let mut details = Vec::new();
    for r in 0..RUNS {
        let run = format!("run-{r:02}");
        let d = run_detail(&query, &run, &position).await;
        let loss = &d["metrics"]["loss"];
        let values: Vec<f64> = (0..POINTS_PER_RUN).map(|s| value(r, s)).collect();
        assert_eq!(loss["count"], json!(POINTS_PER_RUN), "{run}: {d}");
        assert_eq!(loss["last"], json!(values[values.len() - 1]), "{run}");
        assert_eq!(
            loss["min"],
            json!(values.iter().copied().fold(f64::INFINITY, f64::min)),
            "{run}"
        );
        assert_eq!(
            loss["max"],
            json!(values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            "{run}"
        );
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let got = loss["mean"].as_f64().expect("mean");
        assert!(
            (got - mean).abs() <= 1e-9 * mean.abs().max(1.0),
            "{run}: mean {got} vs {mean}"
        );
        assert_eq!(d["run"]["name"], json!(format!("run {r}")), "{run}");
        details.push(d);
    }

    // Metrics agree: ingest counted every point once, and no partition lags.
    let ingested = metrics(&ingest).await;
    assert_eq!(
        sample(&ingested, "runstream_ingest_points_total"),
        vec![(RUNS as i64 * POINTS_PER_RUN) as f64],
        "{ingested}"
    );
    let projected = metrics(&projectors[1]).await;
    let lags = sample(&projected, "runstream_projector_lag_records");
    assert_eq!(lags, vec![0.0; 4], "{projected}");
    // The two projectors share the partitions: each holds some, together all, once.
    wait_until_shared(&projectors).await;
    let answered = metrics(&query).await;
    assert!(
        answered.contains("route=\"/api/v1/projects/{project}/runs/{run}\",status=\"2xx\""),
        "{answered}"
    );
    for p in &mut projectors {
        p.stop();
    }

    // The embedded default, given the same events, answers the same.
    let embedded = Server::start(&dir.path().join("embedded"));
    let mut positions = Vec::new();
    for c in 0..CLIENTS {
        for b in batches(c) {
            positions.push(post_until_acknowledged(&embedded.base, &embedded.token, &b).await);
        }
    }
    let position = merge_positions(&positions);
    for (r, distributed) in details.iter().enumerate() {
        let run = format!("run-{r:02}");
        let local = run_detail(&embedded, &run, &position).await;
        assert_eq!(local["metrics"], distributed["metrics"], "{run}");
        assert_eq!(local["series"][0]["count"], distributed["series"][0]["count"], "{run}");
        assert_eq!(local["attributes"], distributed["attributes"], "{run}");
    }
}
