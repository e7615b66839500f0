//! Crash safety: SIGKILL the server while clients stream points, restart it on the same data
//! folder, and check that every acknowledged batch is there exactly once, that no batch is there
//! in part, and that logging carries on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, event_id, get_json, merge_positions, post_events};
use serde_json::{Value, json};

const PROJECT: &str = "default";
const RUNS: [&str; 2] = ["crash-a", "crash-b"];
const SERIES: &str = "metrics/value";
const PER_BATCH: i64 = 1000;
const T0: i64 = 1_700_000_000_000;
const STREAMERS: usize = 4;
/// Acknowledged batches to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 60;

/// The value of a step of a run: distinct per run, so points landing in the wrong run show up.
fn value(run: usize, step: i64) -> f64 {
    let h = (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    (run as f64 + 1.0) * 1000.0 + (h % 1_000_003) as f64 / 7.0 + step as f64 * 1e-3
}

fn time(run: usize, step: i64) -> i64 {
    T0 + step * 3 + run as i64
}

fn points_event(run: usize, steps: std::ops::Range<i64>) -> (String, Value) {
    let id = event_id();
    let steps: Vec<i64> = steps.collect();
    let ev = json!({
        "id": id, "run": RUNS[run],
        "float_points": {
            "series": SERIES,
            "times_ms": steps.iter().map(|&s| time(run, s)).collect::<Vec<_>>(),
            "values": steps.iter().map(|&s| value(run, s)).collect::<Vec<_>>(),
            "steps": steps,
        }
    });
    (id, ev)
}

/// Batch `i`: steps i*1000 .. i*1000+999 of both runs, as three events (run a in two halves),
/// so one request becomes two log records (one per run) on possibly different partitions.
fn batch(i: u64) -> (Vec<String>, Value) {
    let base = i as i64 * PER_BATCH;
    let half = PER_BATCH / 2;
    let parts = [
        points_event(0, base..base + half),
        points_event(1, base..base + PER_BATCH),
        points_event(0, base + half..base + PER_BATCH),
    ];
    let ids = parts.iter().map(|p| p.0.clone()).collect();
    let events: Vec<Value> = parts.into_iter().map(|p| p.1).collect();
    (ids, json!({ "events": events }))
}

#[derive(Default)]
struct Ledger {
    /// Every batch a client started to send, with its event ids.
    attempted: BTreeMap<u64, Vec<String>>,
    /// The request body of every batch sent, for retries.
    bodies: BTreeMap<u64, Value>,
    /// Batches answered 200, with the position token of the answer.
    acked: BTreeMap<u64, String>,
    /// Answers that are neither 200 nor a dead connection.
    unexpected: Vec<String>,
}

async fn stream(base: String, token: String, next: Arc<AtomicU64>, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("{base}/api/v1/projects/{PROJECT}/events");
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let (ids, body) = batch(i);
        {
            let mut l = ledger.lock().unwrap();
            l.attempted.insert(i, ids);
            l.bodies.insert(i, body.clone());
        }
        let resp = match http.post(&url).bearer_auth(&token).json(&body).send().await {
            Ok(r) => r,
            Err(_) => return, // the server is gone
        };
        let status = resp.status().as_u16();
        let answer: Value = match resp.json().await {
            Ok(v) => v,
            Err(_) => return, // died while answering: not acknowledged
        };
        let mut l = ledger.lock().unwrap();
        if status == 200 && answer["accepted"] == json!(3) {
            l.acked
                .insert(i, answer["position"].as_str().expect("position").to_string());
        } else {
            l.unexpected.push(format!("batch {i}: {status} {answer}"));
            return;
        }
    }
}

/// Every point of a run's series as (step, time, value), in the order the API pages them.
async fn read_points(s: &Server, run: &str, min_position: &str) -> Vec<(i64, i64, f64)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let (status, page) = get_json(
            s,
            &format!(
                "/api/v1/projects/{PROJECT}/runs/{run}/series?path={SERIES}&from_step={from}&limit=25000\
                 &min_position={min_position}&wait_ms=30000"
            ),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let steps = page["steps"].as_array().unwrap();
        let times = page["times_ms"].as_array().unwrap();
        let values = page["values"].as_array().unwrap();
        for i in 0..steps.len() {
            out.push((
                steps[i].as_i64().unwrap(),
                times[i].as_i64().unwrap(),
                values[i].as_f64().expect("finite value"),
            ));
        }
        match page["next_from_step"].as_i64() {
            Some(n) => from = n,
            None => return out,
        }
    }
}

