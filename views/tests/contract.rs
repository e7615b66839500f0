//! The ViewStore contract, run against every implementation.

use std::collections::HashSet;
use std::sync::Arc;

use runstream_schema::{EventId, RunState, Value};
use runstream_views::rollup::Agg;
use runstream_views::*;

use runstream_testkit as support;

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
    let pts = store
        .read_points(&key("loss"), PointFrom::step(0), i64::MAX, 100_000)
        .await
        .unwrap();
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

/// A second creation of a run (a client resuming a run it could not tell exists) changes
/// neither its name nor its creation time.
async fn only_the_first_creation_counts(store: Arc<dyn ViewStore>) {
    store.apply(batch(0, vec![0], vec![1.0], 1)).await.unwrap();
    let mut again = batch(2, vec![1], vec![2.0], 2);
    again.runs[0].created = Some(RunCreatedRow {
        name: "renamed".into(),
        owner: "bob".into(),
        created_ms: 99,
        ..Default::default()
    });
    store.apply(again).await.unwrap();
    let run = store.get_run("w/p", "r1").await.unwrap().unwrap();
    assert_eq!(
        (run.run.name.as_str(), run.run.owner.as_str(), run.run.created_ms),
        ("first", "alice", 10)
    );
}

/// A run finished and then running again (a resumed run) reads back unfinished.
async fn a_resumed_run_is_unfinished(store: Arc<dyn ViewStore>) {
    store.apply(batch(0, vec![0], vec![1.0], 1)).await.unwrap();
    store.apply(batch(1, vec![1], vec![2.0], 2)).await.unwrap();
    let run = store.get_run("w/p", "r1").await.unwrap().unwrap();
    assert_eq!((run.run.state.as_str(), run.run.finished_ms), ("finished", Some(20)));
    let mut again = batch(2, vec![2], vec![3.0], 3);
    again.runs[0].state = Some((RunState::Running, String::new(), 30));
    store.apply(again).await.unwrap();
    let run = store.get_run("w/p", "r1").await.unwrap().unwrap();
    assert_eq!((run.run.state.as_str(), run.run.finished_ms), ("running", None));
}

