//! Query latency on the embedded default (or the ClickHouse views), through the HTTP API.
//!
//! A generator writes 100,000 runs with 100 attributes each (40 float and 20 int parameters, 30
//! string settings, 10 flags), two short metrics, a tag on some, a dataset version each, then one
//! 10,000,000-point series and one 12,500-point series, straight into the views. The query
//! service then answers, over HTTP on localhost:
//!
//! - filtered, sorted first pages of 50 runs with 5 columns (target: median under 30 ms);
//! - 1,000 buckets of the 10M-point series (target: under 10 ms);
//! - the full 12,500-point history of a series (target: under 10 ms);
//! - a grouping of every run by owner, for reference.
//!
//! The baseline, measured in the same run: reading one attribute of every run with a plain
//! SQLite query, the least a tool must do to sort runs client-side. On ClickHouse, each search is
//! also timed as one hand-written statement over the raw rows that finds the same runs.
//!
//! Run: `cargo bench --bench query` (`-- --runs N --points N` for a smaller set, `-- --series-only`
//! for the series figures alone, `-- --clickhouse` for the ClickHouse views in a server started
//! for the run, or `-- --clickhouse-url clickhouse://HOST:PORT/DATABASE` for a server of one's
//! own). The generated SQLite views are kept in target/query-bench and reused while the generator
//! is unchanged; so are the views in a server of one's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runstream_schema::{ArtifactKind, Direction, ProjectId, RunState, Value, WorkspaceId};
use runstream_views::registry::Registry;
use runstream_views::*;

const PROJECT: &str = "default/default";
const T0: i64 = 1_780_000_000_000;
/// Bump when the generated data changes, so cached views are rebuilt.
const GENERATOR: u32 = 1;
const SAMPLES: usize = 40;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

async fn generate(views: &dyn ViewStore, runs: usize, points: usize) {
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1000) {
        let mut b = RowBatch::default();
        for &i in chunk {
            let run = format!("run-{i:06}");
            let created_ms = T0 + i as i64 * 1000;
            let state = match rng.random_range(0..10) {
                0 => RunState::Failed,
                1 | 2 => RunState::Running,
                _ => RunState::Finished,
            };
            b.runs.push(RunPatch {
                project: PROJECT.into(),
                run: run.clone(),
                created: Some(RunCreatedRow {
                    name: format!("resnet-{}", i % 997),
                    experiment: format!("exp-{}", i % 50),
                    parent_run: None,
                    description: String::new(),
                    owner: format!("user-{}", i % 20),
                    created_ms,
                }),
                state: Some((state, String::new(), created_ms + rng.random_range(60_000..7_200_000))),
                heartbeat_ms: None,
                deleted: None,
                updated_ms: created_ms,
            });
            let mut attr = |path: String, value: Value| {
                b.attributes.push(AttrRow {
                    project: PROJECT.into(),
                    run: run.clone(),
                    path,
                    value: Some(value),
                })
            };
            for k in 0..40 {
                attr(format!("params/f{k:02}"), Value::Float(rng.random()));
            }
            for k in 0..20 {
                attr(format!("params/i{k:02}"), Value::Int(rng.random_range(0..100)));
            }
            for k in 0..30 {
                attr(
                    format!("config/s{k:02}"),
                    Value::String(format!("value-{}", rng.random_range(0..10))),
                );
            }
            for k in 0..10 {
                attr(format!("flags/b{k}"), Value::Bool(rng.random()));
            }
            for (path, lo) in [("val/acc", 0.5), ("loss", 0.0)] {
                b.float_series.push(FloatSeriesRows {
                    key: SeriesKey {
                        project: PROJECT.into(),
                        run: run.clone(),
                        path: path.into(),
                    },
                    steps: (0..5).collect(),
                    times_ms: (0..5).map(|s| created_ms + s * 1000).collect(),
                    values: (0..5).map(|_| rng.random_range(lo..1.0)).collect(),
                });
            }
            if rng.random_bool(0.1) {
                b.tags.push(TagRow {
                    project: PROJECT.into(),
                    run: run.clone(),
                    tag: "best".into(),
                    present: true,
                });
            }
            b.lineage.push(LineageRow {
                project: PROJECT.into(),
                run: run.clone(),
                direction: Direction::Input,
                kind: ArtifactKind::Dataset,
                name: "imagenet".into(),
                version: format!("v{}", rng.random_range(1..6)),
                digest: String::new(),
                uri: String::new(),
                time_ms: created_ms,
            });
        }
        b.checkpoint = vec![(0, 1)];
        views.apply(b).await.unwrap();
        if chunk[0] % 10_000 == 0 {
            eprintln!(
                "  {} runs written, {:.0} s",
                chunk[0] + chunk.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    for (path, n) in [("train/loss", points), ("train/acc", 12_500)] {
        let mut step = 0usize;
        while step < n {
            let end = (step + 200_000).min(n);
            let steps: Vec<i64> = (step as i64..end as i64).collect();
            views
                .apply(RowBatch {
                    float_series: vec![FloatSeriesRows {
                        key: SeriesKey {
                            project: PROJECT.into(),
                            run: "run-000000".into(),
                            path: path.into(),
                        },
                        times_ms: steps.iter().map(|s| T0 + s * 10).collect(),
                        values: steps.iter().map(|s| (*s as f64 * 1e-4).sin()).collect(),
                        steps,
                    }],
                    checkpoint: vec![(0, 1)],
                    ..Default::default()
                })
                .await
                .unwrap();
            step = end;
        }
        eprintln!("  series {path}: {n} points, {:.0} s", started.elapsed().as_secs_f64());
    }
}

fn median_p90(mut xs: Vec<Duration>) -> (f64, f64) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(xs[xs.len() / 2]), ms(xs[xs.len() * 9 / 10]))
}

