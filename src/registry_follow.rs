//! Loading the registry at start and following the registry log afterwards.

use std::sync::Arc;
use std::time::Duration;

use runstream_log::EventLog;
use runstream_schema::decode_registry;
use runstream_views::registry::Registry;
use tokio::sync::watch;

/// Applies registry records from `from` to the end; returns the next offset.
pub async fn load(log: &dyn EventLog, registry: &Registry, mut from: u64) -> anyhow::Result<u64> {
    loop {
        let records = log.read(0, from, 1024).await?;
        if records.is_empty() {
            return Ok(from);
        }
        for r in records {
            match decode_registry(&r.payload) {
                Ok(events) => events.iter().for_each(|e| registry.apply(e)),
                Err(e) => tracing::error!(offset = r.position.offset, error = %e, "undecodable registry record"),
            }
            from = r.position.offset + 1;
        }
    }
}

/// Keeps `registry` current with records other processes append.
pub async fn follow(
    log: Arc<dyn EventLog>,
    registry: Arc<Registry>,
    mut next: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let known = vec![next];
        tokio::select! {
            _ = log.wait_for_new(&known, Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        match load(log.as_ref(), &registry, next).await {
            Ok(n) => next = n,
            Err(e) => {
                tracing::warn!(error = %e, "following the registry failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
