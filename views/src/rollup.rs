//! Series rollups: pure aggregation, shared by every view store.
//!
//! A rollup row summarises the points of one series whose steps fall in one bucket
//! `[b << shift, (b + 1) << shift)`, for each shift in [`LEVELS`]. Rows of a finer level merge
//! into the coarser one, so the projector recomputes only the buckets a flush touched: level 0
//! from raw points, each further level from the one below. NaN values count in `count` but not in
//! min, max or mean (a chart cannot draw them).

use std::collections::BTreeSet;

use crate::Bucket;

/// Bucket widths, as shifts of the step: 64, 1 Ki, 16 Ki, 256 Ki and 4 Mi steps.
pub const LEVELS: [u32; 5] = [6, 10, 14, 18, 22];

/// The aggregate of some points of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: u64,
    /// Values that are not NaN.
    pub n_values: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub first_step: i64,
    pub last_step: i64,
    pub last_value: f64,
    pub last_time_ms: i64,
}

impl Default for Agg {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl Agg {
    pub const EMPTY: Agg = Agg {
        count: 0,
        n_values: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sum: 0.0,
        first_step: i64::MAX,
        last_step: i64::MIN,
        last_value: f64::NAN,
        last_time_ms: 0,
    };

    /// Adds one point. Points may come in any step order.
    pub fn add(&mut self, step: i64, time_ms: i64, value: f64) {
        self.merge(&Agg {
            count: 1,
            n_values: u64::from(!value.is_nan()),
            min: if value.is_nan() { f64::INFINITY } else { value },
            max: if value.is_nan() { f64::NEG_INFINITY } else { value },
            sum: if value.is_nan() { 0.0 } else { value },
            first_step: step,
            last_step: step,
            last_value: value,
            last_time_ms: time_ms,
        });
    }