/// The median of `samples` timed calls of `f`, after `warm` untimed ones, in ms.
async fn median_ms<F: std::future::Future<Output = ()>>(samples: usize, warm: usize, mut f: impl FnMut() -> F) -> f64 {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + warm {
        let started = Instant::now();
        f().await;
        if i >= warm {
            times.push(started.elapsed());
        }
    }
    median_p90(times).0
}

struct Bench {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Bench {
    /// Times a request `samples` times after a few warm-ups; checks the answer with `check`.
    async fn time(
        &self,
        what: &str,
        samples: usize,
        target_ms: Option<f64>,
        req: impl Fn() -> reqwest::RequestBuilder,
        check: impl Fn(&serde_json::Value),
    ) -> f64 {
        let mut times = Vec::with_capacity(samples);
        let warm = if samples < 5 { 1 } else { 3 };
        for i in 0..samples + warm {
            let started = Instant::now();
            let r = req().bearer_auth(&self.token).send().await.unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            let elapsed = started.elapsed();
            assert!(
                status.is_success(),
                "{what}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            if i == 0 {
                check(&serde_json::from_slice(&body).unwrap());
            }
            if i >= warm {
                times.push(elapsed);
            }
        }
        let (median, p90) = median_p90(times);
        let target = target_ms.map(|t| format!("  (target < {t} ms)")).unwrap_or_default();
        println!("{what:<72} median {median:>7.2} ms  p90 {p90:>7.2} ms{target}");
        median
    }

