//! `runstream serve`: every role in one process, on the embedded default unless told otherwise;
//! `runstream ingest`, `project` and `query`: one role each, for deployments that scale them
//! apart. Every role answers `/healthz` (the process is up) and `/readyz` (it can reach what it
//! needs).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use object_store::ObjectStore;
use runstream_ingest::{IngestLimits, IngestState};
use runstream_log::EventLog;
use runstream_projector::{Projector, ProjectorConfig, ProjectorStats};
use runstream_query::QueryState;
use runstream_schema::{ProjectId, WorkspaceId};
use runstream_views::ClickHouseViews;
use runstream_views::registry::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::registry_follow;

pub fn open_blobs(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).with_context(|| format!("creating blob folder {path}"))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .with_context(|| format!("opening blob folder {path}"))?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        return open_s3(url, rest);
    }
    anyhow::bail!("blob store url {url:?} is not supported (expected file://PATH or s3://BUCKET[/PREFIX])")
}

/// `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]`: an S3 bucket, or any store speaking S3's
/// API at `endpoint` (path-style requests; plain HTTP allowed for an `http://` endpoint).
/// Credentials and the defaults of the other settings come from the usual environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT`).
fn open_s3(url: &str, rest: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        anyhow::bail!("blob store url {url:?} names no bucket (expected s3://BUCKET[/PREFIX])");
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("endpoint", e)) => {
                builder = builder.with_endpoint(e).with_allow_http(e.starts_with("http://"));
            }
            Some(("region", r)) => builder = builder.with_region(r),
            _ => {
                anyhow::bail!("blob store url {url:?}: unknown option {pair:?} (expected endpoint=URL or region=NAME)")
            }
        }
    }
    let store = builder.build().with_context(|| format!("opening blob store {url}"))?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    })
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub project: bool,
    pub query: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingest: true,
        project: true,
        query: true,
    };
    pub const INGEST: Roles = Roles {
        ingest: true,
        project: false,
        query: false,
    };
    pub const PROJECT: Roles = Roles {
        ingest: false,
        project: true,
        query: false,
    };
    pub const QUERY: Roles = Roles {
        ingest: false,
        project: false,
        query: true,
    };

    /// The role label of this process's metrics.
    pub fn name(self) -> &'static str {
        match (self.ingest, self.project, self.query) {
            (true, false, false) => "ingest",
            (false, true, false) => "project",
            (false, false, true) => "query",
            _ => "serve",
        }
    }
}

pub async fn serve(cfg: Config, roles: Roles) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data).with_context(|| format!("creating data folder {}", cfg.data.display()))?;
    let log = runstream_log::open(&cfg.log_url, "events", cfg.partitions).await?;
    let registry_log = runstream_log::open(&cfg.log_url, "registry", 1).await?;
    let registry = Arc::new(Registry::new());
    runstream_ingest::load_registry(registry_log.as_ref(), &registry).await?;

    // The first start creates the default workspace; ingest owns writes, so only it does.
    let created = if !roles.ingest {
        None
    } else {
        runstream_ingest::bootstrap(
            registry_log.clone(),
            &registry,
            WorkspaceId::new("default")?,
            ProjectId::new("default")?,
            cfg.admin_token.clone(),
        )
        .await?
    };
    if let Some(b) = &created {
        let token_file = cfg.data.join("admin-token");
        std::fs::write(&token_file, format!("{}\n", b.token)).context("writing the admin token file")?;
        restrict(&token_file);
        eprintln!(
            "first start: created workspace {:?}, project {:?} and an admin token (also in {}):\n\n    {}\n\n\
             try: curl -H 'Authorization: Bearer {}' http://{}/api/v1/projects\n",
            b.workspace.as_str(),
            b.project.as_str(),
            token_file.display(),
            b.token,
            b.token,
            cfg.listen
        );
    } else if let Some(token) = cfg
        .admin_token
        .as_ref()
        .filter(|t| roles.ingest && registry.authenticate(t).is_err())
    {
        runstream_ingest::register_admin_token(registry_log.clone(), &registry, token).await?;
        tracing::info!("registered RUNSTREAM_ADMIN_TOKEN as an admin token");
    }
    runstream_ingest::load_registry(registry_log.as_ref(), &registry).await?;

    let views_url = cfg.current_views_url()?;
    // ClickHouse views named without a generation follow the current one, which `runstream
    // rebuild` moves while this process serves.
    let (views, generations): (Arc<dyn runstream_views::ViewStore>, _) = if views_url.starts_with("clickhouse://") {
        let ch = Arc::new(
            ClickHouseViews::open(&views_url)
                .await
                .with_context(|| format!("opening views {views_url}"))?,
        );
        let generations = ch.follow(GENERATION_POLL);
        (ch, Some(generations))
    } else {
        let views = runstream_views::open(&views_url)
            .await
            .with_context(|| format!("opening views {views_url}"))?;
        (views, None)
    };
    let blobs = open_blobs(&cfg.blobs_url)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut metrics = Metrics::new(roles.name());
    let projector_task = roles.project.then(|| {
        // Projectors of one views store form one group; another store (a staging database, a
        // generation being rebuilt) gets a group of its own, so each folds every partition.
        let config = ProjectorConfig {
            group: projector_group(&views_url),
            member: cfg.projector_id.clone(),
            ..ProjectorConfig::for_views(&views_url)
        };
        let stats = Arc::new(ProjectorStats::default());
        metrics.projector = Some(stats.clone());
        metrics.lag = Some((log.clone(), views.clone()));
        let rx = shutdown_rx.clone();
        match generations.clone() {
            None => {
                let mut projector = Projector::new(log.clone(), views.clone(), config);
                projector.stats = stats;
                tokio::spawn(async move { Ok(projector.run(rx).await?) })
            }
            Some(generations) => tokio::spawn(project_generations(
                log.clone(),
                views_url.clone(),
                generations,
                config,
                stats,
                rx,
            )),
        }
    });
    metrics.generation = generations;
    let follower = tokio::spawn(registry_follow::follow(
        registry_log.clone(),
        registry.clone(),
        shutdown_rx.clone(),
    ));

    let ingest = IngestState::new(
        log.clone(),
        registry_log,
        views.clone(),
        blobs.clone(),
        registry.clone(),
        IngestLimits::default(),
    );
    let ingest = match cfg.blobs_url.strip_prefix("file://") {
        Some(root) => ingest.with_blob_root(root),
        None => ingest,
    };
    if roles.ingest {
        metrics.ingest = Some(ingest.stats.clone());
    }
    let metrics = Arc::new(metrics);
    let query = QueryState {
        views,
        log,
        blobs,
        registry,
    };
    let mut app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get({
            let (log, views) = (query.log.clone(), query.views.clone());
            move || ready(log.clone(), views.clone())
        }),
    );
    if roles.ingest {
        // MLflow's API writes and reads (its clients expect their writes back at once), so it
        // goes with ingest, which holds the log, the registry and the views.
        app = app.merge(runstream_mlflow::router(runstream_mlflow::MlflowState::new(
            ingest.clone(),
        )));
        app = app.merge(runstream_ingest::router(ingest));
    }
    if roles.query {
        app = app.merge(runstream_query::router(query));
    }
    // The fallback goes before the layer, so requests that match no route are timed too.
    let app = app
        .route("/metrics", get(metrics::serve_metrics).with_state(metrics.clone()))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            runstream_http::ApiError::not_found(format!("no route for {method} {}", uri.path()))
        })
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track));

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("runstream listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    // Requests in flight have been answered; everything acknowledged is in the log already.
    let _ = shutdown_tx.send(true);
    let projector_task = match projector_task {
        Some(t) => Some(t.await),
        None => None,
    };
    match projector_task {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => tracing::error!(error = %e, "projector stopped with an error"),
        Some(Err(e)) => tracing::error!(error = %e, "projector task failed"),
    }
    let _ = follower.await;
    eprintln!("runstream stopped");
    Ok(())
}