async fn reapplying_changes_nothing(store: Arc<dyn ViewStore>) {
    let b0 = batch(0, (0..300).collect(), (0..300).map(|i| i as f64).collect(), 1);
    let b1 = batch(1, vec![5, 7], vec![f64::NAN, f64::INFINITY], 2);
    store.apply(b0).await.unwrap();
    store.apply(b1.clone()).await.unwrap();
    let once = store.dump().await.unwrap();
    assert!(
        once.contains("points\tw/p\tr1\tloss\t7\t1007\tinf\t7ff0000000000000\n"),
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
    let pts = store
        .read_points(&key("loss"), PointFrom::step(0), 10, 10)
        .await
        .unwrap();
    assert!(pts[0].value.is_nan());
    assert_eq!(pts[1].value, f64::INFINITY);
    assert_eq!(pts[2].value, f64::NEG_INFINITY);
    assert_eq!(pts[3].value, -0.5);
    let b = store.read_buckets(&key("loss"), 0, 10, 1).await.unwrap();
    assert_eq!(b[0].count, 4);
    assert_eq!((b[0].min, b[0].max), (Some(f64::NEG_INFINITY), Some(f64::INFINITY)));
}

/// String series, files and lineage links: written twice over (later writes win), read back.
async fn lines_files_and_lineage(store: Arc<dyn ViewStore>) {
    use runstream_schema::{ArtifactKind, Direction};
    let lines = |offset: u64, steps: Vec<i64>, text: &str, event: u128| {
        let mut b = batch(offset, vec![], vec![], event);
        b.float_series.clear();
        b.string_series = vec![StringSeriesRows {
            key: key("stdout"),
            times_ms: steps.iter().map(|s| 500 + s).collect(),
            lines: steps.iter().map(|s| format!("{text} {s}")).collect(),
            steps,
        }];
        b.files = vec![FileRow {
            project: "w/p".into(),
            run: "r1".into(),
            path: "model.bin".into(),
            step: None,
            blob_key: format!("blob-{text}"),
            size: offset + 10,
            sha256: "ab".repeat(32),
            media_type: "application/octet-stream".into(),
            time_ms: 7,
        }];
        b.lineage = vec![LineageRow {
            project: "w/p".into(),
            run: "r1".into(),
            direction: Direction::Input,
            kind: ArtifactKind::Dataset,
            name: "imagenet".into(),
            version: "v1".into(),
            digest: format!("sha-{text}"),
            uri: "s3://data/imagenet".into(),
            time_ms: 8,
        }];
        b
    };
    store.apply(lines(0, (0..10).collect(), "first", 1)).await.unwrap();
    store.apply(lines(1, vec![5, 20], "second", 2)).await.unwrap();
    let got = store.read_lines(&key("stdout"), 0, 100, 100).await.unwrap();
    assert_eq!(got.len(), 11);
    assert_eq!(got[5].line, "second 5");
    assert_eq!(got[4].line, "first 4");
    assert_eq!((got[10].step, got[10].time_ms), (20, 520));
    assert_eq!(store.read_lines(&key("stdout"), 3, 6, 2).await.unwrap().len(), 2);
    let run = store.get_run("w/p", "r1").await.unwrap().unwrap();
    let s = run.series.iter().find(|s| s.kind == "string").expect("a string series");
    assert_eq!(
        (s.path.as_str(), s.count, s.first_step, s.last_step, s.last_time_ms),
        ("stdout", 11, Some(0), Some(20), Some(520))
    );
    assert_eq!(run.files.len(), 1);
    assert_eq!(run.files[0].blob_key, "blob-second");
    let file = store.get_file("w/p", "r1", "model.bin", None).await.unwrap().unwrap();
    assert_eq!((file.size, file.step), (11, None));
    assert!(
        store
            .get_file("w/p", "r1", "model.bin", Some(0))
            .await
            .unwrap()
            .is_none()
    );
    let by_artifact = store
        .lineage(
            "w/p",
            &LineageOf::Artifact {
                kind: ArtifactKind::Dataset,
                name: "imagenet".into(),
                version: Some("v1".into()),
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(by_artifact.len(), 1);
    assert_eq!(
        (by_artifact[0].run.as_str(), by_artifact[0].digest.as_str()),
        ("r1", "sha-second")
    );
    assert_eq!(run.lineage, by_artifact);

    // Several runs at once: in the order asked, missing ones left out, each as get_run reads it.
    let mut second = batch(2, vec![1, 2], vec![0.5, 0.25], 3);
    second.runs[0].run = "r2".into();
    second.runs[0].created = Some(RunCreatedRow {
        name: "second".into(),
        owner: "bob".into(),
        created_ms: 30,
        ..Default::default()
    });
    second.attributes[0].run = "r2".into();
    second.tags[0].run = "r2".into();
    second.float_series[0].key.run = "r2".into();
    second.events[0].run = "r2".into();
    store.apply(second).await.unwrap();
    let asked = ["r2".to_string(), "nope".to_string(), "r1".to_string()];
    let both = store.get_runs("w/p", &asked).await.unwrap();
    assert_eq!(
        both.iter().map(|d| d.run.run.as_str()).collect::<Vec<_>>(),
        ["r2", "r1"]
    );
    for d in &both {
        let one = store.get_run("w/p", &d.run.run).await.unwrap().unwrap();
        assert_eq!(format!("{d:?}"), format!("{one:?}"));
    }
    assert_eq!(both[0].series.len(), 1);
    assert!(both[0].files.is_empty() && both[0].lineage.is_empty());
    assert_eq!(both[1].files.len(), 1);
    assert!(store.get_runs("w/p", &[]).await.unwrap().is_empty());
}

/// A run read again after each flush sees that flush, whether read alone, with others or with a
/// search page (stores may keep what they read: never past a change).
async fn reads_see_each_flush(store: Arc<dyn ViewStore>) {
    use runstream_views::search::*;
    let lr = |d: &RunDetail| {
        d.attributes
            .iter()
            .find(|(p, _)| p == "params/lr")
            .map(|(_, v)| v.clone())
    };
    let loss_count = |d: &RunDetail| d.series.iter().find(|s| s.path == "loss").map(|s| s.count);
    for offset in 0..6u64 {
        store
            .apply(batch(
                offset,
                vec![offset as i64],
                vec![offset as f64],
                100 + u128::from(offset),
            ))
            .await
            .unwrap();
        let want = (Some(Value::Float(0.1 * (offset + 1) as f64)), Some(offset + 1));
        // Twice each: the second read may come from what the first kept.
        for _ in 0..2 {
            let one = store.get_run("w/p", "r1").await.unwrap().expect("r1");
            assert_eq!((lr(&one), loss_count(&one)), want, "get_run after flush {offset}");
            let many = store
                .get_runs("w/p", &["r1".to_string(), "nope".to_string()])
                .await
                .unwrap();
            assert_eq!(many.len(), 1);
            assert_eq!(
                (lr(&many[0]), loss_count(&many[0])),
                want,
                "get_runs after flush {offset}"
            );
            let (_, found) = store
                .search_run_details(RunSearch {
                    project: "w/p".into(),
                    filter: Filter::True,
                    include_deleted: false,
                    sort: Sort::default(),
                    after: None,
                    limit: 10,
                    columns: Vec::new(),
                })
                .await
                .unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(
                (lr(&found[0]), loss_count(&found[0])),
                want,
                "search after flush {offset}"
            );
        }
        let state = store.get_run("w/p", "r1").await.unwrap().expect("r1").run.state;
        assert_eq!(state == "finished", offset >= 1, "state after flush {offset}");
    }
}

#[tokio::test]
async fn sqlite_reads_see_each_flush() {
    let (_d, s) = sqlite().await;
    reads_see_each_flush(s).await;
}

#[tokio::test]
async fn clickhouse_reads_see_each_flush() {
    reads_see_each_flush(clickhouse("flushes").await).await;
}

/// A point written again in flush after flush (each a version of its own, until merges on
/// ClickHouse) reads back once, with its last value, in whole reads and in pages of any size.
async fn a_point_written_again_reads_once(store: Arc<dyn ViewStore>) {
    let flush = |offset: u64, steps: Vec<i64>, values: Vec<f64>| RowBatch {
        float_series: vec![FloatSeriesRows {
            key: key("loss"),
            times_ms: steps.iter().map(|s| 1000 + s).collect(),
            steps,
            values,
        }],
        checkpoint: vec![(0, offset + 1)],
        ..Default::default()
    };
    store
        .apply(flush(0, (0..6).collect(), (0..6).map(|s| s as f64).collect()))
        .await
        .unwrap();
    // Step 2 at its one time, 150 times: more versions than a read's window holds past its page.
    for k in 1..=150u64 {
        store.apply(flush(k, vec![2], vec![100.0 + k as f64])).await.unwrap();
    }
    let expected: Vec<(i64, i64, f64)> = (0..6)
        .map(|s| (s, 1000 + s, if s == 2 { 250.0 } else { s as f64 }))
        .collect();
    let read =
        |r: Vec<PointRow>| -> Vec<(i64, i64, f64)> { r.into_iter().map(|p| (p.step, p.time_ms, p.value)).collect() };
    let whole = store
        .read_points(&key("loss"), PointFrom::step(0), i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(read(whole), expected);
    for page in [1, 2, 3, 5] {
        let mut got = Vec::new();
        let mut from = PointFrom::step(0);
        loop {
            let rows = read(store.read_points(&key("loss"), from, i64::MAX, page).await.unwrap());
            assert!(rows.len() <= page, "a page of {page} holds {}", rows.len());
            let Some(&(step, time_ms, _)) = rows.last() else { break };
            got.extend(rows);
            from = PointFrom {
                step,
                time_ms: time_ms + 1,
            };
        }
        assert_eq!(got, expected, "pages of {page}");
    }
}

#[tokio::test]
async fn sqlite_point_written_again() {
    let (_d, s) = sqlite().await;
    a_point_written_again_reads_once(s).await;
}

/// ClickHouse views whose `tables` never merge: every version written stays stored, as
/// between merges.
async fn clickhouse_unmerged(name: &str, tables: &[&str]) -> Arc<dyn ViewStore> {
    let url = support::clickhouse_url(name);
    let views = ClickHouseViews::open(&url).await.unwrap();
    let u = ClickHouseUrl::parse(&url).unwrap();
    let client = u.client().with_database(&u.database);
    for table in tables {
        let stop = format!("SYSTEM STOP MERGES {}_{table}", views.generation());
        client.query(&stop).execute().await.unwrap();
    }
    Arc::new(views)
}

#[tokio::test]
async fn clickhouse_point_written_again() {
    a_point_written_again_reads_once(clickhouse_unmerged("again", &["float_points"]).await).await;
}

/// Searches see each attribute's and series summary's latest version: a value set again is
/// found by its new value only, a deleted attribute not at all (its older versions stay stored
/// until merges, and on ClickHouse with merges stopped they stay for good).
async fn searches_see_the_latest_versions(store: Arc<dyn ViewStore>) {
    use runstream_views::search::*;
    let flush = |offset: u64, attrs: Vec<(&str, Option<f64>)>, points: Vec<(&str, i64, f64)>| RowBatch {
        runs: if offset == 0 {
            ["r1", "r2", "r3"]
                .into_iter()
                .map(|run| RunPatch {
                    project: "w/p".into(),
                    run: run.into(),
                    created: Some(RunCreatedRow {
                        name: run.into(),
                        created_ms: 10,
                        ..Default::default()
                    }),
                    updated_ms: 10,
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        },
        attributes: attrs
            .into_iter()
            .map(|(run, v)| AttrRow {
                project: "w/p".into(),
                run: run.into(),
                path: "params/x".into(),
                value: v.map(Value::Float),
            })
            .collect(),
        float_series: points
            .into_iter()
            .map(|(run, step, value)| FloatSeriesRows {
                key: SeriesKey {
                    project: "w/p".into(),
                    run: run.into(),
                    path: "loss".into(),
                },
                steps: vec![step],
                times_ms: vec![1000 + step],
                values: vec![value],
            })
            .collect(),
        checkpoint: vec![(0, offset + 1)],
        ..Default::default()
    };
    store
        .apply(flush(
            0,
            vec![("r1", Some(1.0)), ("r2", Some(5.0)), ("r3", Some(2.0))],
            vec![("r1", 0, 0.5), ("r2", 0, 0.9), ("r3", 0, 0.2)],
        ))
        .await
        .unwrap();
    // r1 set again, r2's deleted; r1's loss goes up, r2's down at a later step.
    store
        .apply(flush(
            1,
            vec![("r1", Some(9.0)), ("r2", None)],
            vec![("r1", 1, 0.95), ("r2", 1, 0.1)],
        ))
        .await
        .unwrap();
    let search = |filter: Filter, field: Field| RunSearch {
        project: "w/p".into(),
        filter,
        include_deleted: false,
        sort: Sort {
            field: field.clone(),
            descending: true,
        },
        after: None,
        limit: 10,
        columns: vec![field],
    };
    let x = || Field::Attr("params/x".into());
    let max_loss = || Field::Metric("loss".into(), MetricAgg::Max);
    let last_loss = || Field::Metric("loss".into(), MetricAgg::Last);
    let gt = |field: Field, v: f64| Filter::Compare {
        field,
        op: Cmp::Gt,
        value: Literal::Number(Number::Float(v)),
    };
    let found = |page: SearchPage| -> Vec<(String, Option<Value>)> {
        page.runs
            .into_iter()
            .map(|r| (r.run.run, r.columns.into_iter().next().flatten()))
            .collect()
    };
    let got = found(store.search_runs(search(gt(x(), 3.0), x())).await.unwrap());
    assert_eq!(got, vec![("r1".to_string(), Some(Value::Float(9.0)))], "params/x > 3");
    let got = found(store.search_runs(search(Filter::Exists(x()), x())).await.unwrap());
    assert_eq!(
        got,
        vec![
            ("r1".to_string(), Some(Value::Float(9.0))),
            ("r3".to_string(), Some(Value::Float(2.0)))
        ],
        "exists params/x"
    );
    // Sorted by the attribute: the run without it (deleted) comes last.
    let got = found(store.search_runs(search(Filter::True, x())).await.unwrap());
    let order: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(order, ["r1", "r3", "r2"], "sorted by params/x: {got:?}");
    let got = found(
        store
            .search_runs(search(gt(max_loss(), 0.92), max_loss()))
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![("r1".to_string(), Some(Value::Float(0.95)))],
        "max(loss) > 0.92"
    );
    let got = found(store.search_runs(search(Filter::True, last_loss())).await.unwrap());
    assert_eq!(
        got,
        vec![
            ("r1".to_string(), Some(Value::Float(0.95))),
            ("r3".to_string(), Some(Value::Float(0.2))),
            ("r2".to_string(), Some(Value::Float(0.1)))
        ],
        "sorted by last(loss)"
    );
}

#[tokio::test]
async fn sqlite_searches_see_the_latest_versions() {
    let (_d, s) = sqlite().await;
    searches_see_the_latest_versions(s).await;
}

#[tokio::test]
async fn clickhouse_searches_see_the_latest_versions() {
    let views = clickhouse_unmerged(
        "latest",
        &["attributes", "attributes_by_path", "series", "series_by_path"],
    )
    .await;
    searches_see_the_latest_versions(views).await;
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
async fn sqlite_first_creation() {
    let (_d, s) = sqlite().await;
    only_the_first_creation_counts(s).await;
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

async fn clickhouse(name: &str) -> Arc<dyn ViewStore> {
    Arc::new(ClickHouseViews::open(&support::clickhouse_url(name)).await.unwrap())
}

#[tokio::test]
async fn clickhouse_apply_then_read() {
    apply_then_read(clickhouse("apply").await).await;
}

#[tokio::test]
async fn clickhouse_first_creation() {
    only_the_first_creation_counts(clickhouse("first").await).await;
}

#[tokio::test]
async fn clickhouse_reapply() {
    reapplying_changes_nothing(clickhouse("reapply").await).await;
}

#[tokio::test]
async fn sqlite_resumed_run() {
    let (_d, s) = sqlite().await;
    a_resumed_run_is_unfinished(s).await;
}

#[tokio::test]
async fn clickhouse_resumed_run() {
    a_resumed_run_is_unfinished(clickhouse("resumed").await).await;
}

#[tokio::test]
async fn sqlite_lines_files_and_lineage() {
    let (_d, s) = sqlite().await;
    lines_files_and_lineage(s).await;
}

#[tokio::test]
async fn clickhouse_lines_files_and_lineage() {
    lines_files_and_lineage(clickhouse("lines").await).await;
}

#[tokio::test]
async fn clickhouse_special_floats() {
    nan_and_infinities_survive(clickhouse("floats").await).await;
}

/// A seeded xorshift, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Many flushes of appends, overwrites, out-of-order fills, far-away steps and steps logged again
/// at other times: after each one the series reads back exactly as a map of (step, time) to its
/// last value, raw, in pages that end inside a step, and in buckets.
async fn random_writes_read_back_like_a_map(store: Arc<dyn ViewStore>, seed: u64) {
    use std::collections::BTreeMap;
    let mut rng = Rng(seed);
    let mut model: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let mut next_append = 0i64;
    let time = |rng: &mut Rng| 1_700_000_000_000 + rng.below(1 << 30) as i64;
    for flush in 0..40u64 {
        let mut pts: BTreeMap<(i64, i64), f64> = BTreeMap::new();
        for _ in 0..1 + rng.below(3) {
            match rng.below(7) {
                // Appends, every step or every other one (leaving gaps to fill later).
                0 | 1 => {
                    let stride = 1 + rng.below(2) as i64;
                    for _ in 0..rng.below(3000) {
                        pts.insert((next_append, time(&mut rng)), 0.0);
                        next_append += stride;
                    }
                }
                // Overwrites of points already written (same step, same time).
                2 => {
                    for _ in 0..rng.below(50) {
                        let at = (rng.below(next_append as u64 + 1) as i64, i64::MIN);
                        if let Some((&k, _)) = model.range(at..).next() {
                            pts.insert(k, 0.0);
                        }
                    }
                }
                // A few far-away steps.
                3 => {
                    for _ in 0..rng.below(4) {
                        pts.insert((1_000_000 + rng.below(1 << 40) as i64, time(&mut rng)), 0.0);
                    }
                }
                // Steps logged again at other times: a few, or one step many times (more points
                // than a block holds, as MLflow's step-less metrics all land at step 0).
                4 => {
                    for _ in 0..rng.below(50) {
                        pts.insert((rng.below(next_append as u64 + 1) as i64, time(&mut rng)), 0.0);
                    }
                }
                5 => {
                    let step = rng.below(next_append as u64 + 1) as i64;
                    for _ in 0..rng.below(1500) {
                        pts.insert((step, time(&mut rng)), 0.0);
                    }
                }
                // A dense burst somewhere in the past.
                _ => {
                    let start = rng.below(next_append.max(1) as u64) as i64;
                    for s in start..start + rng.below(200) as i64 {
                        pts.insert((s, time(&mut rng)), 0.0);
                    }
                }
            }
        }
        for v in pts.values_mut() {
            let bits = match rng.below(10) {
                0 => f64::NAN.to_bits() | rng.below(1 << 20),
                1 => (-0.0f64).to_bits(),
                _ => (rng.below(2_000_000) as f64 / 7.0 - 100_000.0).to_bits(),
            };
            *v = f64::from_bits(bits);
        }
        model.extend(pts.iter().map(|(k, v)| (*k, *v)));
        store
            .apply(RowBatch {
                float_series: vec![FloatSeriesRows {
                    key: key("m"),
                    steps: pts.keys().map(|k| k.0).collect(),
                    times_ms: pts.keys().map(|k| k.1).collect(),
                    values: pts.values().copied().collect(),
                }],
                checkpoint: vec![(0, flush + 1)],
                ..Default::default()
            })
            .await
            .unwrap();

        let exact = |rows: &[PointRow]| -> Vec<(i64, i64, u64)> {
            rows.iter().map(|p| (p.step, p.time_ms, p.value.to_bits())).collect()
        };
        let want: Vec<(i64, i64, u64)> = model.iter().map(|((s, t), v)| (*s, *t, v.to_bits())).collect();
        let all = store
            .read_points(&key("m"), PointFrom::step(0), i64::MAX, usize::MAX >> 1)
            .await
            .unwrap();
        assert_eq!(exact(&all), want, "seed {seed} flush {flush}: every point");

        let (a, b) = (
            rng.below(next_append as u64 + 10) as i64,
            rng.below(next_append as u64 + 10) as i64,
        );
        let (from, to) = (a.min(b), a.max(b));
        // From a step, or from a time within it.
        let start = match rng.below(2) {
            0 => PointFrom::step(from),
            _ => PointFrom {
                step: from,
                time_ms: time(&mut rng),
            },
        };
        let limit = 1 + rng.below(2000) as usize;
        let page = store.read_points(&key("m"), start, to, limit).await.unwrap();
        let want_page: Vec<_> = want
            .iter()
            .filter(|p| start.admits(p.0, p.1) && p.0 <= to)
            .take(limit)
            .copied()
            .collect();
        assert_eq!(
            exact(&page),
            want_page,
            "seed {seed} flush {flush}: {start:?}..={to} limit {limit}"
        );
        // Paging through the whole series, each page resuming after the last point of the one
        // before, even inside a step: every point once.
        if flush % 8 == 7 {
            let limit = want.len() / 6 + 1;
            let mut paged = Vec::new();
            let mut at = PointFrom::step(0);
            loop {
                let page = store.read_points(&key("m"), at, i64::MAX, limit).await.unwrap();
                paged.extend(exact(&page));
                match page.last() {
                    Some(last) if page.len() == limit => {
                        at = PointFrom {
                            step: last.step,
                            time_ms: last.time_ms + 1,
                        }
                    }
                    _ => break,
                }
            }
            assert_eq!(paged, want, "seed {seed} flush {flush}: pages of {limit}");
        }

        let n = 1 + rng.below(300) as usize;
        let got = store.read_buckets(&key("m"), from, to, n).await.unwrap();
        let mut total = Agg::EMPTY;
        for ((s, t), v) in model.range((from, i64::MIN)..=(to, i64::MAX)) {
            total.add(*s, *t, *v);
        }
        assert!(got.len() <= n);
        assert_eq!(
            got.iter().map(|b| b.count).sum::<u64>(),
            total.count,
            "seed {seed} flush {flush}"
        );
        let min = got.iter().filter_map(|b| b.min).fold(f64::INFINITY, f64::min);
        let max = got.iter().filter_map(|b| b.max).fold(f64::NEG_INFINITY, f64::max);
        if total.count > 0 && total.n_values > 0 {
            assert_eq!(
                (min, max),
                (total.min, total.max),
                "seed {seed} flush {flush}: {from}..={to}"
            );
        }
        assert_eq!(
            got.last()
                .map(|b| (b.last_step, b.last_time_ms, b.last_value.to_bits())),
            (total.count > 0).then_some((total.last_step, total.last_time_ms, total.last_value.to_bits())),
            "seed {seed} flush {flush}: last point of {from}..={to}"
        );
    }
}

#[tokio::test]
async fn sqlite_random_writes() {
    for seed in [2, 0x5eed] {
        let (_d, s) = sqlite().await;
        random_writes_read_back_like_a_map(s, seed).await;
    }
}

#[tokio::test]
async fn clickhouse_random_writes() {
    for seed in [2, 0x5eed] {
        random_writes_read_back_like_a_map(clickhouse(&format!("random{seed}")).await, seed).await;
    }
}

/// Flushes go to the write-ahead log; a background checkpoint copies them into the database file
/// soon after, so the write-ahead log does not grow without end.
#[tokio::test]
async fn sqlite_checkpoints_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let store = runstream_views::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for b in 0..4u64 {
        let steps: Vec<i64> = (b as i64 * 50_000..(b as i64 + 1) * 50_000).collect();
        let values = steps.iter().map(|s| *s as f64 * 0.37).collect();
        store.apply(batch(b, steps, values, u128::from(b) + 1)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size > 2 * 1024 * 1024 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "views file still {size} bytes");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Views made by a build before the attributes and series summaries had copies keyed by path
/// and before points were keyed by step and time (schema version 1): opening them with this
/// build fills the copies, searches on attributes and metrics find what they did, and each step
/// keeps its latest point.
#[tokio::test]
async fn clickhouse_migrations_from_version_1() {
    use runstream_views::search::*;
    let url = support::clickhouse_url("migrate");
    let store = ClickHouseViews::open(&url).await.unwrap();
    store.apply(batch(0, vec![0], vec![1.0], 1)).await.unwrap();
    let search = || RunSearch {
        project: "w/p".into(),
        filter: Filter::Compare {
            field: Field::Attr("params/lr".into()),
            op: Cmp::Gt,
            value: Literal::Number(Number::Float(0.05)),
        },
        include_deleted: false,
        sort: Sort {
            field: Field::Attr("params/lr".into()),
            descending: true,
        },
        after: None,
        limit: 10,
        columns: vec![Field::Attr("params/lr".into())],
    };
    let found = |page: SearchPage| -> Vec<(String, Option<Value>)> {
        page.runs
            .into_iter()
            .map(|r| (r.run.run, r.columns.into_iter().next().flatten()))
            .collect()
    };
    let expected = vec![("r1".to_string(), Some(Value::Float(0.1)))];
    assert_eq!(found(store.search_runs(search()).await.unwrap()), expected);
    // The run by its loss summary's max: 1.0 until the flush after the migration.
    let by_loss = |op: Cmp, max: f64| RunSearch {
        filter: Filter::Compare {
            field: Field::Metric("loss".into(), MetricAgg::Max),
            op,
            value: Literal::Number(Number::Float(max)),
        },
        ..search()
    };
    assert_eq!(found(store.search_runs(by_loss(Cmp::Eq, 1.0)).await.unwrap()), expected);

    // Back to version 1: no copy, points keyed by step (step 0 written twice, at two times, in
    // two parts: both versions stored until a merge), the migrations not recorded.
    let u = ClickHouseUrl::parse(&url).unwrap();
    let client = u.client().with_database(&u.database);
    for sql in [
        "DROP TABLE g0_attributes_by_path",
        "DROP TABLE g0_series_by_path",
        "DROP TABLE g0_float_points",
        "CREATE TABLE g0_points (project String, run String, path String, step Int64, time_ms Int64,
         value Float64, ver UInt64) ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step)",
        "INSERT INTO g0_points VALUES ('w/p', 'r1', 'loss', 0, 1000, 1.0, 1), ('w/p', 'r1', 'loss', 3, 1003, 3.0, 1)",
        "INSERT INTO g0_points VALUES ('w/p', 'r1', 'loss', 0, 1009, 2.0, 2)",
        "DROP TABLE g0_migrations",
        "CREATE TABLE g0_migrations (version UInt32) ENGINE = MergeTree ORDER BY version",
        "INSERT INTO g0_migrations (version) VALUES (1)",
    ] {
        client.query(sql).execute().await.unwrap();
    }
    let reopened = ClickHouseViews::open(&url).await.unwrap();
    assert_eq!(found(reopened.search_runs(search()).await.unwrap()), expected);
    assert_eq!(
        found(reopened.search_runs(by_loss(Cmp::Eq, 1.0)).await.unwrap()),
        expected
    );
    let rows = reopened
        .read_points(&key("loss"), PointFrom::step(0), i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|p| (p.step, p.time_ms, p.value)).collect::<Vec<_>>(),
        vec![(0, 1009, 2.0), (3, 1003, 3.0)]
    );
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? AND name = 'g0_points'")
        .bind(&u.database)
        .fetch_all()
        .await
        .unwrap();
    assert!(tables.is_empty(), "the old points table is dropped: {tables:?}");
    // Later writes reach both keyings.
    reopened.apply(batch(1, vec![1], vec![2.0], 2)).await.unwrap();
    let now = vec![("r1".to_string(), Some(Value::Float(0.2)))];
    assert_eq!(found(reopened.search_runs(search()).await.unwrap()), now);
    assert_eq!(found(reopened.search_runs(by_loss(Cmp::Gt, 1.5)).await.unwrap()), now);
    assert!(
        reopened
            .search_runs(by_loss(Cmp::Eq, 1.0))
            .await
            .unwrap()
            .runs
            .is_empty()
    );
}

/// A flush larger than one Native block (65,536 rows) reaches the points table whole, in order,
/// series after series; and the key tables get a row once per process, not once per flush.
#[tokio::test]
async fn clickhouse_large_flushes_and_key_rows() {
    let url = support::clickhouse_url("blocks");
    let store = ClickHouseViews::open(&url).await.unwrap();
    let n = 150_000i64;
    let mut b = batch(0, (0..n).collect(), (0..n).map(|s| s as f64 * 0.5).collect(), 1);
    b.float_series.push(FloatSeriesRows {
        key: key("acc"),
        steps: (0..70_000).collect(),
        times_ms: (0..70_000).map(|s| 1000 + s).collect(),
        values: (0..70_000).map(|s| -(s as f64)).collect(),
    });
    store.apply(b).await.unwrap();
    let loss = store
        .read_points(&key("loss"), PointFrom::step(0), i64::MAX, 1_000_000)
        .await
        .unwrap();
    assert_eq!(loss.len(), n as usize);
    assert!(
        loss.iter()
            .enumerate()
            .all(|(i, p)| p.step == i as i64 && p.time_ms == 1000 + i as i64 && p.value == i as f64 * 0.5),
        "every point in step order with its time and value"
    );
    let acc = store
        .read_points(&key("acc"), PointFrom::step(65_530), 65_540, 100)
        .await
        .unwrap();
    assert_eq!(
        acc.iter().map(|p| (p.step, p.value)).collect::<Vec<_>>(),
        (65_530..=65_540).map(|s| (s, -(s as f64))).collect::<Vec<_>>()
    );

    store.apply(batch(1, vec![n], vec![1.0], 2)).await.unwrap();
    let u = ClickHouseUrl::parse(&url).unwrap();
    let client = u.client().with_database(&u.database);
    let rows = |table: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(&format!("SELECT count() FROM g0_{table}"))
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
    };
    // Two flushes, each with params/lr and loss; acc once: one row per key, merged or not.
    assert_eq!(rows("series_keys").await, 2);
    assert_eq!(rows("attribute_keys").await, 1);
    // Another process writes its first flush's keys again, which changes nothing.
    let other = ClickHouseViews::open(&url).await.unwrap();
    other.apply(batch(2, vec![n + 1], vec![2.0], 3)).await.unwrap();
    assert_eq!(rows("series_keys").await, 3);
    let mut metrics = other.catalog("w/p").await.unwrap().metrics;
    metrics.sort_unstable();
    assert_eq!(metrics, ["acc", "loss"]);
}

/// A bucket read plans with the span it saw last while it asks for the current one: after the
/// series grows, the answer is the one a process that never read it gives, and so it is when
/// the span has not moved.
#[tokio::test]
async fn clickhouse_bucket_reads_follow_the_series_span() {
    let url = support::clickhouse_url("spans");
    let seen = ClickHouseViews::open(&url).await.unwrap();
    seen.apply(batch(0, (0..1000).collect(), (0..1000).map(|s| s as f64).collect(), 1))
        .await
        .unwrap();
    let first = seen.read_buckets(&key("loss"), 0, i64::MAX, 10).await.unwrap();
    assert_eq!(first.iter().map(|b| b.count).sum::<u64>(), 1000);
    seen.apply(batch(
        1,
        (1000..50_000).collect(),
        (1000..50_000).map(|s| -(s as f64)).collect(),
        2,
    ))
    .await
    .unwrap();
    let fresh = ClickHouseViews::open(&url).await.unwrap();
    for (from, to, n) in [(0, i64::MAX, 10), (0, i64::MAX, 10), (500, 40_000, 7), (-5, 999, 3)] {
        let want = fresh.read_buckets(&key("loss"), from, to, n).await.unwrap();
        let got = seen.read_buckets(&key("loss"), from, to, n).await.unwrap();
        assert_eq!(got, want, "{from}..={to} in {n}");
    }
    let all = seen.read_buckets(&key("loss"), 0, i64::MAX, 10).await.unwrap();
    assert!((1..=10).contains(&all.len()), "{}", all.len());
    assert_eq!(all.iter().map(|b| b.count).sum::<u64>(), 50_000);
    assert_eq!(all.last().map(|b| b.last_value), Some(-49_999.0));
}