    fn search(&self, body: serde_json::Value) -> impl Fn() -> reqwest::RequestBuilder + '_ {
        move || {
            self.client
                .post(format!("{}/api/v1/projects/default/runs:search", self.base))
                .json(&body)
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let points: usize = arg(&args, "--points")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/query-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let stamp = format!("generator {GENERATOR}, {runs} runs, {points} points\n");
    let views_path = dir.join("views.db");
    let stamp_path = dir.join("generated");
    let reuse = std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str());
    let own_clickhouse = arg(&args, "--clickhouse-url");
    let clickhouse = own_clickhouse.is_some() || args.iter().any(|a| a == "--clickhouse");
    // The SQLite views kept here are the embedded run's alone: a ClickHouse run leaves them be.
    if !reuse && !clickhouse {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("views.db{ext}")));
        }
        let _ = std::fs::remove_file(&stamp_path);
    }
    // `--clickhouse`: the same data and queries over the ClickHouse views, in a server started
    // for the run (its data goes with it, so it is generated every time).
    // `--clickhouse-url URL`: the views in a server of one's own, kept between runs and reused
    // while the generator is unchanged (its stamp is kept in the database, beside the data, so
    // that any build finds it).
    let (views, baseline): (Arc<dyn ViewStore>, Baseline) = if clickhouse {
        let url = own_clickhouse
            .clone()
            .unwrap_or_else(|| runstream_testkit::clickhouse_url("querybench"));
        let parsed = runstream_views::ClickHouseUrl::parse(&url).unwrap();
        let (database, http) = (parsed.database.clone(), parsed.http.clone());
        eprintln!("views in ClickHouse: {url}");
        (
            runstream_views::open(&url).await.unwrap(),
            Baseline::ClickHouse { http, database },
        )
    } else {
        (
            Arc::new(SqliteViews::open(&views_path).await.unwrap()),
            Baseline::Sqlite(views_path.clone()),
        )
    };
    let reuse = match &baseline {
        Baseline::ClickHouse { http, database } if own_clickhouse.is_some() => {
            let found = clickhouse_sql(http, &format!("SELECT stamp FROM {database}.query_bench_stamp")).await;
            let reuse = found.ok().as_deref() == Some(stamp.as_str());
            // Generating again on top of an earlier generation would keep both copies, as
            // versions of the same keys: the figures would be of other data.
            if !reuse && views.run_exists(PROJECT, "run-000000").await.unwrap() {
                panic!(
                    "{database} holds runs that another generator or size wrote: drop it \
                     (DROP DATABASE {database}) or name another database"
                );
            }
            reuse
        }
        _ => reuse && !clickhouse,
    };
    if reuse {
        match &baseline {
            Baseline::ClickHouse { database, .. } => eprintln!("reusing the views generated in {database}"),
            Baseline::Sqlite(_) => eprintln!("reusing the views generated in {}", dir.display()),
        }
    } else {
        eprintln!("generating {runs} runs x 100 attributes and a {points}-point series ...");
        let started = Instant::now();
        generate(views.as_ref(), runs, points).await;
        match &baseline {
            Baseline::Sqlite(_) => std::fs::write(&stamp_path, &stamp).unwrap(),
            Baseline::ClickHouse { http, database } if own_clickhouse.is_some() => {
                for sql in [
                    format!("CREATE TABLE IF NOT EXISTS {database}.query_bench_stamp (stamp String) ENGINE = TinyLog"),
                    format!(
                        "INSERT INTO {database}.query_bench_stamp VALUES ('{}')",
                        stamp.trim_end()
                    ),
                ] {
                    clickhouse_sql(http, &sql).await.unwrap();
                }
            }
            Baseline::ClickHouse { .. } => {}
        }
        eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
    }

    let tmp = tempfile::tempdir().unwrap();
    let log_url = format!("sqlite://{}/log.db", tmp.path().display());
    let log = runstream_log::open(&log_url, "events", 1).await.unwrap();
    let registry_log = runstream_log::open(&log_url, "registry", 1).await.unwrap();
    let registry = Arc::new(Registry::new());
    let boot = runstream_ingest::bootstrap(
        registry_log,
        &registry,
        WorkspaceId::new("default").unwrap(),
        ProjectId::new("default").unwrap(),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    let blobs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
    {
        use runstream_views::search::*;
        let mut times = Vec::new();
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let page = views
                .search_runs(RunSearch {
                    project: PROJECT.into(),
                    filter: Filter::True,
                    include_deleted: false,
                    sort: Sort::default(),
                    after: None,
                    limit: 50,
                    columns: Vec::new(),
                })
                .await
                .unwrap();
            assert_eq!(page.runs.len(), runs.min(50));
            times.push(started.elapsed());
        }
        let (m, _) = median_p90(times);
        let mut times = Vec::new();
        for _ in 0..SAMPLES {
            let started = Instant::now();
            views.catalog(PROJECT).await.unwrap();
            times.push(started.elapsed());
        }
        let (c, _) = median_p90(times);
        println!("floor without HTTP: views search {m:.2} ms, catalog {c:.2} ms");
        let key = |path: &str| runstream_views::SeriesKey {
            project: PROJECT.into(),
            run: "run-000000".into(),
            path: path.into(),
        };
        let (mut buckets, mut history) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let n = views
                .read_buckets(&key("train/loss"), 0, runstream_schema::MAX_STEP, 1000)
                .await
                .unwrap()
                .len();
            assert!(n > 0);
            buckets.push(started.elapsed());
            let started = Instant::now();
            let n = views
                .read_points(
                    &key("train/acc"),
                    PointFrom::step(0),
                    runstream_schema::MAX_STEP,
                    12_500,
                )
                .await
                .unwrap()
                .len();
            assert_eq!(n, 12_500);
            history.push(started.elapsed());
        }
        println!(
            "floor without HTTP: 1,000 buckets {:.2} ms, 12,500-point history {:.2} ms",
            median_p90(buckets).0,
            median_p90(history).0
        );
    }
    let app = runstream_query::router(runstream_query::QueryState {
        views,
        log,
        blobs,
        registry,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let b = Bench {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
        token: boot.token,
    };

    // `--series-only` skips the searches, their baseline and the grouping.
    let series_only = args.iter().any(|a| a == "--series-only");
    if !series_only {
        search_figures(&b, &baseline, runs).await;
    }
    let series = |path: &'static str, query: &'static str| {
        let url = format!(
            "{}/api/v1/projects/default/runs/run-000000/series?path={path}&{query}",
            b.base
        );
        let client = b.client.clone();
        move || client.get(&url)
    };
    b.time(
        &format!("series: {points} points in 1,000 buckets"),
        SAMPLES,
        Some(10.0),
        series("train/loss", "buckets=1000"),
        |v| {
            // At most 1,000: the rollup level that serves the read sets the bucket edges (and a
            // short series, `--points`, may have fewer points than buckets).
            let n = v["buckets"].as_array().map_or(0, Vec::len);
            let least = if points >= 1_000_000 { 500 } else { 1 };
            assert!((least..=1000).contains(&n), "{n} buckets");
            println!("  (the answer holds {n} buckets)");
        },
    )
    .await;
    b.time(
        "series: full history of a 12,500-point series",
        SAMPLES,
        Some(10.0),
        series("train/acc", "limit=12500"),
        |v| assert_eq!(v["steps"].as_array().map(Vec::len), Some(12_500)),
    )
    .await;
    if !series_only {
        b.time(
            &format!("groups: all {runs} runs by owner, 2 aggregates"),
            // Seconds each at 100,000 runs: every run's values are read one by one.
            2,
            None,
            || {
                b.client
                    .post(format!("{}/api/v1/projects/default/runs:groups", b.base))
                    .json(&serde_json::json!({
                        "group_by": "owner", "aggregates": ["max(metric.val/acc)", "attr.params/f00"]
                    }))
            },
            // Twenty owners, each of whom a small set (`--runs`) may lack.
            |v| {
                let n = v["groups"].as_array().map_or(0, Vec::len);
                if runs >= 1_000 {
                    assert_eq!(n, 20, "{v}");
                } else {
                    assert!((1..=20).contains(&n), "{v}");
                }
            },
        )
        .await;
    }
}

/// A statement's answer from a ClickHouse server's HTTP interface, or the server's error.
async fn clickhouse_sql(http: &str, sql: &str) -> Result<String, String> {
    let response = reqwest::Client::new()
        .post(http)
        .body(sql.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if ok { Ok(text) } else { Err(text) }
}

/// The least a tool must do to sort runs client-side: read one attribute of every run with a
/// plain query of the store, measured in the same run.
enum Baseline {
    Sqlite(PathBuf),
    ClickHouse { http: String, database: String },
}

impl Baseline {
    /// Reads `params/f12` of every run; the number of runs read.
    async fn read(&self) -> usize {
        match self {
            Baseline::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn
                    .prepare_cached("SELECT run, f FROM attributes WHERE project = ?1 AND path = 'params/f12'")
                    .unwrap();
                stmt.query_map([PROJECT], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<f64>>(1)?)))
                    .unwrap()
                    .count()
            }
            Baseline::ClickHouse { http, database } => {
                let sql = format!(
                    "SELECT run, f FROM {database}.g0_attributes WHERE project = '{PROJECT}' AND path = 'params/f12' FORMAT TSV"
                );
                clickhouse_sql(http, &sql).await.unwrap().lines().count()
            }
        }
    }
}

