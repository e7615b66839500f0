//! Rebuild: replaying the log into a fresh generation of views gives the same views, and the
//! server answers every read exactly as before.

mod common;

use std::collections::BTreeMap;

use common::{Server, client, event_id, get_json, merge_positions, post_events, run_cli};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PROJECT: &str = "default";
const T0: i64 = 1_700_000_000_000;

fn float_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

fn ev(run: &str, body_name: &str, body: Value) -> Value {
    let mut e = json!({"id": event_id(), "run": run});
    e[body_name] = body;
    e
}

fn points(run: &str, series: &str, steps: impl Iterator<Item = i64>, f: impl Fn(i64) -> f64, times: bool) -> Value {
    let steps: Vec<i64> = steps.collect();
    let mut body = json!({
        "series": series,
        "values": steps.iter().map(|&s| float_json(f(s))).collect::<Vec<_>>(),
    });
    if times {
        body["times_ms"] = json!(steps.iter().map(|&s| T0 + s * 100).collect::<Vec<_>>());
    }
    body["steps"] = json!(steps);
    ev(run, "float_points", body)
}

async fn post_ok(s: &Server, events: Vec<Value>) -> String {
    let n = events.len();
    let (status, body) = post_events(s, PROJECT, &json!({ "events": events })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], json!(n), "{body}");
    body["position"].as_str().unwrap().to_string()
}

async fn upload(s: &Server, run: &str, path_and_query: &str, bytes: &[u8]) -> String {
    let r = client()
        .put(s.url(&format!("/api/v1/projects/{PROJECT}/runs/{run}/files/{path_and_query}")))
        .bearer_auth(&s.token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    body["position"].as_str().unwrap().to_string()
}

async fn download_sha(s: &Server, path_and_query: &str) -> String {
    let r = client()
        .get(s.url(path_and_query))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path_and_query}");
    hex::encode(Sha256::digest(r.bytes().await.unwrap()))
}

