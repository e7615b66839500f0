//! Analytics SQL over HTTP against the real binary: the documented views answer, confined to the
//! caller's projects, and a corpus of hostile queries (other projects' rows, stored tables,
//! system tables, table functions, several statements, comments that hide text, writes, very
//! long or slow queries) is each refused with a 400 naming `sql`, or confined.

mod common;

use common::{ADMIN_TOKEN, Server, client, event_id, post_events};
use serde_json::{Value, json};

async fn sql(s: &Server, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(s.url("/api/v1/sql"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post sql");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn admin_post(s: &Server, path: &str, body: Value) -> Value {
    let r = client()
        .post(s.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {v}");
    v
}

/// Projects `a` (runs ra1, ra2) and `b` (run rb, whose attribute holds a secret); returns the
/// position to wait for and a token that can read `a` only.
async fn setup(s: &Server) -> (String, String) {
    let mut positions = Vec::new();
    for p in ["a", "b"] {
        admin_post(s, "/api/v1/projects", json!({"name": p})).await;
    }
    for (p, run, secret) in [("a", "ra1", "open-1"), ("a", "ra2", "open-2"), ("b", "rb", "secret-b")] {
        let batch = json!({"events": [
            {"id": event_id(), "run": run, "run_created": {"name": format!("name-{run}")}},
            {"id": event_id(), "run": run, "attributes_set": {"attributes": {"params": {"lr": 0.5, "note": secret}}}},
            {"id": event_id(), "run": run, "float_points": {"series": "loss", "steps": [0, 1, 100], "values": [3.0, 2.0, 1.0]}},
            {"id": event_id(), "run": run, "string_lines": {"series": "log", "steps": [0], "lines": [format!("line {secret}")]}},
            {"id": event_id(), "run": run, "tags_added": {"tags": [format!("tag-{secret}")]}},
            {"id": event_id(), "run": run, "lineage": {"direction": "input", "kind": "dataset", "name": format!("data-{secret}"), "version": "v1"}},
            {"id": event_id(), "run": run, "run_state": {"state": "finished"}},
        ]});
        let (st, v) = post_events(s, p, &batch).await;
        assert_eq!(st, 200, "seeding {p}: {v}");
        positions.push(v["position"].as_str().expect("position").to_string());
    }
    let token = admin_post(
        s,
        "/api/v1/tokens",
        json!({"principal": "a-viewer", "grants": [{"project": "a", "role": "viewer"}]}),
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_string();
    (common::merge_positions(&positions), token)
}

#[tokio::test(flavor = "multi_thread")]
async fn views_answer_confined_to_the_callers_projects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let (position, viewer) = setup(&s).await;

    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT project, run, name, state FROM runs ORDER BY run", "min_position": position}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["columns"], json!(["project", "run", "name", "state"]));
    assert_eq!(
        v["rows"],
        json!([
            ["a", "ra1", "name-ra1", "finished"],
            ["a", "ra2", "name-ra2", "finished"]
        ])
    );
    assert_eq!(v["projects"], json!(["a"]));
    assert_eq!(v["truncated"], false);

    // The admin token reads every project, or the ones it names.
    let q = "SELECT project, count(*) FROM runs GROUP BY project ORDER BY project";
    let (st, v) = sql(&s, ADMIN_TOKEN, json!({ "sql": q })).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], json!([["a", 2], ["b", 1]]));
    let (_, v) = sql(&s, ADMIN_TOKEN, json!({"sql": q, "projects": ["b"]})).await;
    assert_eq!(v["rows"], json!([["b", 1]]));

    // Every documented view answers with its documented columns.
    every_view_answers(&s, &viewer).await;

    // A question of the kind the views are for: mean of the last loss per optimizer note, with
    // the rollup of the first 64 steps.
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT a.value, s.last_value, s.mean, r.count
                        FROM attributes a JOIN series s USING (project, run)
                        JOIN rollups r ON r.run = s.run AND r.path = s.path AND r.level = 0 AND r.bucket = 0
                        WHERE a.path = 'params/note' AND s.path = 'loss' ORDER BY a.value"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], json!([["open-1", 1.0, 2.0, 2], ["open-2", 1.0, 2.0, 2]]));

    // Row limits cut the answer and say so; bad bounds are 400s naming their field.
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 50) SELECT x FROM n",
               "max_rows": 10}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(10));
    assert_eq!(v["truncated"], true);
    for (body, field) in [
        (json!({"sql": "SELECT 1", "max_rows": 0}), "max_rows"),
        (json!({"sql": "SELECT 1", "timeout_ms": 3_600_000}), "timeout_ms"),
        (json!({"sql": 5}), "sql"),
        (json!({}), "sql"),
        (json!({"sql": "SELECT 1", "limit": 5}), "limit"),
    ] {
        let (st, v) = sql(&s, &viewer, body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{body}: {v}"
        );
    }

    // Naming a project the token cannot read is forbidden, not an empty answer.
    let (st, v) = sql(&s, &viewer, json!({"sql": "SELECT 1", "projects": ["b"]})).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"]["code"], "permission_denied");
}