/// How often a process serving ClickHouse views looks for a switch of their generation.
const GENERATION_POLL: Duration = Duration::from_secs(1);

/// Projects into each generation of the ClickHouse views at `url` while it is current: the
/// views of one generation, pinned, so that a flush under way when the generation changes goes
/// to the tables its positions came from; then again from the next generation's checkpoint.
async fn project_generations(
    log: Arc<dyn EventLog>,
    url: String,
    mut generations: watch::Receiver<String>,
    config: ProjectorConfig,
    stats: Arc<ProjectorStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let generation = generations.borrow_and_update().clone();
        let pinned = runstream_views::generations::pinned_url(&url, &generation);
        let views: Arc<dyn runstream_views::ViewStore> = loop {
            match ClickHouseViews::open(&pinned).await {
                Ok(v) => break Arc::new(v),
                Err(e) => {
                    tracing::warn!(error = %e, generation, "cannot open the views to project into; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        };
        let mut projector = Projector::new(log.clone(), views, config.clone());
        projector.stats = stats.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut run = tokio::spawn(async move { projector.run(stop_rx).await });
        tokio::select! {
            result = &mut run => return Ok(result??),
            _ = shutdown.changed() => {
                let _ = stop_tx.send(true);
                return Ok(run.await??);
            }
            changed = generations.changed() => {
                // Finish the flush under way into the old generation, then start on the new one.
                let _ = stop_tx.send(true);
                run.await??;
                if changed.is_err() {
                    return Ok(());
                }
                tracing::info!(generation = %generations.borrow().as_str(), "projecting into the new generation of the views");
            }
        }
    }
}

/// The consumer group of the projectors that fill the views at `views_url`: named after the
/// views (their URL without credentials, hashed to a stable name).
fn projector_group(views_url: &str) -> String {
    let without_credentials = match views_url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => views_url.to_string(),
    };
    // The log's stable key hash, over as many "partitions" as a u32 holds.
    let h = runstream_log::partition_for(&without_credentials, u32::MAX);
    format!("projectors-{h:08x}")
}

/// Ready when the log and the views answer: a load balancer stops sending requests to a
/// process that cannot serve them, with the reason in the body.
async fn ready(
    log: Arc<dyn runstream_log::EventLog>,
    views: Arc<dyn runstream_views::ViewStore>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let within = std::time::Duration::from_secs(5);
    match tokio::time::timeout(within, log.end_offsets()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("log: {e}\n")),
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "log: no answer within 5 s\n".into()),
    }
    match tokio::time::timeout(within, views.checkpoint()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("views: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "views: no answer within 5 s\n".into()),
    }
}

#[cfg(unix)]
fn restrict(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &std::path::Path) {}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn projector_groups_follow_the_views_not_the_credentials() {
        let g = super::projector_group("clickhouse://a:secret@ch:8123/prod");
        assert_eq!(g, super::projector_group("clickhouse://b:other@ch:8123/prod"));
        assert_ne!(g, super::projector_group("clickhouse://ch:8123/staging"));
        assert!(g.starts_with("projectors-"));
    }
}