/// Every read the API offers over the logged data, keyed by URL (without the position).
async fn capture(s: &Server, pos: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let get = |url: String| async move {
        let sep = if url.contains('?') { '&' } else { '?' };
        let (status, body) = get_json(s, &format!("{url}{sep}min_position={pos}&wait_ms=30000")).await;
        assert_eq!(status, 200, "{url}: {body}");
        (url, body)
    };
    // The run list, two runs a page.
    let mut runs = Vec::new();
    let mut cursor = String::new();
    loop {
        let (url, page) = get(format!(
            "/api/v1/projects/{PROJECT}/runs?limit=2&include_deleted=true&cursor={cursor}"
        ))
        .await;
        for r in page["runs"].as_array().unwrap() {
            runs.push(r["run"].as_str().unwrap().to_string());
        }
        let next = page["next_cursor"].as_str().map(str::to_string);
        out.insert(url, page);
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    for run in &runs {
        let (url, detail) = get(format!("/api/v1/projects/{PROJECT}/runs/{run}")).await;
        for series in detail["series"].as_array().unwrap() {
            let path = series["path"].as_str().unwrap();
            if series["kind"] == "float" {
                let (u, b) = get(format!("/api/v1/projects/{PROJECT}/runs/{run}/series?path={path}")).await;
                out.insert(u, b);
                let (u, b) = get(format!(
                    "/api/v1/projects/{PROJECT}/runs/{run}/series?path={path}&buckets=17"
                ))
                .await;
                out.insert(u, b);
            } else {
                let (u, b) = get(format!("/api/v1/projects/{PROJECT}/runs/{run}/lines?path={path}")).await;
                out.insert(u, b);
            }
        }
        out.insert(url, detail);
        let (u, b) = get(format!("/api/v1/projects/{PROJECT}/runs/{run}/events?limit=1000")).await;
        out.insert(u, b);
    }
    out
}

/// Lines in one text and not the other, for a readable failure.
fn diff_lines(a: &str, b: &str) -> String {
    let la: std::collections::BTreeSet<&str> = a.lines().collect();
    let lb: std::collections::BTreeSet<&str> = b.lines().collect();
    let cut = |s: &str| s.chars().take(300).collect::<String>();
    let only_a: Vec<String> = la.difference(&lb).take(10).map(|s| cut(s)).collect();
    let only_b: Vec<String> = lb.difference(&la).take(10).map(|s| cut(s)).collect();
    format!(
        "only before:\n  {}\nonly after:\n  {}",
        only_a.join("\n  "),
        only_b.join("\n  ")
    )
}

/// What the workload wrote and what every read answered after it.
struct Written {
    pos: String,
    before: BTreeMap<String, Value>,
    files_before: [String; 2],
}

const MAIN: &str = "rb-main";

fn run_url(r: &str) -> String {
    format!("/api/v1/projects/{PROJECT}/runs/{r}")
}

async fn files(server: &Server) -> [String; 2] {
    [
        download_sha(server, &format!("{}/files/artifacts/notes.txt", run_url(MAIN))).await,
        download_sha(server, &format!("{}/files/images/pred.png?step=3", run_url(MAIN))).await,
    ]
}

/// Writes runs of every kind in several requests (and a client retry across a restart) to a
/// server started with `flags`, checks that every read says what was logged, and returns the
/// server with what it answered.
async fn workload(dir: &std::path::Path, flags: &[&str]) -> (Server, Written) {
    let mut server = Server::start_role("serve", dir, flags);
    let mut positions = Vec::new();
    let (main, child, gone, back) = (MAIN, "rb-child", "rb-deleted", "rb-restored");
    let loss = |s: i64| 1.0 / (1.0 + s as f64) + (s % 7) as f64 * 1e-3;
    let loss2 = |s: i64| match s {
        150 => f64::NAN,
        160 => f64::INFINITY,
        170 => f64::NEG_INFINITY,
        s => -(s as f64) * 0.5,
    };

    // ---- several requests, so the live projector folds them in several flushes ----
    positions.push(
        post_ok(
            &server,
            vec![
                ev(main, "run_created", json!({"name": "main", "experiment": "rb", "description": "the main run"})),
                ev(main, "run_state", json!({"state": "running"})),
                ev(
                    main,
                    "attributes_set",
                    json!({"attributes": {
                        "config": {"lr": 0.1, "layers": 4, "act": "relu", "flags": ["a", "b"], "nan": {"$float": "NaN"}},
                        "tmp": {"x": 1, "y": "two"},
                        "when": {"$datetime": "2024-05-01T00:00:00Z"},
                    }}),
                ),
                ev(main, "tags_added", json!({"tags": ["keep", "drop", "also-drop"]})),
                points(main, "loss", 0..3000, loss, true),
                points(main, "acc", (0..500).rev(), |s| s as f64 / 500.0, false),
            ],
        )
        .await,
    );
    positions.push(
        post_ok(
            &server,
            vec![
                ev(
                    child,
                    "run_created",
                    json!({"name": "child", "experiment": "rb", "parent_run": main}),
                ),
                ev(child, "attributes_set", json!({"attributes": {"config": {"lr": 0.2}}})),
                points(child, "acc", 0..100, |s| (s as f64).sqrt(), true),
                ev(
                    child,
                    "run_state",
                    json!({"state": "failed", "message": "out of memory"}),
                ),
            ],
        )
        .await,
    );
    positions.push(
        post_ok(
            &server,
            vec![
                ev(main, "attributes_deleted", json!({"paths": ["tmp/x", "tmp/y"]})),
                ev(main, "tags_removed", json!({"tags": ["drop", "also-drop"]})),
                points(main, "loss", 100..200, loss2, true),
                ev(
                    main,
                    "string_lines",
                    json!({"series": "stdout", "steps": (0..50).collect::<Vec<i64>>(),
                           "lines": (0..50).map(|i| format!("line {i}")).collect::<Vec<_>>()}),
                ),
                ev(
                    main,
                    "lineage",
                    json!({"direction": "input", "kind": "dataset", "name": "cifar10", "version": "v2",
                           "digest": "sha256:00ff", "uri": "s3://data/cifar10"}),
                ),
                ev(
                    main,
                    "lineage",
                    json!({"direction": "output", "kind": "model", "name": "net", "version": "7"}),
                ),
                ev(main, "run_state", json!({"state": "heartbeat"})),
            ],
        )
        .await,
    );
    positions.push(
        post_ok(
            &server,
            vec![
                ev(gone, "run_created", json!({"name": "to be deleted"})),
                points(gone, "loss", 0..50, |s| s as f64, true),
                ev(gone, "run_deleted", json!({})),
                ev(back, "run_created", json!({"name": "deleted then restored"})),
                ev(back, "run_deleted", json!({})),
                ev(back, "attributes_set", json!({"attributes": {"note": "still here"}})),
                ev(back, "run_restored", json!({})),
            ],
        )
        .await,
    );
    let notes = b"some notes\nabout the run\n".to_vec();
    let image: Vec<u8> = (0..2048u32).map(|i| (i * 31 % 251) as u8).collect();
    positions.push(upload(&server, main, "artifacts/notes.txt", &notes).await);
    positions.push(upload(&server, main, "images/pred.png?step=3&media_type=image/png", &image).await);
    let last = vec![
        ev(
            main,
            "string_lines",
            json!({"series": "stdout", "steps": [10], "lines": ["line 10, rewritten"]}),
        ),
        points(main, "loss", [2999, 0].into_iter(), |s| s as f64 * 10.0, true),
        ev(main, "run_state", json!({"state": "finished", "message": "ok"})),
    ];
    positions.push(post_ok(&server, last.clone()).await);
    // A client retry of the last request: recognised, nothing appended twice.
    let (status, retry) = post_events(&server, PROJECT, &json!({ "events": last.clone() })).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(
        (retry["accepted"].clone(), retry["duplicates"].clone()),
        (json!(0), json!(3)),
        "{retry}"
    );
    // The same retry after a restart: ingest has forgotten the ids, so the events reach the log a
    // second time and the projector must skip them (and a rebuild must skip them the same way).
    server.stop();
    let server = Server::start_role("serve", dir, flags);
    let (status, retry) = post_events(&server, PROJECT, &json!({ "events": last })).await;
    assert_eq!(status, 200, "{retry}");
    positions.push(retry["position"].as_str().unwrap().to_string());
    let pos = merge_positions(&positions);

    // ---- capture every read, and check that it says what was logged ----
    let before = capture(&server, &pos).await;
    let m = &before[&run_url(main)];
    assert_eq!(m["run"]["state"], json!("finished"));
    assert_eq!(m["run"]["state_message"], json!("ok"));
    assert!(m["run"]["heartbeat_ms"].as_i64().is_some());
    assert_eq!(
        m["attributes"],
        json!({"config/act": "relu", "config/flags": {"$set": ["a", "b"]}, "config/layers": 4, "config/lr": 0.1,
               "config/nan": {"$float": "NaN"}, "when": {"$datetime": 1_714_521_600_000i64}})
    );
    assert_eq!(m["tags"], json!(["keep"]));
    assert_eq!(m["lineage"].as_array().unwrap().len(), 2);
    assert_eq!(m["files"].as_array().unwrap().len(), 2);
    assert_eq!(m["metrics"]["loss"]["count"], json!(3000));
    assert_eq!(m["metrics"]["loss"]["last"], json!(29990.0));
    assert_eq!(m["metrics"]["acc"]["count"], json!(500));
    let loss_pts = &before[&format!("{}/series?path=loss", run_url(main))];
    let vals = loss_pts["values"].as_array().unwrap();
    assert_eq!(vals.len(), 3000);
    assert_eq!(vals[0], json!(0.0));
    assert_eq!(vals[99], json!(loss(99)));
    assert_eq!(vals[120], json!(-60.0));
    assert_eq!(
        (&vals[150], &vals[160], &vals[170]),
        (&json!("NaN"), &json!("Infinity"), &json!("-Infinity"))
    );
    assert_eq!(vals[200], json!(loss(200)));
    let history = before[&format!("{}/events?limit=1000", run_url(main))]["events"]
        .as_array()
        .unwrap()
        .clone();
    let ids: std::collections::BTreeSet<&str> = history.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), history.len(), "an event is in the history twice");
    assert_eq!(history.len(), 6 + 7 + 2 + 3, "events of {main}: {}", history.len());
    let stdout = &before[&format!("{}/lines?path=stdout", run_url(main))];
    assert_eq!(stdout["lines"][10], json!("line 10, rewritten"));
    assert_eq!(stdout["lines"][11], json!("line 11"));
    let c = &before[&run_url(child)];
    assert_eq!(
        (&c["run"]["parent_run"], &c["run"]["state"]),
        (&json!(main), &json!("failed"))
    );
    assert_eq!(before[&run_url(gone)]["run"]["deleted"], json!(true));
    assert_eq!(before[&run_url(back)]["run"]["deleted"], json!(false));
    assert_eq!(before[&run_url(back)]["attributes"], json!({"note": "still here"}));
    let run_pages = before.keys().filter(|k| k.contains("/runs?limit=2")).count();
    assert_eq!(run_pages, 3, "four runs in pages of two, then an empty last page");
    let files_before = files(&server).await;
    assert_eq!(files_before[0], hex::encode(Sha256::digest(&notes)));
    assert_eq!(files_before[1], hex::encode(Sha256::digest(&image)));
    (
        server,
        Written {
            pos,
            before,
            files_before,
        },
    )
}

