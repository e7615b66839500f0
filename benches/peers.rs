//! The same MLflow-REST workload against runstream, MLflow's own tracking server and FastTrackML,
//! side by side in one run, each a real server process on localhost with a SQLite store:
//!
//! 1. runs: create runs, each with 20 params and a metric in one log-batch (runs per second);
//! 2. ingest: 4 concurrent clients, each logging batches of 1,000 metric points to a run of its
//!    own with `runs/log-batch` (points per second, counted once each request is answered);
//! 3. search: `runs/search` with a filter on a param and a metric, ordered by the metric
//!    (median latency from sending the request, serialized beforehand, to the answer's last
//!    byte, after the same 2 s pause for every server to settle after the ingest). Timed twice:
//!    with a blocking socket on one kept-alive connection (the figure in the table: the clock
//!    sees the server and the kernel, not a client runtime waking its tasks, which on two shared
//!    cores adds a few tenths of a millisecond to every request), and with the async client the
//!    other phases use (printed beside it);
//! 4. history: the full history of one ingested metric with `metrics/get-history`, following
//!    page tokens (median latency).
//!
//! Targets (issue: MLflow compatibility): ingest at least 10 times FastTrackML's points per
//! second; search and history at most a fifth of its latency.
//!
//! Peers come from PyPI, each in a virtual environment of its own (FastTrackML's package pins an
//! older MLflow): `pip install mlflow` and `pip install fasttrackml`. The bench looks for the
//! `mlflow` and `fml` executables in `$RUNSTREAM_PEERS_BIN` (bin folders, `:`-separated), else on
//! `PATH`, and leaves out a peer it cannot find or start, saying so.
//!
//! Run: `cargo bench --bench peers` (`-- --batches N` batches per ingest client, default 25;
//! `-- --runs N` runs in phase 1, default 50).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 4;
const POINTS_PER_BATCH: usize = 1000;
const SEARCHES: usize = 30;
const HISTORIES: usize = 7;
const T0: i64 = 1_780_000_000_000;
/// The pause every server gets between the ingest and the timed reads.
const SETTLE: Duration = Duration::from_secs(2);

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An executable from `$RUNSTREAM_PEERS_BIN`, else `PATH`.
fn find(exe: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("RUNSTREAM_PEERS_BIN")
        .into_iter()
        .chain(std::env::var_os("PATH"))
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    dirs.map(|d| d.join(exe)).find(|p| p.is_file())
}

/// Where a server answers, and the token it wants (runstream's; peers take none).
#[derive(Clone)]
struct Endpoint {
    name: &'static str,
    url: String,
    token: Option<String>,
}

struct Server {
    api: Endpoint,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a server and everything it started: each server runs in a process group of its own
/// (MLflow's starts uvicorn workers and job runners that would outlive it and load the
/// machine while the next server is measured).
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until a server answers; the reason it never did otherwise.
async fn wait_ready(http: &reqwest::Client, url: &str, token: Option<&str>, child: &mut Child) -> Result<(), String> {
    // MLflow's server takes minutes to start on a small machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited ({status}) before answering"));
        }
        let mut req = http.get(format!("{url}/api/2.0/mlflow/experiments/get?experiment_id=0"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if req.send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the server did not answer within 5 minutes".into())
}

async fn start(http: &reqwest::Client, name: &'static str, dir: &Path) -> Option<Server> {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (mut cmd, token) = match name {
        "runstream" => {
            let token = "peers-bench-token-0123456789".to_string();
            let mut c = Command::new(env!("CARGO_BIN_EXE_runstream"));
            c.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
                .arg(dir.join("runstream"))
                .env("RUNSTREAM_ADMIN_TOKEN", &token)
                .env("RUNSTREAM_LOG", "warn");
            (c, Some(token))
        }
        "mlflow" => {
            let Some(exe) = find("mlflow") else {
                println!("mlflow: not found (pip install mlflow; point RUNSTREAM_PEERS_BIN at its bin); left out");
                return None;
            };
            let mut c = Command::new(exe);
            c.args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "4",
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("mlflow-artifacts"));
            (c, None)
        }
        _ => {
            let Some(exe) = find("fml") else {
                println!(
                    "fasttrackml: not found (pip install fasttrackml; point RUNSTREAM_PEERS_BIN at its bin); left out"
                );
                return None;
            };
            let mut c = Command::new(exe);
            c.args(["server", "--listen-address", &format!("127.0.0.1:{port}")])
                .arg("--database-uri")
                .arg(format!("sqlite://{}", dir.join("fml.db").display()))
                .arg("--default-artifact-root")
                .arg(dir.join("fml-artifacts"));
            (c, None)
        }
    };
    let mut child = cmd
        .process_group(0)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Err(why) = wait_ready(http, &url, token.as_deref(), &mut child).await {
        stop(&mut child);
        println!("{name}: {why}; left out");
        return None;
    }
    Some(Server {
        api: Endpoint { name, url, token },
        child,
    })
}

