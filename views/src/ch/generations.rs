//! Generations of the ClickHouse views: sets of tables side by side in one database, named by a
//! prefix (`g0_runs`, `g1_runs`, ...), and a pointer to the one being served.
//!
//! The pointer is the `generations` table of the database: one row per switch, the newest row
//! naming the current generation (`g0` before any switch). `runstream rebuild` replays the log
//! into a new generation while the current one keeps serving, then adds a row; every process
//! that opened the views without naming a generation notices within its poll interval and reads
//! the new tables from then on, and its projector starts again on them from their checkpoint.
//! Tables of a generation that is no longer current are left for the operator to drop.

use std::sync::{Arc, Weak};
use std::time::Duration;

use clickhouse::Client;
use tokio::sync::watch;

use super::{ClickHouseUrl, ClickHouseViews, storage};
use crate::ViewError;

/// The generation of a database with no switch recorded: where views lived before generations.
pub const FIRST: &str = "g0";

async fn ensure_pointer(client: &Client) -> Result<(), ViewError> {
    client
        .query("CREATE TABLE IF NOT EXISTS generations (name String, switched_ms Int64) ENGINE = MergeTree ORDER BY switched_ms")
        .execute()
        .await
        .map_err(storage)
}

/// The current generation of the database the client is in, whose pointer table exists.
async fn current(client: &Client) -> Result<String, ViewError> {
    let newest: Vec<String> = client
        .query("SELECT name FROM generations ORDER BY switched_ms DESC, name DESC LIMIT 1")
        .fetch_all()
        .await
        .map_err(storage)?;
    Ok(newest.into_iter().next().unwrap_or_else(|| FIRST.to_string()))
}

fn database_client(url: &str) -> Result<Client, ViewError> {
    let u = ClickHouseUrl::parse(url)?;
    Ok(u.client().with_database(&u.database))
}

/// The current generation of the database the client is in, creating the pointer table if the
/// database has none yet.
pub(super) async fn current_or_first(client: &Client) -> Result<String, ViewError> {
    ensure_pointer(client).await?;
    current(client).await
}

/// The current generation of the URL's database.
pub async fn current_of(url: &str) -> Result<String, ViewError> {
    current_or_first(&database_client(url)?).await
}

/// A name for a new generation: one past the highest `gN` current, recorded or with tables.
pub async fn next(url: &str) -> Result<String, ViewError> {
    let client = database_client(url)?;
    ensure_pointer(&client).await?;
    let names: Vec<String> = client
        .query(
            "SELECT name FROM generations UNION ALL
             SELECT substring(name, 1, length(name) - length('_migrations')) FROM system.tables
             WHERE database = currentDatabase() AND endsWith(name, '_migrations')",
        )
        .fetch_all()
        .await
        .map_err(storage)?;
    let highest = names
        .iter()
        .filter_map(|n| n.strip_prefix('g').and_then(|d| d.parse::<u64>().ok()))
        .max();
    Ok(match highest {
        Some(n) => format!("g{}", n + 1),
        None => "g1".to_string(),
    })
}

/// The URL with its generation named.
pub fn pinned_url(url: &str, generation: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    format!("{base}?generation={generation}")
}

/// Makes `generation` the current one of the URL's database.
pub async fn switch(url: &str, generation: &str) -> Result<(), ViewError> {
    let client = database_client(url)?;
    ensure_pointer(&client).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    client
        .query("INSERT INTO generations (name, switched_ms) VALUES (?, ?)")
        .bind(generation)
        .bind(now)
        .execute()
        .await
        .map_err(storage)
}

impl ClickHouseViews {
    /// Follows the current generation: every `interval` the pointer is read, and when it names
    /// another generation these views read its tables from then on. The receiver sees each
    /// generation served. Views whose URL named a generation never move; their receiver holds
    /// that generation alone. The polling ends when the views are dropped.
    pub fn follow(self: &Arc<Self>, interval: Duration) -> watch::Receiver<String> {
        let (tx, rx) = watch::channel(self.generation());
        if self.pinned {
            return rx;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            // Whether the last read failed: a server that is away is reported once, not every
            // poll.
            let mut failing = false;
            loop {
                tokio::time::sleep(interval).await;
                let Some(views) = weak.upgrade() else { return };
                match current(&views.client).await {
                    Ok(g) => {
                        if failing {
                            tracing::info!("reading the current generation of the views again");
                            failing = false;
                        }
                        if g != views.generation() {
                            tracing::info!(from = %views.generation(), to = %g, "serving another generation of the views");
                            *views.prefix.write().unwrap_or_else(|e| e.into_inner()) = format!("{g}_");
                            let _ = tx.send(g);
                        }
                    }
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "cannot read the current generation of the views; still serving the last one");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pin_a_generation() {
        assert_eq!(
            pinned_url("clickhouse://ch:8123/db", "g3"),
            "clickhouse://ch:8123/db?generation=g3"
        );
        assert_eq!(
            pinned_url("clickhouse://ch:8123/db?generation=g1", "g2"),
            "clickhouse://ch:8123/db?generation=g2"
        );
    }
}
