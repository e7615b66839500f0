//! Ingest and projector throughput on the embedded default, against a plain SQLite insert of the
//! same rows measured in the same run.
//!
//! 1. ingest: 4 concurrent HTTP clients post protobuf batches of 10,000 float points to the real
//!    ingest service; a batch counts once it is acknowledged, i.e. durable in the SQLite log.
//! 2. projector: a fresh views store folds the whole log (`Projector::catch_up`).
//! 3. baseline: the same points inserted as plain rows (series, step, time, value) into a SQLite
//!    table, one transaction per batch of 10,000, with the same durability settings.
//!
//! Run: `cargo bench --bench ingest` (`-- --batches N` to change the batches per client,
//! `-- --only ingest` to stop after the ingest phase).

use std::sync::Arc;
use std::time::Instant;

use runstream_ingest::{IngestLimits, IngestState};
use runstream_projector::{Projector, ProjectorConfig};
use runstream_schema::{Body, Event, EventId, FloatPoints, ProjectId, RunCreated, RunId, WorkspaceId, encode_batch};
use runstream_views::registry::Registry;

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

fn points_batch(run: &str, batch: usize) -> Vec<u8> {
    let start = (batch * POINTS_PER_BATCH) as i64;
    let steps: Vec<i64> = (start..start + POINTS_PER_BATCH as i64).collect();
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

fn baseline(dir: &std::path::Path, clients: usize, batches: usize) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("baseline.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE points (series INTEGER, step INTEGER, time_ms INTEGER, value REAL, PRIMARY KEY (series, step)) WITHOUT ROWID",
    )
    .unwrap();
    let started = Instant::now();
    let mut total = 0usize;
    for c in 0..clients {
        for b in 0..batches {
            let tx = conn.unchecked_transaction().unwrap();
            {
                let mut stmt = tx.prepare_cached("INSERT INTO points VALUES (?1, ?2, ?3, ?4)").unwrap();
                let start = (b * POINTS_PER_BATCH) as i64;
                for s in start..start + POINTS_PER_BATCH as i64 {
                    stmt.execute(rusqlite::params![c as i64, s, 1_700_000_000_000 + s, (s as f64).sin()])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
            total += POINTS_PER_BATCH;
        }
    }
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
        .unwrap_or(50);
    // `--only ingest` stops after the ingest phase (for profiling it alone).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let dir = tempfile::tempdir().unwrap();
    let log_url = format!("sqlite://{}/log.db", dir.path().display());
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
    let ingest_views = runstream_views::open(&format!("sqlite://{}/ingest-views.db", dir.path().display()))
        .await
        .unwrap();
    let blobs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let state = IngestState::new(
        log.clone(),
        registry_log,
        ingest_views,
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

    // Runs are created first (not timed), as a training job does once.
    for c in 0..CLIENTS {
        let body = encode_batch(&[event(&format!("run-{c}"), Body::RunCreated(RunCreated::default()))]);
        post(&client, &url, &boot.token, body).await;
    }
    // Encoding is the client's work, not the server's: prepare the bodies before timing.
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
    if only.as_deref() == Some("ingest") {
        println!("ingest, HTTP protobuf -> durable log: {ingest_rate:>12.0} points/s");
        return;
    }

    let views = runstream_views::open(&format!("sqlite://{}/views.db", dir.path().display()))
        .await
        .unwrap();
    let projector = Projector::new(log, views, ProjectorConfig::default());
    let started = Instant::now();
    projector.catch_up().await.unwrap();
    let project_rate = total_points as f64 / started.elapsed().as_secs_f64();
    let projected = projector.stats.points.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert_eq!(projected, total_points, "every point is projected once");

    let base_dir = dir.path().to_path_buf();
    let base_rate = tokio::task::spawn_blocking(move || baseline(&base_dir, CLIENTS, batches))
        .await
        .unwrap();

    println!("points: {total_points} ({CLIENTS} clients x {batches} batches x {POINTS_PER_BATCH})");
    println!("plain SQLite row insert (baseline): {base_rate:>12.0} points/s");
    println!(
        "ingest, HTTP protobuf -> durable log: {ingest_rate:>12.0} points/s  ({:.2}x baseline)",
        ingest_rate / base_rate
    );
    println!(
        "projector, log -> SQLite views:      {project_rate:>12.0} points/s  ({:.2}x baseline)",
        project_rate / base_rate
    );
}