/// Checks that two dumps hold rows of every table, the workload's counts, and are equal.
fn same_dumps(dump1: &str, dump2: &str) {
    let count = |d: &str, table: &str| d.lines().filter(|l| l.starts_with(&format!("{table}\t"))).count();
    for table in [
        "checkpoints",
        "runs",
        "attributes",
        "tags",
        "series",
        "points",
        "lines",
        "rollups",
        "files",
        "lineage",
        "events",
    ] {
        assert!(count(dump1, table) > 0, "the dump holds no {table} rows");
    }
    assert_eq!(count(dump1, "runs"), 4);
    assert_eq!(count(dump1, "points"), 3000 + 500 + 100 + 50);
    assert_eq!(count(dump1, "lines"), 50);
    assert_eq!(count(dump1, "tags"), 1);
    assert_eq!(count(dump1, "files"), 2);
    assert!(
        dump1 == dump2,
        "the rebuilt views differ from the live ones:\n{}",
        diff_lines(dump1, dump2)
    );
}

/// Every read answers as it did before the rebuild.
async fn same_answers(server: &Server, w: &Written) {
    let after = capture(server, &w.pos).await;
    assert_eq!(w.before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (url, b) in &w.before {
        assert!(
            b == &after[url],
            "{url} differs after the rebuild:\nbefore: {b}\nafter:  {}",
            after[url]
        );
    }
    assert_eq!(w.files_before, files(server).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_reproduces_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, written) = workload(dir.path(), &[]).await;

    // ---- stop, dump, rebuild, dump ----
    server.stop();
    let views = dir.path().join("views");
    assert_eq!(
        std::fs::read_to_string(views.join("CURRENT")).unwrap().trim(),
        "gen-000001"
    );
    let dump1 = run_cli(&["dump"], dir.path());
    run_cli(&["rebuild"], dir.path());
    assert_eq!(
        std::fs::read_to_string(views.join("CURRENT")).unwrap().trim(),
        "gen-000002",
        "rebuild switches to a new generation"
    );
    let dump2 = run_cli(&["dump"], dir.path());
    same_dumps(&dump1, &dump2);

    // ---- restart on the rebuilt generation: every read answers as before ----
    let server = Server::start(dir.path());
    same_answers(&server, &written).await;
}

/// The generation of the views a server reports serving, from its metrics.
async fn served_generation(server: &Server) -> Option<String> {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("runstream_views_generation_info{"))?;
    let at = line.find("generation=\"")? + "generation=\"".len();
    Some(line[at..].split('"').next()?.to_string())
}