    pub fn merge(&mut self, o: &Agg) {
        if o.count == 0 {
            return;
        }
        self.count += o.count;
        self.n_values += o.n_values;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.first_step = self.first_step.min(o.first_step);
        // The last point is the latest of the highest step (MLflow's latest metric).
        if (o.last_step, o.last_time_ms) >= (self.last_step, self.last_time_ms) {
            self.last_step = o.last_step;
            self.last_value = o.last_value;
            self.last_time_ms = o.last_time_ms;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn min_opt(&self) -> Option<f64> {
        (self.n_values > 0).then_some(self.min)
    }

    pub fn max_opt(&self) -> Option<f64> {
        (self.n_values > 0).then_some(self.max)
    }

    pub fn mean_opt(&self) -> Option<f64> {
        (self.n_values > 0).then(|| self.sum / self.n_values as f64)
    }

    pub fn to_bucket(&self) -> Bucket {
        Bucket {
            from_step: self.first_step,
            to_step: self.last_step,
            count: self.count,
            min: self.min_opt(),
            max: self.max_opt(),
            mean: self.mean_opt(),
            last_step: self.last_step,
            last_value: self.last_value,
            last_time_ms: self.last_time_ms,
        }
    }
}

/// The buckets of every level that the given steps fall in: what a flush must recompute.
pub fn dirty_buckets(steps: &[i64]) -> Vec<BTreeSet<i64>> {
    let mut base: BTreeSet<i64> = BTreeSet::new();
    // Steps come mostly in order: a bucket is looked up once per run of its steps.
    let mut last = None;
    for s in steps {
        let b = s >> LEVELS[0];
        if last != Some(b) {
            base.insert(b);
            last = Some(b);
        }
    }
    let mut out = Vec::with_capacity(LEVELS.len());
    for shift in LEVELS {
        let d = shift - LEVELS[0];
        out.push(base.iter().map(|b| b >> d).collect());
    }
    out
}

/// The step range a bucket of a level covers.
pub fn bucket_range(level: usize, bucket: i64) -> (i64, i64) {
    let shift = LEVELS[level];
    // Or-ing the low bits in, rather than computing the next bucket's start, keeps the last
    // bucket (which holds i64::MAX) from overflowing.
    (bucket << shift, (bucket << shift) | ((1 << shift) - 1))
}

/// How a read of `buckets` buckets over `from..=to` is served: from raw points (`None`) when
/// the range is narrow, else from the finest level that reads at most about four rows per bucket.
pub fn choose_level(from: i64, to: i64, buckets: usize) -> Option<usize> {
    let width = (to as i128 - from as i128 + 1).max(1) as u128;
    let budget = (buckets.max(1) as u128) * 4;
    if width <= budget {
        return None;
    }
    for (i, shift) in LEVELS.iter().enumerate() {
        if (width >> shift) <= budget {
            return Some(i);
        }
    }
    Some(LEVELS.len() - 1)
}

/// Merges aggregates (each covering steps in `first_step..=last_step`, given in step order) into
/// at most `buckets` equal-width buckets over `from..=to`. Empty buckets are left out.
pub fn regroup(from: i64, to: i64, buckets: usize, parts: impl IntoIterator<Item = Agg>) -> Vec<Bucket> {
    let width = ((to as i128 - from as i128 + 1).max(1) as u128)
        .div_ceil(buckets.max(1) as u128)
        .max(1);
    let mut out: Vec<Bucket> = Vec::new();
    let mut current: Option<(u128, Agg)> = None;
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let idx = (part.first_step as i128 - from as i128).max(0) as u128 / width;
        match &mut current {
            Some((i, agg)) if *i == idx => agg.merge(&part),
            _ => {
                if let Some((_, agg)) = current.take() {
                    out.push(agg.to_bucket());
                }
                current = Some((idx, part));
            }
        }
    }
    if let Some((_, agg)) = current {
        out.push(agg.to_bucket());
    }
    out
}

/// One piece of a bucket read: whole buckets of a level, or raw points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Level { level: usize, first: i64, last: i64 },
    Raw { from: i64, to: i64 },
}

/// What a read of `from..=to` at `level` touches, in step order: whole buckets of `level` in the
/// middle, and the edges, which cover part of a bucket, from the next finer level down to raw
/// points. A read of a long series then touches at most a few dozen rows of each finer level
/// rather than up to a whole coarse bucket of raw points.
pub fn cover(level: Option<usize>, from: i64, to: i64) -> Vec<Piece> {
    let mut out = Vec::new();
    cover_into(level, from, to, &mut out);
    out
}

fn cover_into(level: Option<usize>, from: i64, to: i64, out: &mut Vec<Piece>) {
    let Some(level) = level else {
        out.push(Piece::Raw { from, to });
        return;
    };
    let finer = level.checked_sub(1);
    let shift = LEVELS[level];
    let first_full = if from & ((1 << shift) - 1) == 0 {
        from >> shift
    } else {
        (from >> shift) + 1
    };
    let last_full = if to == i64::MAX || (to + 1) & ((1 << shift) - 1) == 0 {
        to >> shift
    } else {
        (to >> shift) - 1
    };
    if first_full > last_full {
        return cover_into(finer, from, to, out);
    }
    let (full_from, _) = bucket_range(level, first_full);
    let (_, full_to) = bucket_range(level, last_full);
    if full_from > from {
        cover_into(finer, from, full_from - 1, out);
    }
    out.push(Piece::Level {
        level,
        first: first_full,
        last: last_full,
    });
    if full_to < to {
        cover_into(finer, full_to + 1, to, out);
    }
}

/// Recomputes the dirty buckets of every level ([`dirty_buckets`]) of one series. `points` holds
/// every point of each dirty level-0 bucket, in step order, as the series stands after the
/// flush; `stored` holds the stored rows of the finer levels within the dirty coarser buckets.
/// Level 0 comes from the points, each coarser level from the level below (the buckets just
/// recomputed, else the stored ones). Returns the new rows of each level.
pub fn recompute(
    dirty: &[BTreeSet<i64>],
    points: impl IntoIterator<Item = (i64, i64, f64)>,
    stored: &std::collections::BTreeMap<(usize, i64), Agg>,
) -> Vec<std::collections::BTreeMap<i64, Agg>> {
    let mut out: Vec<std::collections::BTreeMap<i64, Agg>> = vec![Default::default(); LEVELS.len()];
    // Points come in step order: each bucket is summed whole, then stored once.
    let mut current: Option<(i64, Agg)> = None;
    for (step, time_ms, value) in points {
        let b = step >> LEVELS[0];
        match &mut current {
            Some((cb, agg)) if *cb == b => agg.add(step, time_ms, value),
            _ => {
                if let Some((cb, agg)) = current.take() {
                    out[0].entry(cb).or_insert(Agg::EMPTY).merge(&agg);
                }
                if dirty[0].contains(&b) {
                    let mut agg = Agg::EMPTY;
                    agg.add(step, time_ms, value);
                    current = Some((b, agg));
                }
            }
        }
    }
    if let Some((cb, agg)) = current {
        out[0].entry(cb).or_insert(Agg::EMPTY).merge(&agg);
    }
    for level in 1..LEVELS.len() {
        let d = LEVELS[level] - LEVELS[level - 1];
        for &b in &dirty[level] {
            let (lo, hi) = (b << d, ((b + 1) << d) - 1);
            let mut acc = Agg::EMPTY;
            let fresh = &out[level - 1];
            // Finer buckets in step order: recomputed ones win over stored ones.
            let mut finer: std::collections::BTreeMap<i64, Agg> = stored
                .range((level - 1, lo)..=(level - 1, hi))
                .map(|(&(_, fb), a)| (fb, *a))
                .collect();
            for (&fb, a) in fresh.range(lo..=hi) {
                finer.insert(fb, *a);
            }
            for a in finer.values() {
                acc.merge(a);
            }
            if !acc.is_empty() {
                out[level].insert(b, acc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agg_skips_nan_and_keeps_last_by_step() {
        let mut a = Agg::EMPTY;
        a.add(5, 50, 2.0);
        a.add(1, 10, f64::NAN);
        a.add(3, 30, -1.0);
        assert_eq!(a.count, 3);
        assert_eq!(a.n_values, 2);
        assert_eq!(a.min_opt(), Some(-1.0));
        assert_eq!(a.max_opt(), Some(2.0));
        assert_eq!(a.mean_opt(), Some(0.5));
        assert_eq!(
            (a.first_step, a.last_step, a.last_value, a.last_time_ms),
            (1, 5, 2.0, 50)
        );
        // At the last step, the latest time is the last value, whatever the order of arrival.
        a.add(5, 40, 7.0);
        assert_eq!((a.last_step, a.last_value, a.last_time_ms), (5, 2.0, 50));
        a.add(5, 60, 8.0);
        assert_eq!((a.last_step, a.last_value, a.last_time_ms), (5, 8.0, 60));
        let mut only_nan = Agg::EMPTY;
        only_nan.add(0, 0, f64::NAN);
        assert_eq!(only_nan.min_opt(), None);
        assert_eq!(only_nan.mean_opt(), None);
    }

    #[test]
    fn merging_levels_equals_direct_aggregation() {
        let points: Vec<(i64, f64)> = (0..5000).map(|i| ((i * 7919) % 5000, (i as f64).sin())).collect();
        let mut direct = Agg::EMPTY;
        let mut fine = std::collections::BTreeMap::<i64, Agg>::new();
        for (s, v) in &points {
            direct.add(*s, *s, *v);
            fine.entry(s >> LEVELS[0]).or_default().add(*s, *s, *v);
        }
        let mut merged = Agg::EMPTY;
        for a in fine.values() {
            merged.merge(a);
        }
        assert_eq!(merged.count, direct.count);
        assert_eq!(merged.min, direct.min);
        assert_eq!(merged.max, direct.max);
        assert!((merged.sum - direct.sum).abs() < 1e-9);
        assert_eq!(merged.last_step, direct.last_step);
    }

    #[test]
    fn dirty_buckets_cover_each_level() {
        let d = dirty_buckets(&[0, 63, 64, 5000]);
        assert_eq!(d[0].iter().copied().collect::<Vec<_>>(), vec![0, 1, 78]);
        assert_eq!(d[1].iter().copied().collect::<Vec<_>>(), vec![0, 4]);
        assert_eq!(d[4].iter().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(bucket_range(1, 4), (4096, 5119));
        for (level, shift) in LEVELS.iter().enumerate() {
            assert_eq!(bucket_range(level, i64::MAX >> shift).1, i64::MAX, "level {level}");
            assert_eq!(bucket_range(level, -1), (-(1 << shift), -1), "level {level}");
        }
    }

    #[test]
    fn level_choice_bounds_rows_read() {
        assert_eq!(choose_level(0, 999, 1000), None);
        assert_eq!(choose_level(0, 9_999_999, 1000), Some(2));
        assert_eq!(choose_level(0, i64::MAX >> 1, 10), Some(LEVELS.len() - 1));
    }

    #[test]
    fn regroup_merges_into_equal_buckets() {
        let parts = (0..100).map(|i| {
            let mut a = Agg::EMPTY;
            a.add(i, i, i as f64);
            a
        });
        let b = regroup(0, 99, 10, parts);
        assert_eq!(b.len(), 10);
        assert_eq!(b[0].count, 10);
        assert_eq!(b[0].min, Some(0.0));
        assert_eq!(b[9].max, Some(99.0));
        assert_eq!(b[9].last_value, 99.0);
    }
}