/// The searches, their baseline and the ratio between them.
async fn search_figures(b: &Bench, baseline_source: &Baseline, runs: usize) {
    // Seconds per sample at 100,000 runs: a few samples say enough.
    let baseline = median_ms(5, 1, || async { assert_eq!(baseline_source.read().await, runs) }).await;
    let store = match baseline_source {
        Baseline::Sqlite(_) => "plain SQLite",
        Baseline::ClickHouse { .. } => "plain ClickHouse",
    };
    println!(
        "{:<72} median {baseline:>7.2} ms",
        format!("baseline: one attribute of all {runs} runs, {store}")
    );

    let columns = serde_json::json!([
        "attr.params/f00",
        "attr.config/s01",
        "max(metric.val/acc)",
        "metric.loss",
        "owner"
    ]);
    // At full size every search fills its page; a smaller set (`--runs`) may leave the most
    // selective ones a few runs short, but from 1,000 runs never none; below that, a search may
    // find nothing.
    let full_page = move |v: &serde_json::Value| {
        let n = v["runs"].as_array().map_or(0, Vec::len);
        if runs >= 10_000 {
            assert_eq!(n, 50, "expected a full page: {v}");
        } else if runs >= 1_000 {
            assert!(n > 0, "expected runs: {v}");
        }
    };
    // Each search, with the same runs asked of ClickHouse in one hand-written statement over the
    // raw rows: no merge to the latest versions (every key of the generated data has one version,
    // so the answer is the same, which is checked), no page columns. Timed beside the search on
    // ClickHouse, it shows what the search's reads cost on the server at hand before versions
    // and columns are added. `{t}` is the tables' prefix, `{p}` the project.
    let searches = [
        (
            "used(dataset, 'imagenet', 'v3') and max(metric.val/acc) > 0.93",
            "created desc",
            "SELECT run FROM {t}runs WHERE project = {p} \
             AND run IN (SELECT run FROM {t}lineage_by_artifact WHERE project = {p} AND kind = 'dataset' \
             AND name = 'imagenet' AND version = 'v3' AND direction = 'input') \
             AND run IN (SELECT run FROM {t}series_by_path WHERE project = {p} AND path = 'val/acc' \
             AND kind = 'float' AND max > 0.93) \
             ORDER BY created_ms DESC, run DESC LIMIT 50",
        ),
        (
            "attr.params/f07 > 0.5 and attr.config/s03 = 'value-3'",
            "max(metric.val/acc) desc",
            "SELECT run FROM {t}series_by_path WHERE project = {p} AND path = 'val/acc' AND kind = 'float' \
             AND run IN (SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'params/f07' AND f > 0.5) \
             AND run IN (SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'config/s03' \
             AND s = 'value-3') \
             ORDER BY max DESC, run DESC LIMIT 50",
        ),
        (
            "state = 'finished' and attr.params/i04 < 50",
            "attr.params/f12 asc",
            "SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'params/f12' \
             AND run IN (SELECT run FROM {t}runs WHERE project = {p} AND state = 'finished') \
             AND run IN (SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'params/i04' AND i < 50) \
             ORDER BY f ASC, run ASC LIMIT 50",
        ),
        (
            "attr.params/f01 < 0.002 or tag = 'best' and attr.flags/b1 = true",
            "name asc",
            "SELECT run FROM {t}runs WHERE project = {p} \
             AND (run IN (SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'params/f01' AND f < 0.002) \
             OR run IN (SELECT run FROM {t}tags WHERE project = {p} AND tag = 'best' AND present = 1) \
             AND run IN (SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'flags/b1' AND i = 1)) \
             ORDER BY name ASC, run ASC LIMIT 50",
        ),
        (
            "mean(metric.loss) between 0.25 and 0.75 and not owner in ('user-1', 'user-2')",
            "attr.params/f03 desc",
            "SELECT run FROM {t}attributes_by_path WHERE project = {p} AND path = 'params/f03' \
             AND run IN (SELECT run FROM {t}series_by_path WHERE project = {p} AND path = 'loss' AND kind = 'float' \
             AND sum / n_values BETWEEN 0.25 AND 0.75) \
             AND run IN (SELECT run FROM {t}runs WHERE project = {p} AND owner NOT IN ('user-1', 'user-2')) \
             ORDER BY f DESC, run DESC LIMIT 50",
        ),
    ];
    b.time(
        "floor: first page, no filter, newest first, no columns",
        SAMPLES,
        None,
        b.search(serde_json::json!({"limit": 50})),
        full_page,
    )
    .await;
    let mut medians = Vec::new();
    for (filter, sort, raw) in searches {
        let body = serde_json::json!({"filter": filter, "sort": sort, "limit": 50, "columns": columns});
        let what = format!("search: {filter} | {sort}");
        let what = if what.len() > 72 {
            format!("{}...", &what[..69])
        } else {
            what
        };
        medians.push(
            b.time(&what, SAMPLES, Some(30.0), b.search(body.clone()), full_page)
                .await,
        );
        if let Baseline::ClickHouse { http, database } = baseline_source {
            let sql = raw
                .replace("{t}", &format!("{database}.g0_"))
                .replace("{p}", &format!("'{PROJECT}'"))
                + " FORMAT TSV";
            let page = b.search(body)().bearer_auth(&b.token).send().await.unwrap();
            let page: serde_json::Value = page.json().await.unwrap();
            let found: Vec<&str> = page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run"].as_str().unwrap())
                .collect();
            let raw_runs = clickhouse_sql(http, &sql).await.unwrap();
            assert_eq!(
                raw_runs.lines().collect::<Vec<_>>(),
                found,
                "the raw statement must find the search's runs: {sql}"
            );
            let median = median_ms(SAMPLES, 3, || async {
                clickhouse_sql(http, &sql).await.unwrap();
            })
            .await;
            println!(
                "{:<72} median {median:>7.2} ms",
                "  the same runs, one ClickHouse statement over raw rows, no columns"
            );
        }
    }
    medians.sort_by(f64::total_cmp);
    let median = medians[medians.len() / 2];
    let ratio = if median <= baseline {
        format!("{:.1}x faster than the baseline", baseline / median)
    } else {
        format!("{:.1}x slower than the baseline", median / baseline)
    };
    println!(
        "{:<72} median {median:>7.2} ms  ({ratio})",
        "first page, median over the searches above"
    );
}
