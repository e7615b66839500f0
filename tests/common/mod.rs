//! Test harness: starts the real `runstream` binary on 127.0.0.1:0 in a temporary data folder and
//! talks to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
    pub token: String,
}

impl Server {
    /// Starts `runstream serve` on a fresh port with `data` as its data folder.
    pub fn start(data: &Path) -> Server {
        Server::start_role("serve", data, &[])
    }

    /// Starts `runstream ROLE` (`serve`, `ingest`, `project`, `query`) on a fresh port with
    /// `data` as its data folder and more flags.
    pub fn start_role(role: &str, data: &Path, flags: &[&str]) -> Server {
        Server::start_with_env(role, data, flags, &[])
    }

    /// As [`Server::start_role`], with more environment variables.
    pub fn start_with_env(role: &str, data: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runstream"))
            .args([role, "--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--data")
            .arg(data)
            .envs(env.iter().copied())
            .env("RUNSTREAM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "RUNSTREAM_LOG",
                std::env::var("RUNSTREAM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start runstream");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("runstream listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("runstream did not report its address");
        Server {
            child,
            base,
            data: data.to_path_buf(),
            token: ADMIN_TOKEN.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "runstream exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("runstream did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// A fresh random event id, as a client makes one.
pub fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Posts a JSON batch; returns (status, body).
pub async fn post_events(s: &Server, project: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = client()
        .post(s.url(&format!("/api/v1/projects/{project}/events")))
        .bearer_auth(&s.token)
        .json(body)
        .send()
        .await
        .expect("post events");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// GET with the admin token; returns (status, body).
pub async fn get_json(s: &Server, path_and_query: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(s.url(path_and_query))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Runs `runstream` with arguments to completion; returns stdout.
pub fn run_cli(args: &[&str], data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runstream"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUNSTREAM_LOG", "warn")
        .output()
        .expect("run runstream");
    assert!(
        out.status.success(),
        "runstream {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The highest offset per partition over several position tokens, as one token.
pub fn merge_positions<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> String {
    let mut m: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for t in tokens {
        for part in t.as_ref().split(',').filter(|p| !p.is_empty()) {
            let (p, o) = part.split_once(':').expect("position token");
            let (p, o): (u32, u64) = (p.parse().unwrap(), o.parse().unwrap());
            let e = m.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
    }
    m.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>().join(",")
}
