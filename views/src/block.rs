//! Packed blocks of float points.
//!
//! A float series is stored as blocks of about [`BLOCK_POINTS`] consecutive points (sorted by
//! step, then time; step ranges of blocks never overlap, so all points of a step share a block)
//! rather than one row per point: one storage row then carries a thousand points, which is what
//! lets the projector write millions of points a second, and a range read touches a handful of
//! rows. A point is identified by its step and time: a step logged again at another time keeps
//! both points, as MLflow's history does, and the same step and time again replaces the value.
//!
//! Layout of one block, `count` points (the count is kept beside the block):
//! - a format byte (1);
//! - steps: the first as a varint, then the gaps to the previous step as varints (steps do not
//!   decrease, so gaps are never negative and usually 1: one byte each);
//! - times: zigzag varints of the difference to the previous time (the first against 0);
//! - values: the IEEE-754 bits of each value, 8 bytes little-endian, so every float (NaN
//!   payloads, -0.0, subnormals) reads back bit for bit.

use crate::ViewError;

/// Points per block a flush aims for. Larger blocks mean fewer rows; smaller ones mean less to
/// rewrite when a slow series appends a few points to its last block. A block holds more when
/// one step has more points than this: a step is never split between blocks.
pub const BLOCK_POINTS: usize = 1024;

const FORMAT: u8 = 1;

/// Points in columns, sorted by (step, time) with no (step, time) twice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub steps: Vec<i64>,
    pub times: Vec<i64>,
    pub values: Vec<f64>,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn clear(&mut self) {
        self.steps.clear();
        self.times.clear();
        self.values.clear();
    }

    fn push(&mut self, step: i64, time: i64, value: f64) {
        self.steps.push(step);
        self.times.push(time);
        self.values.push(value);
    }

    /// The points, borrowed.
    pub fn as_slices(&self) -> Slices<'_> {
        Slices {
            steps: &self.steps,
            times: &self.times,
            values: &self.values,
        }
    }

    /// Each point as (step, time, value), in order.
    pub fn points(&self) -> impl Iterator<Item = (i64, i64, f64)> + '_ {
        (0..self.len()).map(|i| (self.steps[i], self.times[i], self.values[i]))
    }

    /// Where the blocks of these points end: after about [`BLOCK_POINTS`] points each, at a
    /// change of step (the points of one step stay in one block).
    pub fn block_ends(&self) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut end = 0;
        while end < self.len() {
            end = (end + BLOCK_POINTS).min(self.len());
            while end < self.len() && self.steps[end] == self.steps[end - 1] {
                end += 1;
            }
            ends.push(end);
        }
        ends
    }
}

/// Points in borrowed columns, with the order of [`Columns`].
#[derive(Debug, Clone, Copy)]
pub struct Slices<'a> {
    pub steps: &'a [i64],
    pub times: &'a [i64],
    pub values: &'a [f64],
}

