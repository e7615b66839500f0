//! The EventLog contract. Every implementation runs these same checks; each backend adds a
//! `#[tokio::test]` that hands its constructor to `contract::*`.

use std::sync::Arc;
use std::time::Duration;

use runstream_log::{AppendRecord, EventLog, KafkaLog, SqliteLog, partition_for};

fn rec(key: &str, payload: &[u8]) -> AppendRecord {
    AppendRecord {
        key: key.to_string(),
        payload: payload.to_vec(),
    }
}

async fn positions_are_dense_and_ordered_per_partition(log: Arc<dyn EventLog>) {
    let n = log.partitions();
    let mut expected = vec![0u64; n as usize];
    for i in 0..50u32 {
        let key = format!("run-{}", i % 7);
        let pos = log
            .append(vec![rec(&key, &i.to_be_bytes()), rec(&key, b"second")])
            .await
            .unwrap();
        let p = partition_for(&key, n);
        assert_eq!(pos.len(), 2);
        assert_eq!((pos[0].partition, pos[0].offset), (p, expected[p as usize]));
        assert_eq!((pos[1].partition, pos[1].offset), (p, expected[p as usize] + 1));
        expected[p as usize] += 2;
    }
    assert_eq!(log.end_offsets().await.unwrap(), expected);
    // Reads return exactly what was appended, in order, from any offset.
    let p = partition_for("run-3", n);
    let all = log.read(p, 0, 10_000).await.unwrap();
    assert_eq!(all.len() as u64, expected[p as usize]);
    assert!(all.windows(2).all(|w| w[1].position.offset == w[0].position.offset + 1));
    let tail = log.read(p, 3, 2).await.unwrap();
    assert_eq!(tail, all[3..5].to_vec());
    assert!(log.read(p, expected[p as usize], 10).await.unwrap().is_empty());
}

async fn concurrent_appends_never_share_a_position(log: Arc<dyn EventLog>) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                out.extend(
                    log.append(vec![rec("same-run", format!("{t}-{i}").as_bytes())])
                        .await
                        .unwrap(),
                );
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200, "every append got its own position");
    let p = partition_for("same-run", log.partitions());
    let read = log.read(p, 0, 1000).await.unwrap();
    assert_eq!(read.len(), 200);
}

async fn waiting_wakes_on_append(log: Arc<dyn EventLog>) {
    let ends = log.end_offsets().await.unwrap();
    let writer = log.clone();
    let start = std::time::Instant::now();
    let handle = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.append(vec![rec("wake", b"x")]).await.unwrap();
    });
    log.wait_for_new(&ends, Duration::from_secs(10)).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken by the append, not the timeout"
    );
    handle.await.unwrap();
    assert_ne!(log.end_offsets().await.unwrap(), ends);
}

#[tokio::test]
async fn sqlite_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteLog::open(dir.path().join("l.db"), "events", 4).await.unwrap());
    positions_are_dense_and_ordered_per_partition(log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteLog::open(dir.path().join("l.db"), "events", 3).await.unwrap());
    concurrent_appends_never_share_a_position(log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteLog::open(dir.path().join("l.db"), "events", 2).await.unwrap());
    waiting_wakes_on_append(log).await;
}

/// A log opened again (by URL, as the binary does) keeps its records and the partition count it
/// was created with, whatever count is asked for; topics are separate streams.
async fn reopening_keeps_records_partitions_and_topics_apart(url: &str) {
    {
        let log = runstream_log::open(url, "events", 4).await.unwrap();
        log.append(vec![rec("a", b"1"), rec("a", b"2")]).await.unwrap();
    }
    let log = runstream_log::open(url, "events", 9).await.unwrap();
    assert_eq!(log.partitions(), 4);
    let p = partition_for("a", 4);
    let back = log.read(p, 0, 10).await.unwrap();
    assert_eq!(
        back.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        vec![b"1".to_vec(), b"2".to_vec()]
    );
    assert_eq!(log.append(vec![rec("a", b"3")]).await.unwrap()[0].offset, 2);
    let other = runstream_log::open(url, "registry", 1).await.unwrap();
    assert_eq!(other.end_offsets().await.unwrap(), vec![0]);
    assert!(runstream_log::open(url, "bad topic", 1).await.is_err());
}

#[tokio::test]
async fn sqlite_survives_reopen_and_keeps_its_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    reopening_keeps_records_partitions_and_topics_apart(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await;
}

/// A file whose records sit in the first layout (a `WITHOUT ROWID` table) opens with every record
/// at its position, and appends go on after them.
#[tokio::test]
async fn sqlite_upgrades_a_log_of_the_first_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
             INSERT INTO topics VALUES ('events', 2);
             CREATE TABLE log_events (
                 partition INTEGER NOT NULL, offset INTEGER NOT NULL, payload BLOB NOT NULL,
                 PRIMARY KEY (partition, offset)) WITHOUT ROWID;
             INSERT INTO log_events VALUES (0, 0, x'0a'), (0, 1, x'0b'), (1, 0, x'1a');",
        )
        .unwrap();
    }
    let log = SqliteLog::open(&path, "events", 2).await.unwrap();
    assert_eq!(log.end_offsets().await.unwrap(), vec![2, 1]);
    let p0: Vec<_> = log
        .read(0, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(p0, vec![vec![0x0a], vec![0x0b]]);
    let p1 = partition_for("x", 2);
    let at = log.append(vec![rec("x", b"new")]).await.unwrap();
    assert_eq!(at[0].offset, if p1 == 0 { 2 } else { 1 });
    let sql: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT sql FROM sqlite_master WHERE name = 'log_events'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
    // Opening again leaves the upgraded table alone.
    drop(log);
    let log = SqliteLog::open(&path, "events", 2).await.unwrap();
    assert_eq!(
        log.read(p1, 0, 10).await.unwrap().last().unwrap().payload,
        b"new".to_vec()
    );
}

