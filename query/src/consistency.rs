//! Read-your-writes on demand: wait until the views have applied a position token.

use std::time::{Duration, Instant};

use runstream_http::{ApiError, PositionToken};
use runstream_views::ViewStore;

pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub async fn wait_for(views: &dyn ViewStore, min_position: Option<&str>, wait_ms: Option<u64>) -> Result<(), ApiError> {
    let Some(raw) = min_position.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let token = PositionToken::parse("min_position", raw)?;
    let wait = wait_ms.map_or(DEFAULT_WAIT, Duration::from_millis).min(MAX_WAIT);
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if token.reached_by(&views.checkpoint().await?) {
            return Ok(());
        }
        if start.elapsed() >= wait {
            return Err(ApiError::timeout(format!(
                "views have not reached position {token} within {} ms; retry later",
                wait.as_millis()
            )));
        }
        tokio::time::sleep(pause.min(wait.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
