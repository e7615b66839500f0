//! `GET /metrics`: Prometheus's text format, on every role.
//!
//! What a role does is counted where it happens (ingest's accepted events and points, the
//! projector's flushes) in atomics; the HTTP layer times every request by route. A scrape reads
//! them all and, where the process projects, the lag of each partition: the log's end offset
//! less the views' checkpoint, asked of both at scrape time.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use runstream_ingest::IngestStats;
use runstream_log::EventLog;
use runstream_projector::ProjectorStats;
use runstream_views::ViewStore;

/// Upper bounds of the request latency buckets, in seconds.
const BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A cumulative histogram of seconds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = BOUNDS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, n) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Everything one process reports.
pub struct Metrics {
    pub role: &'static str,
    /// Request latencies by (method, route, status class).
    requests: DashMap<(String, String, &'static str), Histogram>,
    pub ingest: Option<Arc<IngestStats>>,
    pub projector: Option<Arc<ProjectorStats>>,
    /// The log and views whose distance is the projector's lag.
    pub lag: Option<(Arc<dyn EventLog>, Arc<dyn ViewStore>)>,
    /// The generation of the ClickHouse views being served, where it can change.
    pub generation: Option<tokio::sync::watch::Receiver<String>>,
    started: Instant,
}

impl Metrics {
    pub fn new(role: &'static str) -> Self {
        Metrics {
            role,
            requests: DashMap::new(),
            ingest: None,
            projector: None,
            lag: None,
            generation: None,
            started: Instant::now(),
        }
    }

    async fn render(&self) -> String {
        let mut out = String::new();
        let role = self.role;
        family(
            &mut out,
            "runstream_up_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        let _ = writeln!(
            out,
            "runstream_up_seconds{{role=\"{role}\"}} {}",
            self.started.elapsed().as_secs_f64()
        );
        family(
            &mut out,
            "runstream_http_request_duration_seconds",
            "histogram",
            "HTTP requests by route and status class.",
        );
        let mut keys: Vec<_> = self.requests.iter().map(|e| e.key().clone()).collect();
        keys.sort();
        for k in keys {
            if let Some(h) = self.requests.get(&k) {
                let labels = format!(
                    "role=\"{role}\",method=\"{}\",route=\"{}\",status=\"{}\"",
                    k.0,
                    escape(&k.1),
                    k.2
                );
                h.render(&mut out, "runstream_http_request_duration_seconds", &labels);
            }
        }
        if let Some(g) = &self.generation {
            family(
                &mut out,
                "runstream_views_generation_info",
                "gauge",
                "The generation of the views this process serves (1 on its label).",
            );
            let g = g.borrow().clone();
            let _ = writeln!(
                out,
                "runstream_views_generation_info{{role=\"{role}\",generation=\"{}\"}} 1",
                escape(&g)
            );
        }
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        if let Some(s) = &self.ingest {
            for (name, help, v) in [
                (
                    "runstream_ingest_events_total",
                    "Events appended to the log.",
                    &s.events,
                ),
                (
                    "runstream_ingest_points_total",
                    "Points (and lines) in the events appended.",
                    &s.points,
                ),
                (
                    "runstream_ingest_duplicate_events_total",
                    "Events sent again and answered from the record of the first.",
                    &s.duplicates,
                ),
            ] {
                family(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {}", load(v));
            }
        }
        if let Some(s) = &self.projector {
            for (name, help, v) in [
                (
                    "runstream_projector_events_total",
                    "Events folded into the views.",
                    &s.events,
                ),
                (
                    "runstream_projector_points_total",
                    "Points folded into the views.",
                    &s.points,
                ),
                (
                    "runstream_projector_skipped_records_total",
                    "Log records that could not be decoded and were stepped over.",
                    &s.skipped_records,
                ),
            ] {
                family(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {}", load(v));
            }
            let name = "runstream_projector_flush_seconds";
            family(&mut out, name, "summary", "Time and count of flushes into the views.");
            let _ = writeln!(out, "{name}_sum {}", load(&s.flush_micros) as f64 / 1e6);
            let _ = writeln!(out, "{name}_count {}", load(&s.flushes));
            for (name, help, v) in [
                (
                    "runstream_projector_last_flush_points",
                    "Points in the last flush.",
                    &s.last_flush_points,
                ),
                (
                    "runstream_projector_partitions",
                    "Partitions this projector folds (its share of the group).",
                    &s.share,
                ),
            ] {
                family(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name} {}", load(v));
            }
        }
        if let Some((log, views)) = &self.lag {
            // Lag over all partitions: whichever projector holds one, the views are that far behind.
            if let (Ok(ends), Ok(checkpoint)) = (log.end_offsets().await, views.checkpoint().await) {
                let name = "runstream_projector_lag_records";
                family(
                    &mut out,
                    name,
                    "gauge",
                    "Records in the log not yet in the views, per partition.",
                );
                for (p, end) in ends.iter().enumerate() {
                    let done = checkpoint.get(&(p as u32)).copied().unwrap_or(0);
                    let _ = writeln!(out, "{name}{{partition=\"{p}\"}} {}", end.saturating_sub(done));
                }
            }
        }
        out
    }
}

/// The HELP and TYPE lines that open a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Times every request, labelled by its route pattern (never the raw path, whose ids would make
/// a series per run).
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Known methods only: a client's invented method names must not make new series.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    m.requests
        .entry((method, route, class))
        .or_default()
        .observe(started.elapsed().as_secs_f64());
    resp
}

pub async fn serve_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render().await,
    )
}