impl Endpoint {
    /// Posts a JSON body prepared beforehand (so the clock measures the server, not the load
    /// generator building JSON); the answer's text, unparsed.
    async fn post_raw(&self, http: &reqwest::Client, endpoint: &str, body: bytes::Bytes) -> String {
        let req = http
            .post(format!("{}/api/2.0/mlflow/{endpoint}", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req, endpoint).await
    }

    async fn call(&self, http: &reqwest::Client, method: &str, endpoint: &str, body: Value) -> Value {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.url);
        let req = if method == "GET" {
            let pairs: Vec<(String, String)> = body
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            http.get(url).query(&pairs)
        } else {
            http.post(url).json(&body)
        };
        serde_json::from_str(&self.send(req, endpoint).await).unwrap_or(Value::Null)
    }

    /// Sends with the server's token; panics unless it answers 2xx; the answer's text.
    async fn send(&self, mut req: reqwest::RequestBuilder, endpoint: &str) -> String {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {endpoint}: {e}", self.name));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{}: {endpoint}: {status}: {text}", self.name);
        text
    }
}

/// Posts `body` to `path` `n` times in a row on one kept-alive HTTP/1.1 connection with a
/// blocking socket, timing each from the first byte written to the last byte of the answer read;
/// the times (ms) and the last answer. Panics unless every answer is 2xx.
fn time_blocking(url: &str, token: Option<&str>, path: &str, body: &[u8], n: usize) -> (Vec<f64>, String) {
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let connect = || {
        let stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("{host}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        BufReader::new(stream)
    };
    let mut conn = connect();
    let mut times = Vec::with_capacity(n);
    let mut last = String::new();
    for _ in 0..n {
        let t = Instant::now();
        conn.get_mut().write_all(&request).expect("write the request");
        let (status, answer, keep) = read_response(&mut conn);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        last = String::from_utf8_lossy(&answer).into_owned();
        assert!((200..300).contains(&status), "{host}{path}: {status}: {last}");
        if !keep {
            conn = connect();
        }
    }
    (times, last)
}

/// One HTTP/1.1 response: status, body (by Content-Length, chunks, or to the end), and whether
/// the connection stays open.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>, bool) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        line.clear();
        r.read_line(&mut line).expect("a header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("name: value");
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => keep = value != "close",
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).expect("a chunk size");
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).expect("hex size");
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).expect("a chunk");
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).expect("the body");
    } else {
        r.read_to_end(&mut body).expect("the body");
        keep = false;
    }
    (status, body, keep)
}

