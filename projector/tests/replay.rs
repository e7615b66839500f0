//! Projecting a log gives the same views whatever the batch sizes, however often it is
//! interrupted, and whatever duplicates clients appended.

use std::sync::Arc;

use runstream_log::{AppendRecord, EventLog, SqliteLog};
use runstream_projector::{Projector, ProjectorConfig};
use runstream_schema::*;

fn ev(id: u128, run: &str, body: Body) -> Event {
    Event {
        id: EventId(id),
        workspace: WorkspaceId::new("w").unwrap(),
        project: ProjectId::new("p").unwrap(),
        run: RunId::new(run).unwrap(),
        client_time_ms: 1_700_000_000_000 + id as i64,
        ingest_time_ms: 1_700_000_000_000,
        actor: "alice".into(),
        schema_version: SCHEMA_VERSION,
        body,
    }
}

/// The points of one chunk of a run's series: steps out of order; even chunks give each point a
/// time of its step (so a step written again there is overwritten), odd chunks leave the time to
/// the event (so a step written again is a second point of the step).
fn chunk_points(chunk: i64) -> (Vec<i64>, Vec<i64>, Vec<f64>) {
    let steps: Vec<i64> = (0..700).map(|i| (chunk * 500 + i * 7919) % 4000).collect();
    let times = if chunk % 2 == 0 {
        steps.iter().map(|s| 1_600_000_000_000 + s).collect()
    } else {
        vec![]
    };
    let values = steps.iter().map(|s| (*s as f64 + chunk as f64).cos()).collect();
    (steps, times, values)
}

/// A log with several runs, overwrites, steps logged again, deletions, out-of-order steps and a
/// duplicated event.
async fn fill(log: &dyn EventLog) {
    let mut id = 1u128;
    let mut next = || {
        id += 1;
        id
    };
    for r in 0..5 {
        let run = format!("run-{r}");
        let mut batch = vec![
            ev(
                next(),
                &run,
                Body::RunCreated(RunCreated {
                    name: run.clone(),
                    ..Default::default()
                }),
            ),
            ev(
                next(),
                &run,
                Body::AttributesSet(vec![
                    Attribute {
                        path: "params/lr".into(),
                        value: Value::Float(0.1 * r as f64),
                    },
                    Attribute {
                        path: "params/layers".into(),
                        value: Value::Int(r),
                    },
                ]),
            ),
            ev(next(), &run, Body::TagsAdded(vec!["a".into(), "b".into()])),
        ];
        for chunk in 0..6i64 {
            let (steps, times_ms, values) = chunk_points(chunk);
            batch.push(ev(
                next(),
                &run,
                Body::FloatPoints(FloatPoints {
                    series: "loss".into(),
                    steps,
                    times_ms,
                    values,
                }),
            ));
        }
        batch.push(ev(next(), &run, Body::TagsRemoved(vec!["a".into()])));
        batch.push(ev(next(), &run, Body::AttributesDeleted(vec!["params/layers".into()])));
        batch.push(ev(
            next(),
            &run,
            Body::StringLines(StringLines {
                series: "stdout".into(),
                steps: vec![0, 1, 1],
                times_ms: vec![],
                lines: vec!["a".into(), "b".into(), "c".into()],
            }),
        ));
        batch.push(ev(
            next(),
            &run,
            Body::RunState(RunStateChanged {
                state: RunState::Finished,
                message: String::new(),
            }),
        ));
        // A client retry: the same events appended again later.
        let dup = batch[3].clone();
        for chunk in batch.chunks(3) {
            log.append(vec![AppendRecord {
                key: format!("w/p/{run}"),
                payload: encode_batch(chunk),
            }])
            .await
            .unwrap();
        }
        log.append(vec![AppendRecord {
            key: format!("w/p/{run}"),
            payload: encode_batch(&[dup]),
        }])
        .await
        .unwrap();
    }
}

async fn project(log: Arc<dyn EventLog>, config: ProjectorConfig, dir: &std::path::Path, name: &str) -> String {
    let views = runstream_views::open(&format!("sqlite://{}/{name}.db", dir.display()))
        .await
        .unwrap();
    let p = Projector::new(log, views.clone(), config);
    p.catch_up().await.unwrap();
    views.dump().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn any_batch_size_gives_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db"), "events", 3).await.unwrap());
    fill(log.as_ref()).await;
    let big = project(log.clone(), ProjectorConfig::default(), dir.path(), "big").await;
    let tiny = ProjectorConfig {
        max_records: 1,
        max_points: 1,
        ..Default::default()
    };
    let small = project(log.clone(), tiny, dir.path(), "small").await;
    // Per run: each step of the even chunks once, each point of the odd chunks.
    let timed: std::collections::HashSet<i64> = [0, 2, 4].into_iter().flat_map(|c| chunk_points(c).0).collect();
    assert_eq!(
        big.lines().filter(|l| l.starts_with("points\t")).count(),
        5 * (timed.len() + 3 * 700),
        "every distinct (step, time) once per run"
    );
    assert!(big.contains("tags\tw/p\trun-0\tb\n") && !big.contains("tags\tw/p\trun-0\ta\n"));
    assert_eq!(big, small);
}

#[tokio::test(flavor = "multi_thread")]
async fn resuming_from_the_checkpoint_gives_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db"), "events", 2).await.unwrap());
    fill(log.as_ref()).await;
    let whole = project(log.clone(), ProjectorConfig::default(), dir.path(), "whole").await;
    // Stop after every few flushes (a new projector each time, as after a crash) until done.
    let views = runstream_views::open(&format!("sqlite://{}/pieces.db", dir.path().display()))
        .await
        .unwrap();
    let ends = log.end_offsets().await.unwrap();
    for _ in 0..1000 {
        let cp = views.checkpoint().await.unwrap();
        if ends
            .iter()
            .enumerate()
            .all(|(p, e)| cp.get(&(p as u32)).copied().unwrap_or(0) >= *e)
        {
            break;
        }
        let p = Projector::new(
            log.clone(),
            views.clone(),
            ProjectorConfig {
                max_records: 2,
                ..Default::default()
            },
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { p.run(rx).await });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
    assert_eq!(views.dump().await.unwrap(), whole);
}