/// Every documented view answers `viewer` with its documented columns, none of project b's rows,
/// and rows (but for `files`, which the setup leaves empty).
async fn every_view_answers(s: &Server, viewer: &str) {
    for (view, columns) in [
        (
            "runs",
            "project run name experiment parent_run description owner state state_message created_ms updated_ms \
             finished_ms heartbeat_ms duration_s deleted",
        ),
        ("attributes", "project run path type value"),
        ("tags", "project run tag"),
        (
            "series",
            "project run path kind count n_values min max mean first_step last_step last_value last_time_ms",
        ),
        (
            "rollups",
            "project run path level width bucket start_step count n_values min max mean first_step last_step \
             last_value last_time_ms",
        ),
        ("lines", "project run path step time_ms line"),
        ("files", "project run path step size sha256 media_type time_ms"),
        ("lineage", "project run direction kind name version digest uri time_ms"),
    ] {
        let (st, v) = sql(s, viewer, json!({"sql": format!("SELECT * FROM {view}")})).await;
        assert_eq!(st, 200, "{view}: {v}");
        let columns: Vec<&str> = columns.split_whitespace().collect();
        assert_eq!(v["columns"], json!(columns), "{view}");
        let text = v["rows"].to_string();
        assert!(
            !text.contains("secret") && !text.contains("\"rb\""),
            "{view} leaks b: {text}"
        );
        if view != "files" {
            assert!(!v["rows"].as_array().expect("rows").is_empty(), "{view} is empty");
        }
    }
}

/// What a hostile query must get: confined (200, none of project b's rows) or refused (400
/// naming `sql`, its message holding the text given, at the position given if any).
enum Expect {
    Confined,
    Refused(&'static str, Option<usize>),
}
use Expect::{Confined, Refused};

#[tokio::test(flavor = "multi_thread")]
async fn hostile_queries_are_refused_or_confined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let (position, viewer) = setup(&s).await;
    let (st, v) = sql(&s, &viewer, json!({"sql": "SELECT 1", "min_position": position})).await;
    assert_eq!(st, 200, "{v}");