impl Slices<'_> {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn key(&self, i: usize) -> (i64, i64) {
        (self.steps[i], self.times[i])
    }

    /// `self` overlaid with `newer`: every point of both, and where both have a point at the same
    /// step and time, `newer`'s.
    pub fn overlay(&self, newer: Slices<'_>) -> Columns {
        let mut out = Columns::default();
        out.steps.reserve(self.len() + newer.len());
        out.times.reserve(self.len() + newer.len());
        out.values.reserve(self.len() + newer.len());
        let (mut i, mut j) = (0, 0);
        while i < self.len() || j < newer.len() {
            let take_newer = j < newer.len() && (i >= self.len() || newer.key(j) <= self.key(i));
            if take_newer {
                if i < self.len() && self.key(i) == newer.key(j) {
                    i += 1;
                }
                out.push(newer.steps[j], newer.times[j], newer.values[j]);
                j += 1;
            } else {
                out.push(self.steps[i], self.times[i], self.values[i]);
                i += 1;
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes `range` of `cols` as one block.
pub fn encode(cols: &Columns, range: std::ops::Range<usize>) -> Vec<u8> {
    let n = range.len();
    let mut out = Vec::with_capacity(1 + n * 11);
    out.push(FORMAT);
    let mut prev: Option<i64> = None;
    for &s in &cols.steps[range.clone()] {
        // Steps are validated to 0..2^53 and do not decrease, so neither subtraction can wrap.
        put_varint(&mut out, prev.map_or(s, |p| s - p) as u64);
        prev = Some(s);
    }
    let mut prev = 0i64;
    for &t in &cols.times[range.clone()] {
        put_varint(&mut out, zigzag(t.wrapping_sub(prev)));
        prev = t;
    }
    for &v in &cols.values[range] {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, ViewError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.at)
                .ok_or_else(|| ViewError::Corrupt("point block ends inside a varint".into()))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ViewError::Corrupt("point block varint is too long".into()))
    }
}

/// Decodes a block of `count` points, appending them to `out`.
pub fn decode_into(data: &[u8], count: usize, out: &mut Columns) -> Result<(), ViewError> {
    if data.first() != Some(&FORMAT) {
        return Err(ViewError::Corrupt(format!(
            "point block format {:?} is not {FORMAT}",
            data.first()
        )));
    }
    let mut r = Reader { data, at: 1 };
    out.steps.reserve(count);
    out.times.reserve(count);
    out.values.reserve(count);
    let mut step = 0i64;
    for i in 0..count {
        let d = r.varint()? as i64;
        step = if i == 0 { d } else { step.wrapping_add(d) };
        out.steps.push(step);
    }
    let mut time = 0i64;
    for _ in 0..count {
        time = time.wrapping_add(unzigzag(r.varint()?));
        out.times.push(time);
    }
    let values = &data[r.at..];
    if values.len() != count * 8 {
        return Err(ViewError::Corrupt(format!(
            "point block holds {} value bytes for {count} points",
            values.len()
        )));
    }
    out.values.extend(
        values
            .chunks_exact(8)
            .map(|b| f64::from_bits(u64::from_le_bytes(b.try_into().expect("8 bytes")))),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(points: &[(i64, i64, f64)]) -> Columns {
        let mut c = Columns::default();
        for &(s, t, v) in points {
            c.push(s, t, v);
        }
        c
    }

    fn roundtrip(c: &Columns) -> Columns {
        let data = encode(c, 0..c.len());
        let mut out = Columns::default();
        decode_into(&data, c.len(), &mut out).unwrap();
        out
    }

    fn bits(c: &Columns) -> Vec<(i64, i64, u64)> {
        (0..c.len())
            .map(|i| (c.steps[i], c.times[i], c.values[i].to_bits()))
            .collect()
    }

    #[test]
    fn every_float_and_extreme_step_and_time_round_trips() {
        let max_step = (1i64 << 53) - 1;
        let c = cols(&[
            (0, 0, f64::NAN),
            (1, 7_258_118_400_000, -0.0),
            (2, 1, f64::INFINITY),
            (3, 1_700_000_000_000, f64::NEG_INFINITY),
            (1_000, 5, f64::from_bits(1)),
            (max_step - 1, 1_700_000_000_000, f64::from_bits(0x7ff8_dead_beef_0001)),
            (max_step, 0, f64::MAX),
        ]);
        assert_eq!(bits(&roundtrip(&c)), bits(&c));
    }

    #[test]
    fn random_blocks_round_trip() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = (next() % 2000) as usize;
            let mut step = (next() % 1000) as i64;
            let mut c = Columns::default();
            for _ in 0..n {
                step += 1 + (next() % 50) as i64;
                c.push(step, (next() % 7_000_000_000_000) as i64, f64::from_bits(next()));
            }
            assert_eq!(bits(&roundtrip(&c)), bits(&c));
        }
    }

    #[test]
    fn blocks_end_near_the_size_and_never_inside_a_step() {
        let mut c = Columns::default();
        for i in 0..BLOCK_POINTS as i64 + 10 {
            c.push(i, 0, 0.0);
        }
        assert_eq!(c.block_ends(), vec![BLOCK_POINTS, BLOCK_POINTS + 10]);
        // A step of 3,000 points straddling the first cut stays whole.
        let mut c = Columns::default();
        for i in 0..1_000 {
            c.push(i, 0, 0.0);
        }
        for t in 0..3_000 {
            c.push(1_000, t, 0.0);
        }
        for i in 1_001..1_500 {
            c.push(i, 0, 0.0);
        }
        assert_eq!(c.block_ends(), vec![4_000, 4_499]);
        assert_eq!(Columns::default().block_ends(), Vec::<usize>::new());
        // Repeated steps encode (a zero gap) and decode in order.
        let c = cols(&[(0, 5, 1.0), (0, 6, 2.0), (0, 9, 3.0), (4, 1, 4.0), (4, 2, 5.0)]);
        assert_eq!(bits(&roundtrip(&c)), bits(&c));
    }

    #[test]
    fn a_slice_of_columns_encodes_alone() {
        let c = cols(&[(5, 10, 1.0), (6, 11, 2.0), (9, 12, 3.0), (12, 13, 4.0)]);
        let data = encode(&c, 1..3);
        let mut out = Columns::default();
        decode_into(&data, 2, &mut out).unwrap();
        assert_eq!(out, cols(&[(6, 11, 2.0), (9, 12, 3.0)]));
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let c = cols(&[(1, 2, 3.0), (2, 3, 4.0)]);
        let data = encode(&c, 0..2);
        for cut in 0..data.len() {
            assert!(
                decode_into(&data[..cut], 2, &mut Columns::default()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode_into(&data, 3, &mut Columns::default()).is_err());
        assert!(decode_into(&[9, 0, 0], 1, &mut Columns::default()).is_err());
        assert!(
            decode_into(
                &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                1,
                &mut Columns::default()
            )
            .is_err()
        );
    }

    #[test]
    fn overlay_keeps_every_step_and_time_once_and_newer_wins() {
        fn overlay(old: &Columns, new: &Columns) -> Columns {
            old.as_slices().overlay(new.as_slices())
        }
        let old = cols(&[(1, 1, 1.0), (3, 3, 3.0), (5, 5, 5.0)]);
        let new = cols(&[(0, 10, 0.5), (3, 3, 30.0), (3, 30, 31.0), (6, 60, 60.0)]);
        assert_eq!(
            overlay(&old, &new),
            cols(&[
                (0, 10, 0.5),
                (1, 1, 1.0),
                (3, 3, 30.0),
                (3, 30, 31.0),
                (5, 5, 5.0),
                (6, 60, 60.0)
            ])
        );
        // Points of a step at other times stay, in time order, on either side.
        let new = cols(&[(5, 1, -1.0), (5, 9, 9.0)]);
        assert_eq!(
            overlay(&old, &new),
            cols(&[(1, 1, 1.0), (3, 3, 3.0), (5, 1, -1.0), (5, 5, 5.0), (5, 9, 9.0)])
        );
        assert_eq!(overlay(&Columns::default(), &new), new);
        assert_eq!(overlay(&old, &Columns::default()), old);
    }
}
