//! Throughput of the distributed deployment on one machine: ingest through Kafka and the
//! projector into ClickHouse, against a plain RowBinary insert of the same rows into ClickHouse
//! measured in the same run. The broker (tansu) and the ClickHouse server are real processes on
//! this machine, started by the bench.
//!
//! 1. ingest: 4 concurrent HTTP clients post protobuf batches of 10,000 float points to the real
//!    ingest service over a Kafka log; a batch counts once it is acknowledged (acks=all).
//! 2. projector: a projector folds the whole log into fresh ClickHouse views
//!    (`Projector::catch_up`), printing the consumer lag (records not yet in the views) each
//!    second.
//! 3. baseline: the same points as plain rows (project, run, path, step, time, value, version)
//!    inserted with RowBinary into a table shaped like the views' points table, twice: as many
//!    rows per insert as a projector flush holds at most, and 500,000 per insert; the projector
//!    is measured against the faster.
//!
//! Phases 2 and 3 run in rounds (two by default), the projector each time into views of a fresh
//! database, and the ratio is the best projector figure against the best baseline: on two cores
//! shared by the broker, the server and the bench, a phase of a few seconds moves by a fifth
//! between repetitions, and the best of each side is the least disturbed. Every round's figures
//! are printed. Each ClickHouse phase starts once the server has finished merging what the phase
//! before wrote, so that neither pays for the other's background work.
//!
//! Run: `cargo bench --bench distributed` (`-- --batches N` for the batches per client, default
//! 100: 4,000,000 points; `-- --rounds N`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clickhouse::Row;
use runstream_ingest::{IngestLimits, IngestState};
use runstream_log::EventLog;
use runstream_projector::{Projector, ProjectorConfig};
use runstream_schema::{Body, Event, EventId, FloatPoints, ProjectId, RunCreated, RunId, WorkspaceId, encode_batch};
use runstream_views::registry::Registry;
use runstream_views::{ClickHouseUrl, ViewStore};
use serde::Serialize;

const CLIENTS: usize = 4;
const POINTS_PER_BATCH: usize = 10_000;

fn event(run: &str, body: Body) -> Event {
    Event {
        id: EventId::random(),
        workspace: WorkspaceId::new("default").unwrap(),
        project: ProjectId::new("default").unwrap(),
        run: RunId::new(run).unwrap(),
        client_time_ms: 1_700_000_000_000,
        ingest_time_ms: 0,
        actor: String::new(),
        schema_version: runstream_schema::SCHEMA_VERSION,
        body,
    }
}

fn steps(batch: usize) -> std::ops::Range<i64> {
    let start = (batch * POINTS_PER_BATCH) as i64;
    start..start + POINTS_PER_BATCH as i64
}

fn points_batch(run: &str, batch: usize) -> Vec<u8> {
    let steps: Vec<i64> = steps(batch).collect();
    let times = steps.iter().map(|s| 1_700_000_000_000 + s).collect();
    let values = steps.iter().map(|s| (*s as f64).sin()).collect();
    encode_batch(&[event(
        run,
        Body::FloatPoints(FloatPoints {
            series: "train/loss".into(),
            steps,
            times_ms: times,
            values,
        }),
    )])
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: Vec<u8>) {
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post");
    assert!(
        r.status().is_success(),
        "ingest answered {}: {}",
        r.status(),
        r.text().await.unwrap_or_default()
    );
}

#[derive(Row, Serialize)]
struct PlainPoint<'a> {
    project: &'a str,
    run: &'a str,
    path: &'a str,
    step: i64,
    time_ms: i64,
    value: f64,
    ver: u64,
}

/// Waits (up to a minute) until the server runs no merge.
async fn settle(url: &str) {
    let client = ClickHouseUrl::parse(url).unwrap().client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let merges: u64 = client
            .query("SELECT count() FROM system.merges")
            .fetch_one()
            .await
            .unwrap();
        if merges == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  (the server was still merging after a minute)");
}

