//! Flushing: dedupe against applied event ids, fold, and write rows with the checkpoint.

use std::collections::HashSet;

use runstream_views::{ViewError, ViewStore};

use crate::consume::Polled;
use crate::fold::fold;

pub struct FlushStats {
    pub events: usize,
    pub points: usize,
}

pub async fn flush(views: &dyn ViewStore, polled: &Polled) -> Result<FlushStats, ViewError> {
    let ids: Vec<_> = polled
        .records
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.id))
        .collect();
    let known: HashSet<_> = if ids.is_empty() {
        HashSet::new()
    } else {
        views.known_events(ids).await?
    };
    let mut batch = fold(&polled.records, &known);
    // Records that could not be decoded still move the checkpoint on.
    for pos in &polled.skipped {
        match batch.checkpoint.iter_mut().find(|(p, _)| *p == pos.partition) {
            Some((_, next)) => *next = (*next).max(pos.offset + 1),
            None => batch.checkpoint.push((pos.partition, pos.offset + 1)),
        }
    }
    let stats = FlushStats {
        events: batch.events.len(),
        points: batch.point_count(),
    };
    views.apply(batch).await?;
    Ok(stats)
}
