//! The `runstream` binary: configuration and the wiring of roles, nothing else.

mod config;
mod metrics;
mod registry_follow;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigArgs};

#[derive(Parser)]
#[command(name = "runstream", version, about = "An experiment tracker built on an event log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role (ingest, projector, query) in one process.
    Serve(ConfigArgs),
    /// Accept writes: append events to the log, store files. Scale it like any web service.
    Ingest(ConfigArgs),
    /// Fold the log into the views. Projectors share the log's partitions between them.
    Project(ConfigArgs),
    /// Answer reads from the views: search, series, lineage, the web UI.
    Query(ConfigArgs),
    /// Replay the whole log into a fresh generation of views, then make it the current one.
    /// Run it while `serve` is stopped; the next `serve` reads the new generation.
    Rebuild(ConfigArgs),
    /// Print a canonical dump of the current views (for comparing two generations).
    Dump(ConfigArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RUNSTREAM_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    match cli.command {
        Command::Serve(args) => serve::serve(Config::resolve(args, &env)?, serve::Roles::ALL).await,
        Command::Ingest(args) => serve::serve(Config::resolve(args, &env)?, serve::Roles::INGEST).await,
        Command::Project(args) => serve::serve(Config::resolve(args, &env)?, serve::Roles::PROJECT).await,
        Command::Query(args) => serve::serve(Config::resolve(args, &env)?, serve::Roles::QUERY).await,
        Command::Rebuild(args) => rebuild(Config::resolve(args, &env)?).await,
        Command::Dump(args) => {
            let cfg = Config::resolve(args, &env)?;
            let views = runstream_views::open(&cfg.current_views_url()?).await?;
            print!("{}", views.dump().await?);
            Ok(())
        }
    }
}

async fn rebuild(cfg: Config) -> anyhow::Result<()> {
    let log = runstream_log::open(&cfg.log_url, "events", cfg.partitions).await?;
    if let Some(url) = cfg.views_url().filter(|u| u.starts_with("clickhouse://")) {
        return rebuild_clickhouse(log, url).await;
    }
    let (generation, url) = cfg.next_views_generation()?;
    let replayed = replay_into(log, &url).await?;
    cfg.switch_views_generation(&generation)?;
    eprintln!("rebuilt views generation {generation}: {replayed}");
    Ok(())
}

/// Replays the whole log into the (new) views at `url`; says how much and how fast. Catching up
/// reads every partition itself, in no consumer group, so serving projectors keep theirs.
async fn replay_into(log: std::sync::Arc<dyn runstream_log::EventLog>, url: &str) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let views = runstream_views::open(url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let config = runstream_projector::ProjectorConfig::for_views(url);
    let projector = runstream_projector::Projector::new(log, views, config);
    projector.catch_up().await?;
    let points = projector.stats.points.load(std::sync::atomic::Ordering::Relaxed);
    let events = projector.stats.events.load(std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "{events} events, {points} points in {secs:.2} s ({:.0} points/s)",
        points as f64 / secs.max(1e-9)
    ))
}

/// Rebuilds ClickHouse views beside the generation being served: replays the log into a new
/// generation of tables, and when it has caught up makes it current. Serving processes switch
/// to it within a second; their projectors go on from its checkpoint, so what was appended
/// during the replay reaches it too.
async fn rebuild_clickhouse(log: std::sync::Arc<dyn runstream_log::EventLog>, url: &str) -> anyhow::Result<()> {
    use runstream_views::generations;
    let old = generations::current_of(url).await?;
    let generation = generations::next(url).await?;
    let replayed = replay_into(log, &generations::pinned_url(url, &generation)).await?;
    generations::switch(url, &generation).await?;
    eprintln!(
        "rebuilt views generation {generation} (was {old}): {replayed}; the tables of {old} ({old}_*) \
         can be dropped once no process serves them"
    );
    Ok(())
}