/// How many times each float_points event id appears in a run's event history.
async fn event_id_counts(s: &Server, run: &str, min_position: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut after = String::new();
    loop {
        let (status, page) = get_json(
            s,
            &format!(
                "/api/v1/projects/{PROJECT}/runs/{run}/events?limit=500&after={after}\
                 &min_position={min_position}&wait_ms=30000"
            ),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for e in page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("float_points").is_some())
        {
            *counts.entry(e["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => return counts,
        }
    }
}

/// Checks the points of both runs against the batches; returns the batches found complete.
fn check_batches(
    points: &[Vec<(i64, i64, f64)>; 2],
    attempted: &BTreeMap<u64, Vec<String>>,
    must_have: &BTreeSet<u64>,
) -> BTreeSet<u64> {
    // present[batch] = points found per run
    let mut present: BTreeMap<u64, [i64; 2]> = BTreeMap::new();
    for (run, pts) in points.iter().enumerate() {
        for w in pts.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "{}: steps must come once each, in order: {} then {}",
                RUNS[run],
                w[0].0,
                w[1].0
            );
        }
        for &(step, t, v) in pts {
            let b = (step / PER_BATCH) as u64;
            assert!(
                attempted.contains_key(&b),
                "{}: step {step} belongs to batch {b}, which nobody sent",
                RUNS[run]
            );
            assert_eq!(t, time(run, step), "{}: time of step {step}", RUNS[run]);
            assert_eq!(
                v.to_bits(),
                value(run, step).to_bits(),
                "{}: value of step {step}",
                RUNS[run]
            );
            present.entry(b).or_default()[run] += 1;
        }
    }
    let mut complete = BTreeSet::new();
    for b in attempted.keys() {
        let got = present.get(b).copied().unwrap_or([0, 0]);
        if must_have.contains(b) {
            assert_eq!(
                got,
                [PER_BATCH, PER_BATCH],
                "acknowledged batch {b} must be there in full"
            );
        } else {
            assert!(
                got == [0, 0] || got == [PER_BATCH, PER_BATCH],
                "batch {b} (not acknowledged) is there in part: {got:?} points of {PER_BATCH} per run"
            );
        }
        if got == [PER_BATCH, PER_BATCH] {
            complete.insert(*b);
        }
    }
    complete
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let created: Vec<Value> = RUNS
        .iter()
        .map(|r| json!({"id": event_id(), "run": r, "run_created": {"name": r, "experiment": "crash"}}))
        .collect();
    let (status, body) = post_events(&server, PROJECT, &json!({ "events": created })).await;
    assert_eq!(status, 200, "{body}");

    // ---- stream from several clients, kill the server in the middle ----
    let next = Arc::new(AtomicU64::new(0));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..STREAMERS)
        .map(|_| {
            tokio::spawn(stream(
                server.base.clone(),
                server.token.clone(),
                next.clone(),
                ledger.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        {
            let l = ledger.lock().unwrap();
            assert!(
                l.unexpected.is_empty(),
                "unexpected answers while streaming: {:?}",
                l.unexpected
            );
            if l.acked.len() >= ACKED_BEFORE_KILL {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the clients did not get {ACKED_BEFORE_KILL} batches acknowledged in 40 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a client hung after the kill")
            .unwrap();
    }
    let (attempted, acked, bodies) = {
        let l = ledger.lock().unwrap();
        assert!(l.unexpected.is_empty(), "unexpected answers: {:?}", l.unexpected);
        (l.attempted.clone(), l.acked.clone(), l.bodies.clone())
    };
    let unacked: BTreeSet<u64> = attempted.keys().filter(|b| !acked.contains_key(b)).copied().collect();
    eprintln!(
        "killed with {} batches acknowledged, {} sent but unacknowledged",
        acked.len(),
        unacked.len()
    );
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    // ---- restart on the same folder; read what was acknowledged ----
    let server = Server::start(dir.path());
    let pos = merge_positions(acked.values());
    for run in RUNS {
        let (status, d) = get_json(
            &server,
            &format!("/api/v1/projects/{PROJECT}/runs/{run}?min_position={pos}&wait_ms=30000"),
        )
        .await;
        assert_eq!(status, 200, "{run} after restart: {d}");
    }
    let points = [
        read_points(&server, RUNS[0], &pos).await,
        read_points(&server, RUNS[1], &pos).await,
    ];
    let acked_set: BTreeSet<u64> = acked.keys().copied().collect();
    let complete = check_batches(&points, &attempted, &acked_set);
    assert!(acked_set.is_subset(&complete));

    // Exactly once in the history too: every event of a complete batch once, nothing twice.
    let mut counts = event_id_counts(&server, RUNS[0], &pos).await;
    for (id, n) in event_id_counts(&server, RUNS[1], &pos).await {
        *counts.entry(id).or_insert(0) += n;
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "events recorded twice: {:?}",
        counts.iter().filter(|e| *e.1 > 1).collect::<Vec<_>>()
    );
    for (b, ids) in &attempted {
        let found = ids.iter().filter(|id| counts.contains_key(*id)).count();
        let want = if complete.contains(b) { ids.len() } else { 0 };
        assert_eq!(
            found,
            want,
            "events of batch {b} in the history (complete: {})",
            complete.contains(b)
        );
    }
    // The summaries count each point once.
    let (_, detail) = get_json(&server, &format!("/api/v1/projects/{PROJECT}/runs/{}", RUNS[0])).await;
    assert_eq!(
        detail["metrics"][SERIES]["count"],
        json!(complete.len() as i64 * PER_BATCH),
        "{}",
        detail["metrics"]
    );
    eprintln!(
        "{} unacknowledged batches made it into the log before the kill",
        complete.len() - acked.len()
    );

    // ---- what a client does next: send again, with the same event ids, every batch it has no
    // answer for, and (answer lost on the way) one it had an answer for ----
    let mut tokens = vec![pos.clone()];
    let retried: Vec<u64> = unacked.iter().copied().chain(acked.keys().next().copied()).collect();
    for b in &retried {
        let (status, answer) = post_events(&server, PROJECT, &bodies[b]).await;
        assert_eq!(status, 200, "retry of batch {b}: {answer}");
        tokens.push(answer["position"].as_str().unwrap().to_string());
    }
    let pos = merge_positions(&tokens);
    let points = [
        read_points(&server, RUNS[0], &pos).await,
        read_points(&server, RUNS[1], &pos).await,
    ];
    let all: BTreeSet<u64> = attempted.keys().copied().collect();
    let complete = check_batches(&points, &attempted, &all);
    assert_eq!(complete, all);
    let mut counts = event_id_counts(&server, RUNS[0], &pos).await;
    for (id, n) in event_id_counts(&server, RUNS[1], &pos).await {
        *counts.entry(id).or_insert(0) += n;
    }
    let ids: BTreeSet<&String> = attempted.values().flatten().collect();
    assert_eq!(counts.len(), ids.len(), "every event of every batch in the history");
    assert!(
        counts.iter().all(|(id, &n)| n == 1 && ids.contains(id)),
        "retried events recorded twice: {:?}",
        counts.iter().filter(|e| *e.1 > 1).collect::<Vec<_>>()
    );
    let (_, detail) = get_json(&server, &format!("/api/v1/projects/{PROJECT}/runs/{}", RUNS[1])).await;
    assert_eq!(
        detail["metrics"][SERIES]["count"],
        json!(all.len() as i64 * PER_BATCH),
        "{}",
        detail["metrics"]
    );

    // ---- logging resumes ----
    let first_new = attempted.keys().next_back().unwrap() + 1;
    let mut tokens = vec![pos.clone()];
    let mut new_batches = BTreeSet::new();
    let mut all_attempted = attempted.clone();
    for i in first_new..first_new + 5 {
        let (ids, body) = batch(i);
        let (status, answer) = post_events(&server, PROJECT, &body).await;
        assert_eq!(status, 200, "batch {i} after the restart: {answer}");
        assert_eq!(answer["accepted"], json!(3), "{answer}");
        tokens.push(answer["position"].as_str().unwrap().to_string());
        new_batches.insert(i);
        all_attempted.insert(i, ids);
    }
    let pos2 = merge_positions(&tokens);
    let points = [
        read_points(&server, RUNS[0], &pos2).await,
        read_points(&server, RUNS[1], &pos2).await,
    ];
    let must: BTreeSet<u64> = all.union(&new_batches).copied().collect();
    let complete2 = check_batches(&points, &all_attempted, &must);
    assert_eq!(
        complete2,
        complete.union(&new_batches).copied().collect::<BTreeSet<_>>()
    );
    let (_, detail) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{}?min_position={pos2}", RUNS[1]),
    )
    .await;
    let m = &detail["metrics"][SERIES];
    assert_eq!(m["count"], json!(complete2.len() as i64 * PER_BATCH), "{m}");
    let last = (first_new + 4) as i64 * PER_BATCH + PER_BATCH - 1;
    assert_eq!(m["last_step"], json!(last), "{m}");
    assert_eq!(
        m["last"].as_f64().map(f64::to_bits),
        Some(value(1, last).to_bits()),
        "{m}"
    );
}
