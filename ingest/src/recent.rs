//! Ids of recently appended events, so that a retried batch is answered without appending again.
//! Two generations bound the memory: when the young one fills, the old one is dropped.

use std::sync::Mutex;

use runstream_log::Position;
use runstream_schema::EventId;
use std::collections::HashMap;

pub struct RecentIds {
    capacity: usize,
    gens: Mutex<(HashMap<EventId, Position>, HashMap<EventId, Position>)>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            gens: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    pub fn get(&self, id: &EventId) -> Option<Position> {
        let g = self.gens.lock().expect("recent ids");
        g.0.get(id).or_else(|| g.1.get(id)).copied()
    }

    pub fn insert_all(&self, items: impl IntoIterator<Item = (EventId, Position)>) {
        let mut g = self.gens.lock().expect("recent ids");
        for (id, pos) in items {
            if g.0.len() >= self.capacity {
                let young = std::mem::take(&mut g.0);
                g.1 = young;
            }
            g.0.insert(id, pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_least_capacity_ids() {
        let r = RecentIds::new(2);
        let pos = |o| Position {
            partition: 0,
            offset: o,
        };
        r.insert_all([(EventId(1), pos(1)), (EventId(2), pos(2)), (EventId(3), pos(3))]);
        assert_eq!(r.get(&EventId(3)), Some(pos(3)));
        assert_eq!(r.get(&EventId(2)), Some(pos(2)));
        r.insert_all([(EventId(4), pos(4)), (EventId(5), pos(5))]);
        assert_eq!(r.get(&EventId(1)), None);
        assert_eq!(r.get(&EventId(5)), Some(pos(5)));
    }
}
