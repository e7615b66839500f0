//! Following the registry log: other processes' registry writes reach this one's registry.

use std::sync::Arc;
use std::time::Duration;

use runstream_ingest::load_registry;
use runstream_log::EventLog;
use runstream_views::registry::Registry;
use tokio::sync::watch;

/// Keeps `registry` current with records other processes append.
pub async fn follow(log: Arc<dyn EventLog>, registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let known = vec![registry.next_offset()];
        tokio::select! {
            _ = log.wait_for_new(&known, Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = load_registry(log.as_ref(), &registry).await {
            tracing::warn!(error = %e, "following the registry failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