/// Appends go to the write-ahead log; a background checkpoint copies them into the database
/// file soon after, so the write-ahead log does not grow without end.
#[tokio::test]
async fn sqlite_checkpoints_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let log = SqliteLog::open(&path, "events", 1).await.unwrap();
    let big = vec![7u8; 256 * 1024];
    for _ in 0..8 {
        log.append(vec![rec("a", &big)]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size > 2 * 1024 * 1024 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "database file still {size} bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.read(0, 0, 10).await.unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_positions() {
    let broker = runstream_testkit::Broker::start();
    let log = Arc::new(KafkaLog::open(&broker.url("positions"), "events", 4).await.unwrap());
    assert_eq!(log.partitions(), 4);
    positions_are_dense_and_ordered_per_partition(log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_concurrency() {
    let broker = runstream_testkit::Broker::start();
    let log = Arc::new(KafkaLog::open(&broker.url("concurrency"), "events", 3).await.unwrap());
    concurrent_appends_never_share_a_position(log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_wait() {
    let broker = runstream_testkit::Broker::start();
    let log = Arc::new(KafkaLog::open(&broker.url("wait"), "events", 2).await.unwrap());
    waiting_wakes_on_append(log).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_keeps_its_partition_count_and_topics_apart() {
    let broker = runstream_testkit::Broker::start();
    reopening_keeps_records_partitions_and_topics_apart(&broker.url("reopen")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_refuses_a_record_past_its_limit_and_appends_none_of_the_batch() {
    let broker = runstream_testkit::Broker::start();
    let log = Arc::new(KafkaLog::open(&broker.url("too-large"), "events", 2).await.unwrap());
    log.append(vec![rec("run-a", b"first")]).await.unwrap();
    let before = log.end_offsets().await.unwrap();
    let huge = vec![7u8; 17 << 20];
    let err = log
        .append(vec![rec("run-a", b"small"), rec("run-b", &huge)])
        .await
        .unwrap_err();
    assert!(matches!(err, runstream_log::LogError::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("send smaller batches"), "{err}");
    assert_eq!(log.end_offsets().await.unwrap(), before);
    // The log goes on taking records of a fitting size.
    log.append(vec![rec("run-b", b"fits")]).await.unwrap();
}

/// Waits until `m` holds `want` partitions (a group settles in seconds), returning them.
async fn settle(m: &mut runstream_log::Membership, want: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = m.partitions();
        if want(&now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "group did not settle: {now:?}");
        let _ = tokio::time::timeout(Duration::from_millis(200), m.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_group_of_one_owns_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), "events", 3).await.unwrap();
    let mut m = log.join("projectors", None).await.unwrap();
    assert_eq!(m.partitions(), vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_group_members_share_the_partitions() {
    let broker = runstream_testkit::Broker::start();
    let url = broker.url("group");
    let a_log = KafkaLog::open(&url, "events", 4).await.unwrap();
    let b_log = KafkaLog::open(&url, "events", 4).await.unwrap();
    let mut a = a_log.join("projectors", None).await.unwrap();
    assert_eq!(settle(&mut a, |p| p.len() == 4).await, vec![0, 1, 2, 3]);

    // A second member takes a share; together they hold each partition exactly once.
    let mut b = b_log.join("projectors", None).await.unwrap();
    let b_share = settle(&mut b, |p| !p.is_empty()).await;
    let a_share = settle(&mut a, |p| p.len() + b_share.len() == 4).await;
    let mut all: Vec<u32> = a_share.iter().chain(&b_share).copied().collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "a {a_share:?}, b {b_share:?}");

    // When it leaves, the first member takes everything back.
    drop(b);
    assert_eq!(settle(&mut a, |p| p.len() == 4).await, vec![0, 1, 2, 3]);
    assert!(a_log.join("bad group name", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_a_named_member_comes_back_to_its_share() {
    let broker = runstream_testkit::Broker::start();
    let url = broker.url("named");
    let a_log = KafkaLog::open(&url, "events", 4).await.unwrap();
    let b_log = KafkaLog::open(&url, "events", 4).await.unwrap();
    let mut a = a_log.join("projectors", Some("a")).await.unwrap();
    let mut b = b_log.join("projectors", Some("b")).await.unwrap();
    let b_share = settle(&mut b, |p| !p.is_empty() && p.len() < 4).await;
    let a_share = settle(&mut a, |p| p.len() + b_share.len() == 4).await;

    // b goes away (a named member does not leave the group on the way) and comes back under its
    // name: it holds its share again, and a's share never moved meanwhile (no rebalance, which
    // would have taken a's partitions away for a moment).
    drop(b);
    let mut b = b_log.join("projectors", Some("b")).await.unwrap();
    assert_eq!(settle(&mut b, |p| !p.is_empty()).await, b_share);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), a.changed())
            .await
            .is_err(),
        "a's share changed: {:?}",
        a.partitions()
    );
    assert_eq!(a.partitions(), a_share);

    for bad in ["", "a b", "ü", &"x".repeat(201)] {
        assert!(a_log.join("projectors", Some(bad)).await.is_err(), "{bad:?}");
    }
}
