//! Position tokens: `0:17,3:5` means "offset 17 of partition 0 and offset 5 of partition 3".
//! A write answers with the positions it reached; a read that passes the token waits until the
//! views have applied them (read-your-writes on demand).

use std::collections::BTreeMap;
use std::fmt;

use runstream_log::Position;

use crate::ApiError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionToken(pub BTreeMap<u32, u64>);

impl PositionToken {
    /// The highest offset per partition among `positions`.
    pub fn from_positions(positions: impl IntoIterator<Item = Position>) -> Self {
        let mut m = BTreeMap::new();
        for p in positions {
            let e = m.entry(p.partition).or_insert(p.offset);
            *e = (*e).max(p.offset);
        }
        Self(m)
    }

    pub fn parse(field: &str, s: &str) -> Result<Self, ApiError> {
        let mut m = BTreeMap::new();
        if s.is_empty() {
            return Ok(Self(m));
        }
        for part in s.split(',') {
            let parsed = part
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)));
            let (p, o) = parsed
                .ok_or_else(|| ApiError::invalid(field, format!("{s:?} is not a position token like \"0:17,3:5\"")))?;
            m.insert(p, o);
        }
        Ok(Self(m))
    }

    /// Whether views with this checkpoint (next offset per partition) have applied the positions.
    pub fn reached_by(&self, checkpoint: &BTreeMap<u32, u64>) -> bool {
        self.0
            .iter()
            .all(|(p, o)| checkpoint.get(p).is_some_and(|next| next > o))
    }
}

impl fmt::Display for PositionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (p, o) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{p}:{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_compare_with_checkpoints() {
        let t = PositionToken::from_positions([
            Position {
                partition: 0,
                offset: 3,
            },
            Position {
                partition: 0,
                offset: 9,
            },
            Position {
                partition: 2,
                offset: 1,
            },
        ]);
        assert_eq!(t.to_string(), "0:9,2:1");
        assert_eq!(PositionToken::parse("p", "0:9,2:1").unwrap(), t);
        assert!(PositionToken::parse("p", "0-9").is_err());
        assert!(!t.reached_by(&BTreeMap::from([(0, 9), (2, 5)])));
        assert!(t.reached_by(&BTreeMap::from([(0, 10), (2, 2)])));
        assert!(!t.reached_by(&BTreeMap::from([(0, 10)])));
    }
}