/// On ClickHouse, rebuild runs beside the generation being served: reads keep answering during
/// it, the server moves to the new generation on its own, answers exactly as before, and what is
/// written afterwards lands in the new generation.
#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_rebuild_switches_the_server_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let url = runstream_testkit::clickhouse_url("rebuild");
    let (server, written) = workload(dir.path(), &["--views", url.as_str()]).await;
    assert_eq!(served_generation(&server).await.as_deref(), Some("g0"));
    let dump1 = run_cli(&["dump", "--views", url.as_str()], dir.path());

    let mut rebuild = std::process::Command::new(env!("CARGO_BIN_EXE_runstream"))
        .args(["rebuild", "--views", url.as_str(), "--data"])
        .arg(dir.path())
        .env("RUNSTREAM_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the rebuild");
    let main = &written.before[&run_url(MAIN)];
    let mut reads = 0;
    let status = loop {
        if let Some(status) = rebuild.try_wait().expect("rebuild status") {
            break status;
        }
        let (st, now) = get_json(&server, &run_url(MAIN)).await;
        assert_eq!((st, &now), (200, main), "a read during the rebuild");
        reads += 1;
    };
    assert!(status.success(), "rebuild failed");
    assert!(reads > 0);

    let g1 = runstream_views::generations::pinned_url(&url, "g1");
    same_dumps(&dump1, &run_cli(&["dump", "--views", g1.as_str()], dir.path()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while served_generation(&server).await.as_deref() != Some("g1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still serves the old generation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    same_answers(&server, &written).await;

    // The server's projector went on in the new generation.
    let pos = post_ok(
        &server,
        vec![ev("rb-later", "run_created", json!({"name": "after the rebuild"}))],
    )
    .await;
    let (st, later) = get_json(
        &server,
        &format!("{}?min_position={pos}&wait_ms=30000", run_url("rb-later")),
    )
    .await;
    assert_eq!(
        (st, &later["run"]["name"]),
        (200, &json!("after the rebuild")),
        "{later}"
    );
    let g0 = runstream_views::generations::pinned_url(&url, "g0");
    assert!(run_cli(&["dump", "--views", g1.as_str()], dir.path()).contains("rb-later"));
    assert!(!run_cli(&["dump", "--views", g0.as_str()], dir.path()).contains("rb-later"));
}