    let long = format!("SELECT {}1", "1 + ".repeat(20_000));
    let deep = format!("SELECT {}1{}", "1 + (".repeat(2000), ")".repeat(2000));
    let corpus: Vec<(String, Expect)> = vec![
        // Other projects' rows through the views.
        ("SELECT * FROM runs WHERE project = 'b'".into(), Confined),
        ("SELECT * FROM runs WHERE run = 'rb' OR 1 = 1".into(), Confined),
        ("SELECT * FROM attributes WHERE value LIKE 'secret%'".into(), Confined),
        (
            "SELECT * FROM runs UNION ALL SELECT * FROM runs WHERE project <> 'a'".into(),
            Confined,
        ),
        ("SELECT * FROM lineage WHERE name = 'data-secret-b'".into(), Confined),
        // A common table expression may shadow a stored table's name; it reads only itself.
        (
            "WITH events AS (SELECT 'x' AS id) SELECT * FROM events".into(),
            Confined,
        ),
        // Comments that hide text: what they hide is not run.
        (
            "SELECT run FROM runs -- UNION SELECT run FROM main.runs".into(),
            Confined,
        ),
        ("SELECT run FROM runs /* ; SELECT * FROM main.runs */".into(), Confined),
        // A common table expression named after a view, reading what the view may read.
        (
            "WITH runs AS (SELECT * FROM main.events) SELECT * FROM runs".into(),
            Refused("main.events cannot be read", None),
        ),
        (
            "WITH lineage AS (SELECT count(*) FROM attribute_keys) SELECT * FROM lineage".into(),
            Refused("cannot be read", None),
        ),
        (
            "WITH tags AS (SELECT load_extension('x')) SELECT * FROM tags".into(),
            Refused("load_extension() is not allowed", None),
        ),
        // Stored tables behind the views, by any spelling.
        (
            "SELECT * FROM main.runs".into(),
            Refused("main.runs cannot be read", None),
        ),
        (
            "SELECT * FROM \"main\".\"attributes\"".into(),
            Refused("main.attributes cannot be read", None),
        ),
        (
            "SELECT * FROM MAIN.RUNS WHERE project = 'w/b'".into(),
            Refused("cannot be read", None),
        ),
        (
            "SELECT run FROM runs UNION SELECT run FROM main.attributes".into(),
            Refused("main.attributes", None),
        ),
        (
            "SELECT * FROM runs WHERE project IN (SELECT project FROM main.runs)".into(),
            Refused("main.runs", None),
        ),
        ("SELECT * FROM events".into(), Refused("events cannot be read", None)),
        (
            "SELECT * FROM checkpoints".into(),
            Refused("checkpoints cannot be read", None),
        ),
        (
            "SELECT * FROM attribute_keys".into(),
            Refused("attribute_keys cannot be read", None),
        ),
        (
            "SELECT count(*) FROM point_blocks".into(),
            Refused("point_blocks cannot be read", None),
        ),
        (
            "SELECT EXISTS (SELECT 1 FROM main.series WHERE project = 'default/b')".into(),
            Refused("series cannot be read", None),
        ),
        // System tables and table functions.
        ("SELECT * FROM sqlite_master".into(), Refused("cannot be read", None)),
        ("SELECT sql FROM sqlite_schema".into(), Refused("cannot be read", None)),
        (
            "SELECT sql FROM temp.sqlite_master".into(),
            Refused("cannot be read", None),
        ),
        (
            "SELECT * FROM pragma_table_list".into(),
            Refused("cannot be read", None),
        ),
        (
            "SELECT * FROM pragma_database_list".into(),
            Refused("cannot be read", None),
        ),
        ("SELECT * FROM dbstat".into(), Refused("dbstat cannot be read", None)),
        (
            "SELECT * FROM generate_series(1, 10)".into(),
            Refused("no such table", None),
        ),
        (
            "SELECT readfile('/etc/passwd')".into(),
            Refused("no such function: readfile", Some(7)),
        ),
        (
            "SELECT writefile('x.db', 'y')".into(),
            Refused("no such function", None),
        ),
        (
            "SELECT load_extension('/tmp/evil.so')".into(),
            Refused("load_extension() is not allowed", None),
        ),
        (
            "SELECT sqlite_version()".into(),
            Refused("sqlite_version() is not allowed", None),
        ),
        (
            "SELECT randomblob(1000000000)".into(),
            Refused("randomblob() is not allowed", None),
        ),
        // Statements that are not queries, alone or after one.
        ("PRAGMA table_info(runs)".into(), Refused("only queries", Some(0))),
        (
            "ATTACH DATABASE 'other.db' AS o".into(),
            Refused("only queries", Some(0)),
        ),
        ("DELETE FROM runs".into(), Refused("only queries", Some(0))),
        (
            "INSERT INTO runs (run) VALUES ('x')".into(),
            Refused("only queries", Some(0)),
        ),
        ("UPDATE runs SET name = 'x'".into(), Refused("only queries", Some(0))),
        ("DROP VIEW runs".into(), Refused("only queries", Some(0))),
        (
            "CREATE TEMP VIEW x AS SELECT * FROM main.runs".into(),
            Refused("only queries", Some(0)),
        ),
        ("VACUUM INTO 'copy.db'".into(), Refused("only queries", Some(0))),
        ("BEGIN IMMEDIATE".into(), Refused("only queries", Some(0))),
        (
            "EXPLAIN SELECT * FROM main.runs".into(),
            Refused("only queries", Some(0)),
        ),
        (
            "WITH x AS (SELECT 1) DELETE FROM runs".into(),
            Refused("cannot modify runs", None),
        ),
        (
            "WITH x AS (SELECT 1) DELETE FROM main.events".into(),
            Refused("only queries", None),
        ),
        (
            "SELECT 1; DELETE FROM runs".into(),
            Refused("second statement", Some(10)),
        ),
        (
            "SELECT 1; ATTACH 'other.db' AS o".into(),
            Refused("second statement", Some(10)),
        ),
        (
            "SELECT 1 /* ; */; DROP TABLE runs".into(),
            Refused("second statement", Some(18)),
        ),
        (
            "SELECT '--'; DROP TABLE runs -- '".into(),
            Refused("second statement", Some(13)),
        ),
        (
            "SELECT 1 -- x\n; SELECT * FROM main.runs".into(),
            Refused("second statement", Some(16)),
        ),
        // Unclosed text, hiding the rest of the query.
        ("SELECT 'x FROM main.runs".into(), Refused("never closed", Some(7))),
        ("SELECT 1 /* FROM main.runs".into(), Refused("never closed", Some(9))),
        // Very long, very deep, very large or very slow queries.
        (long, Refused("bytes long", None)),
        (deep, Refused("too large", None)),
        (
            "SELECT printf('%.*c', 3000000, 'x') || printf('%.*c', 3000000, 'x')".into(),
            Refused("too big", None),
        ),
        (
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n".into(),
            Refused("time limit of 500 ms", None),
        ),
        (
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000) \
             SELECT count(*) FROM n a, n b"
                .into(),
            Refused("time limit of 500 ms", None),
        ),
    ];
    assert!(corpus.len() >= 30);
    expect_all(&s, &viewer, &corpus).await;

    // The views are still whole after the corpus.
    let (st, v) = sql(&s, ADMIN_TOKEN, json!({"sql": "SELECT count(*) FROM runs"})).await;
    assert_eq!((st, &v["rows"]), (200, &json!([[3]])), "{v}");
}