/// The same points inserted as plain rows, RowBinary over HTTP, `per_insert` rows per insert.
async fn baseline(url: &str, clients: usize, batches: usize, per_insert: usize) -> f64 {
    let client = ClickHouseUrl::parse(url).unwrap().client();
    client
        .query("CREATE DATABASE IF NOT EXISTS bench_baseline")
        .execute()
        .await
        .unwrap();
    // Each measurement starts from an empty table.
    client
        .query("DROP TABLE IF EXISTS bench_baseline.points")
        .execute()
        .await
        .unwrap();
    settle(url).await;
    client
        .query(
            "CREATE TABLE bench_baseline.points (
                project String, run String, path String, step Int64, time_ms Int64, value Float64, ver UInt64)
             ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step, time_ms)",
        )
        .execute()
        .await
        .unwrap();
    let client = client.with_database("bench_baseline");
    let runs: Vec<String> = (0..clients).map(|c| format!("run-{c}")).collect();
    let started = Instant::now();
    let mut total = 0usize;
    let mut insert = client.insert::<PlainPoint<'_>>("points").await.unwrap();
    for (c, run) in runs.iter().enumerate() {
        for b in 0..batches {
            for s in steps(b) {
                insert
                    .write(&PlainPoint {
                        project: "default/default",
                        run,
                        path: "train/loss",
                        step: s,
                        time_ms: 1_700_000_000_000 + s,
                        value: (s as f64).sin(),
                        ver: (b as u64) << 20 | c as u64,
                    })
                    .await
                    .unwrap();
                total += 1;
                if total.is_multiple_of(per_insert) {
                    insert.end().await.unwrap();
                    insert = client.insert::<PlainPoint<'_>>("points").await.unwrap();
                }
            }
        }
    }
    insert.end().await.unwrap();
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batches: usize = args
        .iter()
        .position(|a| a == "--batches")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let broker = runstream_testkit::Broker::start();
    let log_url = broker.url("bench");
    let views_url = runstream_testkit::clickhouse_url("bench");
    let dir = tempfile::tempdir().unwrap();

    let log = runstream_log::open(&log_url, "events", 4).await.unwrap();
    let registry_log = runstream_log::open(&log_url, "registry", 1).await.unwrap();
    let registry = Arc::new(Registry::new());
    let boot = runstream_ingest::bootstrap(
        registry_log.clone(),
        &registry,
        WorkspaceId::new("default").unwrap(),
        ProjectId::new("default").unwrap(),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    let views = runstream_views::open(&views_url).await.unwrap();
    let blobs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let state = IngestState::new(
        log.clone(),
        registry_log,
        views.clone(),
        blobs,
        registry,
        IngestLimits::default(),
    );
    let app = runstream_ingest::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/api/v1/projects/default/events");
    let client = reqwest::Client::new();

    for c in 0..CLIENTS {
        let body = encode_batch(&[event(&format!("run-{c}"), Body::RunCreated(RunCreated::default()))]);
        post(&client, &url, &boot.token, body).await;
    }
    let bodies: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
        .map(|c| (0..batches).map(|b| points_batch(&format!("run-{c}"), b)).collect())
        .collect();
    let total_points = CLIENTS * batches * POINTS_PER_BATCH;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for bodies in bodies {
        let (client, url, token) = (client.clone(), url.clone(), boot.token.clone());
        tasks.push(tokio::spawn(async move {
            for body in bodies {
                post(&client, &url, &token, body).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingest_rate = total_points as f64 / started.elapsed().as_secs_f64();
    println!("ingest, HTTP protobuf -> Kafka (acks=all): {ingest_rate:>12.0} points/s");

    let flush = ProjectorConfig::for_views(&views_url).max_points;
    // The baseline is the faster of inserts as large as a flush and of half a million rows.
    let mut sizes = vec![flush, 500_000];
    sizes.dedup();
    let mut projected_rates = Vec::new();
    let mut bases: Vec<(usize, f64)> = Vec::new();
    for round in 0..rounds {
        // Fresh views each round: a database of their own.
        let round_url = if round == 0 {
            views_url.clone()
        } else {
            runstream_testkit::clickhouse_url(&format!("bench_round{round}"))
        };
        let views = if round == 0 {
            views.clone()
        } else {
            runstream_views::open(&round_url).await.unwrap()
        };
        settle(&round_url).await;
        let projector = Arc::new(Projector::new(
            log.clone(),
            views.clone(),
            ProjectorConfig::for_views(&round_url),
        ));
        let lag = tokio::spawn(print_lag(log.clone(), views.clone()));
        let started = Instant::now();
        projector.catch_up().await.unwrap();
        let rate = total_points as f64 / started.elapsed().as_secs_f64();
        lag.abort();
        let projected = projector.stats.points.load(Ordering::Relaxed) as usize;
        assert_eq!(projected, total_points, "every point is projected once");
        let mut round_bases = Vec::new();
        for &per_insert in &sizes {
            round_bases.push((per_insert, baseline(&views_url, CLIENTS, batches, per_insert).await));
        }
        let round_base = round_bases.iter().map(|b| b.1).fold(0.0, f64::max);
        println!(
            "  round {}: projector {rate:.0} points/s; baselines {}; {:.0}% of this round's faster",
            round + 1,
            round_bases
                .iter()
                .map(|(n, r)| format!("{r:.0} ({n} per insert)"))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * rate / round_base
        );
        projected_rates.push(rate);
        bases.extend(round_bases);
    }
    let project_rate = projected_rates.iter().copied().fold(0.0, f64::max);
    let best = |n: usize| bases.iter().filter(|b| b.0 == n).map(|b| b.1).fold(0.0, f64::max);
    let base_rate = sizes.iter().map(|&n| best(n)).fold(0.0, f64::max);

    println!(
        "points: {total_points} ({CLIENTS} clients x {batches} batches x {POINTS_PER_BATCH}); best of {rounds} rounds"
    );
    for &per_insert in &sizes {
        println!(
            "plain RowBinary insert into ClickHouse (baseline): {:>12.0} points/s  ({per_insert} rows per insert)",
            best(per_insert)
        );
    }
    println!("ingest, HTTP protobuf -> Kafka (acks=all):         {ingest_rate:>12.0} points/s");
    println!(
        "projector, Kafka -> ClickHouse views:              {project_rate:>12.0} points/s  ({:.0}% of the faster baseline; flushes of up to {flush} points)",
        100.0 * project_rate / base_rate
    );
}

/// Prints the records not yet in the views, per partition, each second.
async fn print_lag(log: Arc<dyn EventLog>, views: Arc<dyn ViewStore>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (Ok(ends), Ok(done)) = (log.end_offsets().await, views.checkpoint().await) else {
            continue;
        };
        let lag: Vec<u64> = ends
            .iter()
            .enumerate()
            .map(|(p, e)| e.saturating_sub(done.get(&(p as u32)).copied().unwrap_or(0)))
            .collect();
        println!(
            "  {:>5.1} s: lag per partition {lag:?}",
            started.elapsed().as_secs_f64()
        );
    }
}