#[derive(Default, Clone, Copy)]
struct Figures {
    runs_per_s: f64,
    points_per_s: f64,
    search_ms: f64,
    search_async_ms: f64,
    history_ms: f64,
    history_points: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn workload(http: &reqwest::Client, s: &Endpoint, runs: usize, batches: usize) -> Figures {
    let mut f = Figures::default();
    let exp = s
        .call(
            http,
            "POST",
            "experiments/create",
            json!({"name": format!("bench-{}", s.name)}),
        )
        .await["experiment_id"]
        .as_str()
        .expect("an experiment id")
        .to_string();

    // 1. Runs with params and a metric.
    let started = Instant::now();
    for i in 0..runs {
        let run = s
            .call(
                http,
                "POST",
                "runs/create",
                json!({"experiment_id": exp, "start_time": T0 + i as i64, "run_name": format!("run-{i}")}),
            )
            .await;
        let id = run["run"]["info"]["run_id"].as_str().expect("a run id").to_string();
        let params: Vec<Value> = (0..20)
            .map(|p| json!({"key": format!("p{p}"), "value": format!("v{}", (i + p) % 3)}))
            .collect();
        let metrics = vec![json!({"key": "loss", "value": 1.0 / (i + 1) as f64, "timestamp": T0, "step": 0})];
        s.call(
            http,
            "POST",
            "runs/log-batch",
            json!({"run_id": id, "params": params, "metrics": metrics}),
        )
        .await;
    }
    f.runs_per_s = runs as f64 / started.elapsed().as_secs_f64();

    // 2. Ingest from concurrent clients.
    let mut ids = Vec::new();
    for c in 0..CLIENTS {
        let run = s
            .call(
                http,
                "POST",
                "runs/create",
                json!({"experiment_id": exp, "start_time": T0, "run_name": format!("ingest-{c}")}),
            )
            .await;
        ids.push(run["run"]["info"]["run_id"].as_str().expect("a run id").to_string());
    }
    // Every client's batches, serialized before the clock starts.
    let bodies: Vec<Vec<bytes::Bytes>> = ids
        .iter()
        .map(|id| {
            (0..batches)
                .map(|b| {
                    let metrics: Vec<Value> = (0..POINTS_PER_BATCH)
                        .map(|i| {
                            let step = (b * POINTS_PER_BATCH + i) as i64;
                            json!({"key": "train/loss", "value": 1.0 / (step + 1) as f64, "timestamp": T0 + step, "step": step})
                        })
                        .collect();
                    bytes::Bytes::from(serde_json::to_vec(&json!({"run_id": id, "metrics": metrics})).expect("json"))
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|batches| {
            let (http, me) = (http.clone(), s.clone());
            tokio::spawn(async move {
                for body in batches {
                    me.post_raw(&http, "runs/log-batch", body).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("an ingest client");
    }
    f.points_per_s = (CLIENTS * batches * POINTS_PER_BATCH) as f64 / started.elapsed().as_secs_f64();

    // 3. Search with a filter and an order, timed at rest: every server first gets the same
    // pause to finish what the ingest left it (runstream's projector folding the last batches).
    tokio::time::sleep(SETTLE).await;
    let search = json!({
        "experiment_ids": [exp],
        "filter": "params.p0 = 'v1' and metrics.loss < 0.5",
        "order_by": ["metrics.loss DESC"],
        "max_results": 100,
    });
    // As for the ingest, the clock measures the server: from sending a request serialized
    // beforehand to the last byte of the answer, which is parsed after.
    let body = bytes::Bytes::from(serde_json::to_vec(&search).expect("json"));
    let mut samples = Vec::new();
    let mut found = 0;
    for _ in 0..SEARCHES {
        let t = Instant::now();
        let text = s.post_raw(http, "runs/search", body.clone()).await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        let r: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        found = r["runs"].as_array().map_or(0, Vec::len);
    }
    f.search_async_ms = median(samples);
    let (url, token) = (s.url.clone(), s.token.clone());
    let (samples, text) = tokio::task::spawn_blocking(move || {
        time_blocking(&url, token.as_deref(), "/api/2.0/mlflow/runs/search", &body, SEARCHES)
    })
    .await
    .expect("the blocking search client");
    f.search_ms = median(samples);
    let r: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(
        r["runs"].as_array().map_or(0, Vec::len),
        found,
        "{}: both clients' answers agree",
        s.name
    );
    let want = (0..runs)
        .filter(|i| i % 3 == 1 && (1.0 / (*i + 1) as f64) < 0.5)
        .count();
    assert_eq!(found, want, "{}: search found {found} runs, not {want}", s.name);

    // 4. A full metric history.
    let mut samples = Vec::new();
    for _ in 0..HISTORIES {
        let t = Instant::now();
        let mut token: Option<String> = None;
        let mut n = 0;
        loop {
            let mut q = json!({"run_id": ids[0], "metric_key": "train/loss"});
            if let Some(tk) = &token {
                q["page_token"] = tk.clone().into();
            }
            let r = s.call(http, "GET", "metrics/get-history", q).await;
            n += r["metrics"].as_array().map_or(0, Vec::len);
            token = r["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        f.history_points = n;
    }
    f.history_ms = median(samples);
    assert_eq!(
        f.history_points,
        batches * POINTS_PER_BATCH,
        "{}: history length",
        s.name
    );
    f
}

#[tokio::main]
async fn main() {
    let runs = arg("--runs", 50);
    let batches = arg("--batches", 25);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .timeout(Duration::from_secs(300))
        .build()
        .expect("an HTTP client");
    println!(
        "peers bench: {runs} runs x 20 params; ingest {CLIENTS} clients x {batches} batches x {POINTS_PER_BATCH} points; \
         search median of {SEARCHES}; history median of {HISTORIES}"
    );
    let mut results: Vec<(&'static str, Figures)> = Vec::new();
    for name in ["runstream", "mlflow", "fasttrackml"] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).expect("a server folder");
        let Some(server) = start(&http, name, &sub).await else {
            println!(
                "{name}: not found (pip install mlflow fasttrackml; point RUNSTREAM_PEERS_BIN at its bin); left out"
            );
            continue;
        };
        let f = workload(&http, &server.api, runs, batches).await;
        println!(
            "{name}: {:.1} runs/s, {:.0} points/s, search {:.2} ms ({:.2} ms with the async client), history of {} points {:.1} ms",
            f.runs_per_s, f.points_per_s, f.search_ms, f.search_async_ms, f.history_points, f.history_ms
        );
        results.push((name, f));
        drop(server);
    }

    println!();
    println!(
        "| figure | {} |",
        results.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |label: &str, get: &dyn Fn(&Figures) -> String| {
        println!(
            "| {label} | {} |",
            results.iter().map(|(_, f)| get(f)).collect::<Vec<_>>().join(" | ")
        );
    };
    row("runs created with 20 params /s", &|f| format!("{:.1}", f.runs_per_s));
    row("ingest points/s (4 clients, log-batch of 1,000)", &|f| {
        format!("{:.0}", f.points_per_s)
    });
    row("search, filter + order (median ms)", &|f| format!("{:.2}", f.search_ms));
    row("full metric history (median ms)", &|f| format!("{:.1}", f.history_ms));

    let get = |n: &str| results.iter().find(|(name, _)| *name == n).map(|(_, f)| *f);
    if let (Some(r), Some(fml)) = (get("runstream"), get("fasttrackml")) {
        println!();
        println!(
            "runstream vs FastTrackML: ingest {:.1}x its points/s (target >= 10x); search {:.2}x its latency, history {:.2}x (targets <= 0.2x)",
            r.points_per_s / fml.points_per_s,
            r.search_ms / fml.search_ms,
            r.history_ms / fml.history_ms
        );
    }
}
