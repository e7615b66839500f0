//! The ViewStore contract, run against every implementation.

use std::collections::HashSet;
use std::sync::Arc;

use runstream_schema::{EventId, RunState, Value};
use runstream_views::rollup::Agg;
use runstream_views::*;

fn key(path: &str) -> SeriesKey {
    SeriesKey {
        project: "w/p".into(),
        run: "r1".into(),
        path: path.into(),
    }
}

fn batch(offset: u64, steps: Vec<i64>, values: Vec<f64>, event: u128) -> RowBatch {
    let times = steps.iter().map(|s| 1000 + s).collect();
    RowBatch {
        runs: vec![RunPatch {
            project: "w/p".into(),
            run: "r1".into(),
            created: (offset == 0).then(|| RunCreatedRow {
                name: "first".into(),
                owner: "alice".into(),
                created_ms: 10,
                ..Default::default()
            }),
            state: (offset == 1).then(|| (RunState::Finished, "done".to_string(), 20)),
            updated_ms: 10 + offset as i64,
            ..Default::default()
        }],
        attributes: vec![AttrRow {
            project: "w/p".into(),
            run: "r1".into(),
            path: "params/lr".into(),
            value: Some(Value::Float(0.1 * (offset + 1) as f64)),
        }],
        tags: vec![TagRow {
            project: "w/p".into(),
            run: "r1".into(),
            tag: "t".into(),
            present: true,
        }],
        float_series: vec![FloatSeriesRows {
            key: key("loss"),
            steps,
            times_ms: times,
            values,
        }],
        events: vec![StoredEvent {
            project: "w/p".into(),
            run: "r1".into(),
            id: EventId(event),
            partition: 0,
            offset,
            seq: 0,
            kind: "float_points".into(),
            payload: vec![1, 2, 3],
        }],
        checkpoint: vec![(0, offset + 1)],
        ..Default::default()
    }
}

async fn apply_then_read(store: Arc<dyn ViewStore>) {
    let steps: Vec<i64> = (0..5000).collect();
    let values: Vec<f64> = steps.iter().map(|s| (*s as f64 * 0.01).sin()).collect();
    store.apply(batch(0, steps.clone(), values.clone(), 1)).await.unwrap();
    // A second batch overwrites some steps; rollups must follow the new values.
    let over: Vec<i64> = (1000..1100).collect();
    let over_values: Vec<f64> = over.iter().map(|_| 42.0).collect();
    store.apply(batch(1, over.clone(), over_values, 2)).await.unwrap();
    assert_eq!(store.checkpoint().await.unwrap().get(&0), Some(&2));
    assert!(store.run_exists("w/p", "r1").await.unwrap());
    assert!(!store.run_exists("w/p", "nope").await.unwrap());

    let run = store.get_run("w/p", "r1").await.unwrap().unwrap();
    assert_eq!(run.run.name, "first");
    assert_eq!(run.run.state, "finished");
    assert_eq!(run.run.finished_ms, Some(20));
    assert_eq!(run.attributes, vec![("params/lr".to_string(), Value::Float(0.2))]);
    assert_eq!(run.tags, vec!["t".to_string()]);
    let s = &run.series[0];
    assert_eq!((s.count, s.last_step, s.max), (5000, Some(4999), Some(42.0)));

    let mut expected = values.clone();
    for s in &over {
        expected[*s as usize] = 42.0;
    }
    let pts = store.read_points(&key("loss"), 0, i64::MAX, 100_000).await.unwrap();
    assert_eq!(pts.iter().map(|p| p.value).collect::<Vec<_>>(), expected);

    // Buckets over arbitrary ranges agree with brute force over the raw points.
    for (from, to, n) in [
        (0, 4999, 10),
        (37, 4321, 7),
        (1000, 1099, 1),
        (0, i64::MAX >> 2, 3),
        (4998, 6000, 5),
    ] {
        let got = store.read_buckets(&key("loss"), from, to, n).await.unwrap();
        let mut total = Agg::EMPTY;
        for p in pts.iter().filter(|p| p.step >= from && p.step <= to) {
            total.add(p.step, p.time_ms, p.value);
        }
        assert!(got.len() <= n, "{from}..{to}: {} buckets > {n}", got.len());
        assert_eq!(got.iter().map(|b| b.count).sum::<u64>(), total.count, "{from}..{to}");
        let max = got.iter().filter_map(|b| b.max).fold(f64::NEG_INFINITY, f64::max);
        let min = got.iter().filter_map(|b| b.min).fold(f64::INFINITY, f64::min);
        assert_eq!((min, max), (total.min, total.max), "{from}..{to}");
        assert_eq!(got.last().map(|b| b.last_value), Some(total.last_value), "{from}..{to}");
    }

    let known = store
        .known_events(vec![EventId(1), EventId(2), EventId(3)])
        .await
        .unwrap();
    assert_eq!(known, HashSet::from([EventId(1), EventId(2)]));
    let events = store.run_events("w/p", "r1", None, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![EventId(1), EventId(2)]
    );
    let after = store.run_events("w/p", "r1", Some((0, 0, 0)), 10).await.unwrap();
    assert_eq!(after.len(), 1);
}

async fn reapplying_changes_nothing(store: Arc<dyn ViewStore>) {
    let b0 = batch(0, (0..300).collect(), (0..300).map(|i| i as f64).collect(), 1);
    let b1 = batch(1, vec![5, 7], vec![f64::NAN, f64::INFINITY], 2);
    store.apply(b0).await.unwrap();
    store.apply(b1.clone()).await.unwrap();
    let once = store.dump().await.unwrap();
    assert!(
        once.contains("points\tw/p\tr1\tloss\t7\t1007\tinf"),
        "infinity stored: {once}"
    );
    // The same batch again (a crash between the view commit and the consumer noticing it).
    store.apply(b1).await.unwrap();
    assert_eq!(store.dump().await.unwrap(), once);
}

async fn nan_and_infinities_survive(store: Arc<dyn ViewStore>) {
    store
        .apply(batch(
            0,
            vec![0, 1, 2, 3],
            vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5],
            1,
        ))
        .await
        .unwrap();
    let pts = store.read_points(&key("loss"), 0, 10, 10).await.unwrap();
    assert!(pts[0].value.is_nan());
    assert_eq!(pts[1].value, f64::INFINITY);
    assert_eq!(pts[2].value, f64::NEG_INFINITY);
    assert_eq!(pts[3].value, -0.5);
    let b = store.read_buckets(&key("loss"), 0, 10, 1).await.unwrap();
    assert_eq!(b[0].count, 4);
    assert_eq!((b[0].min, b[0].max), (Some(f64::NEG_INFINITY), Some(f64::INFINITY)));
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn ViewStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = runstream_views::open(&format!("sqlite://{}/v.db", dir.path().display()))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn sqlite_apply_then_read() {
    let (_d, s) = sqlite().await;
    apply_then_read(s).await;
}

#[tokio::test]
async fn sqlite_reapply() {
    let (_d, s) = sqlite().await;
    reapplying_changes_nothing(s).await;
}

#[tokio::test]
async fn sqlite_special_floats() {
    let (_d, s) = sqlite().await;
    nan_and_infinities_survive(s).await;
}