/// Sends each query of `corpus` with a 500 ms time limit and checks what it got; every miss is
/// reported at once.
async fn expect_all(s: &Server, viewer: &str, corpus: &[(String, Expect)]) {
    let mut problems = Vec::new();
    for (q, expect) in corpus {
        let shown: String = q.chars().take(80).collect();
        let (st, v) = sql(s, viewer, json!({"sql": q, "timeout_ms": 500})).await;
        let text = v.to_string();
        if text.contains("secret") || text.contains("\"rb\"") {
            problems.push(format!("{shown}: the answer holds project b's rows: {text}"));
        }
        match expect {
            Confined if st != 200 => problems.push(format!("{shown}: expected an answer, got {st} {v}")),
            Confined => {}
            Refused(says, at) => {
                let msg = v["error"]["message"].as_str().unwrap_or("");
                if st != 400 || v["error"]["field"] != "sql" || !msg.contains(says) {
                    problems.push(format!("{shown}: expected 400 on sql saying {says:?}, got {st} {v}"));
                } else if at.is_some() && v["error"]["position"].as_u64() != at.map(|p| p as u64) {
                    problems.push(format!("{shown}: expected the position {at:?}: {v}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {}:\n{}",
        problems.len(),
        corpus.len(),
        problems.join("\n")
    );
}

/// At most four analytics queries run at once: a fifth waits briefly, then gets a 503 with
/// Retry-After, and the API answers again once the slow ones end.
#[tokio::test(flavor = "multi_thread")]
async fn busy_analytics_queries_are_turned_away_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(Server::start(dir.path()));
    let forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { sql(&s, ADMIN_TOKEN, json!({"sql": forever, "timeout_ms": 8000})).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = client()
        .post(s.url("/api/v1/sql"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .expect("post sql");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let v: Value = r.json().await.expect("error body");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("analytics queries are running"),
        "{v}"
    );
    for q in slow {
        let (st, v) = q.await.expect("slow query");
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains("time limit"),
            "{v}"
        );
    }
    let (st, v) = sql(&s, ADMIN_TOKEN, json!({"sql": "SELECT 1"})).await;
    assert_eq!((st, &v["rows"]), (200, &json!([[1]])), "{v}");
}

/// The server on the ClickHouse views, from its own database on the test ClickHouse server.
fn clickhouse_server(dir: &std::path::Path, name: &str) -> Server {
    let views = runstream_testkit::clickhouse_url(name);
    Server::start_role("serve", dir, &["--views", views.as_str()])
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_views_answer_confined_to_the_callers_projects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = clickhouse_server(dir.path(), "sql_views");
    let (position, viewer) = setup(&s).await;

    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT project, run, name, state FROM runs ORDER BY run", "min_position": position}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["columns"], json!(["project", "run", "name", "state"]));
    assert_eq!(
        v["rows"],
        json!([
            ["a", "ra1", "name-ra1", "finished"],
            ["a", "ra2", "name-ra2", "finished"]
        ])
    );
    let q = "SELECT project, count() AS n FROM runs GROUP BY project ORDER BY project";
    let (st, v) = sql(&s, ADMIN_TOKEN, json!({ "sql": q })).await;
    assert_eq!((st, &v["rows"]), (200, &json!([["a", 2], ["b", 1]])), "{v}");
    let (_, v) = sql(&s, ADMIN_TOKEN, json!({"sql": q, "projects": ["b"]})).await;
    assert_eq!(v["rows"], json!([["b", 1]]));

    // Every documented view answers with the columns it has on the embedded default.
    every_view_answers(&s, &viewer).await;

    // Values as the views hold them: the latest of each key, series summaries and rollups.
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT a.value, s.last_value, s.mean, s.count
                        FROM attributes AS a ALL INNER JOIN series AS s USING (project, run)
                        WHERE a.path = 'params/note' AND s.path = 'loss' ORDER BY a.value"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], json!([["open-1", 1.0, 2.0, 3], ["open-2", 1.0, 2.0, 3]]));
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT level, width, bucket, start_step, count, min, max FROM rollups
                        WHERE run = 'ra1' AND path = 'loss' AND level < 2 ORDER BY level, bucket"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([
            [0, 64, 0, 0, 2, 2.0, 3.0],
            [0, 64, 1, 64, 1, 1.0, 1.0],
            [1, 1024, 0, 0, 3, 1.0, 3.0]
        ])
    );
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT run, groupArray(tag) AS tags, any(lineage.name) FROM tags
                        ANY LEFT JOIN (SELECT run, name FROM lineage) AS lineage USING run
                        GROUP BY run ORDER BY run"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([
            ["ra1", "['tag-open-1']", "data-open-1"],
            ["ra2", "['tag-open-2']", "data-open-2"]
        ])
    );

    // Row limits cut the answer and say so.
    let (st, v) = sql(
        &s,
        &viewer,
        json!({"sql": "SELECT arrayJoin(range(50)) AS x", "max_rows": 10}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(10));
    assert_eq!(v["truncated"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_hostile_queries_are_refused_or_confined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = clickhouse_server(dir.path(), "sql_hostile");
    let (position, viewer) = setup(&s).await;
    let (st, v) = sql(&s, &viewer, json!({"sql": "SELECT 1", "min_position": position})).await;
    assert_eq!(st, 200, "{v}");

    let long = format!("SELECT {}1", "1 + ".repeat(20_000));
    let deep = format!("SELECT {}1{}", "(1 + ".repeat(1000), ")".repeat(1000));
    let corpus: Vec<(String, Expect)> = vec![
        // Other projects' rows through the views.
        ("SELECT * FROM runs WHERE project = 'b'".into(), Confined),
        ("SELECT * FROM runs WHERE run = 'rb' OR 1 = 1".into(), Confined),
        ("SELECT * FROM attributes WHERE value LIKE 'secret%'".into(), Confined),
        (
            "SELECT * FROM runs UNION ALL SELECT * FROM runs WHERE project != 'a'".into(),
            Confined,
        ),
        ("SELECT * FROM lineage WHERE name = 'data-secret-b'".into(), Confined),
        (
            "SELECT run FROM (SELECT * FROM runs) WHERE run IN (SELECT run FROM tags)".into(),
            Confined,
        ),
        // An alias named after a view or a stored table names nothing to read.
        ("SELECT 1 AS g0_runs, run AS runs FROM runs".into(), Confined),
        // Comments and escaped quotes that hide text: what they hide is not run.
        (
            "SELECT run FROM runs -- UNION ALL SELECT run FROM g0_runs".into(),
            Confined,
        ),
        (
            "SELECT run FROM runs /* UNION ALL SELECT run FROM g0_runs */".into(),
            Confined,
        ),
        ("SELECT 'x\\' FROM g0_runs --' AS t".into(), Confined),
        // Stored tables behind the views, by any spelling.
        (
            "SELECT * FROM g0_runs".into(),
            Refused("g0_runs cannot be read", Some(14)),
        ),
        (
            "SELECT * FROM `g0_attributes`".into(),
            Refused("g0_attributes cannot be read", Some(14)),
        ),
        (
            "SELECT count() FROM g0_events".into(),
            Refused("g0_events cannot be read", None),
        ),
        (
            "SELECT * FROM g0_checkpoints".into(),
            Refused("g0_checkpoints cannot be read", None),
        ),
        (
            "SELECT run FROM runs UNION ALL SELECT run FROM g0_attributes".into(),
            Refused("g0_attributes cannot be read", Some(47)),
        ),
        (
            "SELECT * FROM runs WHERE project IN (SELECT project FROM g0_runs)".into(),
            Refused("g0_runs cannot be read", None),
        ),
        (
            "SELECT * FROM runs WHERE run IN g0_runs".into(),
            Refused("IN must be followed", Some(29)),
        ),
        (
            "SELECT 1 AS g0_series_keys FROM runs WHERE ('default/b', 'loss', 'float') IN (g0_series_keys)".into(),
            Refused("IN (name) reads a table", None),
        ),
        (
            "SELECT 1 AS g0_series_keys FROM runs WHERE in(('default/b', 'loss', 'float'), g0_series_keys)".into(),
            Refused("in() cannot be called", None),
        ),
        (
            "SELECT * FROM default.runs".into(),
            Refused("default.runs cannot be read", Some(14)),
        ),
        (
            "SELECT * FROM runs AS r ALL INNER JOIN g0_attributes USING (project, run)".into(),
            Refused("g0_attributes cannot be read", None),
        ),
        // System tables and table functions.
        (
            "SELECT * FROM system.tables".into(),
            Refused("system.tables cannot be read", Some(14)),
        ),
        (
            "SELECT * FROM system.query_log".into(),
            Refused("system.query_log cannot be read", None),
        ),
        (
            "SELECT * FROM system.processes".into(),
            Refused("system.processes cannot be read", None),
        ),
        (
            "SELECT * FROM `system`.`one`".into(),
            Refused("system.one cannot be read", None),
        ),
        (
            "SELECT * FROM numbers(10)".into(),
            Refused("table function numbers()", Some(14)),
        ),
        (
            "SELECT * FROM file('/etc/passwd', 'TSV', 'x String')".into(),
            Refused("table function file()", None),
        ),
        (
            "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')".into(),
            Refused("table function url()", None),
        ),
        (
            "SELECT * FROM remote('127.0.0.1', system.one)".into(),
            Refused("table function remote()", None),
        ),
        (
            "SELECT * FROM merge(currentDatabase(), '.*')".into(),
            Refused("table function merge()", None),
        ),
        (
            "SELECT currentDatabase()".into(),
            Refused("currentDatabase() is not allowed", Some(7)),
        ),
        (
            "SELECT hasColumnInTable('default', 'g0_runs', 'run')".into(),
            Refused("hasColumnInTable() is not allowed", None),
        ),
        (
            "SELECT dictGetString('d', 'x', toUInt64(1))".into(),
            Refused("dictGetString() is not allowed", None),
        ),
        (
            "SELECT joinGet('g0_runs', 'name', 'rb')".into(),
            Refused("joinGet() is not allowed", None),
        ),
        ("SELECT sleep(3)".into(), Refused("sleep() is not allowed", None)),
        (
            "SELECT system.one.dummy".into(),
            Refused("system.one cannot be read", None),
        ),
        // Clauses that change the limits or where the answer goes.
        (
            "SELECT * FROM runs SETTINGS max_execution_time = 1000".into(),
            Refused("SETTINGS is not allowed", Some(19)),
        ),
        (
            "SELECT 1 AS readonly FROM runs SETTINGS readonly = 0".into(),
            Refused("SETTINGS is not allowed", None),
        ),
        (
            "SELECT * FROM runs FORMAT JSON".into(),
            Refused("FORMAT is not allowed", None),
        ),
        (
            "SELECT * FROM runs INTO OUTFILE 'x'".into(),
            Refused("INTO is not allowed", None),
        ),
        // Statements that are not queries, alone or after one.
        ("DROP TABLE g0_runs".into(), Refused("only queries", Some(0))),
        (
            "INSERT INTO runs (run) VALUES ('x')".into(),
            Refused("only queries", Some(0)),
        ),
        (
            "ALTER TABLE g0_runs DELETE WHERE 1".into(),
            Refused("only queries", Some(0)),
        ),
        ("OPTIMIZE TABLE g0_runs FINAL".into(), Refused("only queries", Some(0))),
        ("SET readonly = 0".into(), Refused("only queries", Some(0))),
        ("SYSTEM SHUTDOWN".into(), Refused("only queries", Some(0))),
        ("KILL QUERY WHERE 1".into(), Refused("only queries", Some(0))),
        ("SHOW TABLES".into(), Refused("only queries", Some(0))),
        ("DESCRIBE TABLE g0_runs".into(), Refused("only queries", Some(0))),
        (
            "SELECT 1; DROP TABLE g0_runs".into(),
            Refused("second statement", Some(10)),
        ),
        (
            "SELECT 1 /* ; */; DROP TABLE runs".into(),
            Refused("second statement", Some(18)),
        ),
        // Text the server would read otherwise than a simple lexer.
        ("SELECT 'x FROM g0_runs".into(), Refused("never closed", Some(7))),
        ("SELECT /* /* */ 1 */ FROM g0_runs".into(), Refused("nested", Some(7))),
        ("SELECT $$x$$".into(), Refused("'$' is not allowed", Some(7))),
        ("SELECT {p:String}".into(), Refused("'{' is not allowed", Some(7))),
        // Bad SQL: the server's message, at the caller's position.
        ("SELECT run FROM runs WHERE".into(), Refused("syntax error", Some(26))),
        (
            "SELECT nosuch FROM runs".into(),
            Refused("unknown name nosuch", Some(7)),
        ),
        // Very long, very deep, very large or very slow queries.
        (long, Refused("bytes long", None)),
        (deep, Refused("nested too deeply", Some(507))),
        (
            // A billion rows in one block: more than the limit at once.
            "SELECT sum(cityHash64(a, b)) FROM (SELECT arrayJoin(range(100000)) AS a) ARRAY JOIN range(10000) AS b"
                .into(),
            Refused("more memory than its limit of 2000000000 bytes", None),
        ),
        // A hundred million slow hashes: seconds on any release, in little memory.
        (
            "SELECT sum(sipHash64(a, b, a, b, a, b)) FROM (SELECT arrayJoin(range(10000)) AS a) \
             ARRAY JOIN range(10000) AS b"
                .into(),
            Refused("time limit of 500 ms", None),
        ),
    ];
    assert!(corpus.len() >= 30);
    expect_all(&s, &viewer, &corpus).await;

    // The views are still whole after the corpus.
    let (st, v) = sql(&s, ADMIN_TOKEN, json!({"sql": "SELECT count() FROM runs"})).await;
    assert_eq!((st, &v["rows"]), (200, &json!([[3]])), "{v}");
}
