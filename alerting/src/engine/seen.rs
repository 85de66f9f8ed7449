//! The seen set of one series: every measurement time within the lateness
//! horizon, sorted, each with the value first judged for it.
//!
//! It is the engine's largest state, so it lives in fixed-size blocks
//! rather than one ring buffer. A ring buffer that holds n entries keeps
//! (and, as its head goes round, touches) the power of two above n: 16,384
//! slots for a day of 10-second data, 1.75× what is live. Growing it
//! leaves a hole of the old size behind in the allocator, and 840 series
//! growing in step left alerting at 229-252 MiB in the end-to-end
//! benchmark, about 121 MB of it live. Blocks all have one size: a block freed at
//! the front is the one the next push at the back gets, and a set holds at
//! most one part-filled block at each end beyond what it splits.
//!
//! Times are kept as whole seconds in 32 bits where they can be (nearly
//! always), so an entry takes 12 bytes rather than 16 ([`Seen`]).
//!
//! Stations send in order, so nearly every insert is a push at the back
//! and every forget a pop at the front; an older time (a backlog
//! interleaved with live data) is inserted in its block, which splits in
//! two when full.

use std::collections::VecDeque;
use std::fmt;

/// Entries a block holds (768 or 1,024 bytes of keys and values, one
/// allocation): a series of 5-minute data holds 312 times in 26 h, in 5 to
/// 7 blocks, so what its part-filled end blocks waste stays small.
const BLOCK: usize = 64;

/// A key: whole seconds from the set's base (`u32`), or microseconds
/// since the epoch (`i64`).
pub(super) trait Key: Copy + Ord + Default {}
impl Key for u32 {}
impl Key for i64 {}

/// Keys apart from values, so a search reads only keys.
#[derive(Clone)]
struct Block<K> {
    keys: [K; BLOCK],
    values: [f64; BLOCK],
}

/// A block's live entries are `start..end`, sorted.
#[derive(Clone)]
struct Chunk<K> {
    start: usize,
    end: usize,
    data: Box<Block<K>>,
}

impl<K: Key> Chunk<K> {
    /// An empty chunk, in `spare` if there is one.
    fn new(spare: &mut Option<Box<Block<K>>>) -> Chunk<K> {
        Chunk {
            start: 0,
            end: 0,
            data: spare.take().unwrap_or_else(|| {
                Box::new(Block {
                    keys: [K::default(); BLOCK],
                    values: [0.0; BLOCK],
                })
            }),
        }
    }

    fn keys(&self) -> &[K] {
        &self.data.keys[self.start..self.end]
    }

    fn last(&self) -> K {
        self.data.keys[self.end - 1]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Inserts at block index `at` (`start..=end`), which keeps the order;
    /// the chunk is not full.
    fn insert_at(&mut self, at: usize, key: K, value: f64) {
        let b = &mut *self.data;
        if self.end < BLOCK {
            b.keys.copy_within(at..self.end, at + 1);
            b.values.copy_within(at..self.end, at + 1);
            b.keys[at] = key;
            b.values[at] = value;
            self.end += 1;
        } else {
            // Room only in front: what is before `at` moves down one.
            b.keys.copy_within(self.start..at, self.start - 1);
            b.values.copy_within(self.start..at, self.start - 1);
            b.keys[at - 1] = key;
            b.values[at - 1] = value;
            self.start -= 1;
        }
    }
}

/// Sorted keys and their first values, in blocks.
#[derive(Clone)]
pub(super) struct Blocks<K> {
    /// Never an empty one.
    chunks: VecDeque<Chunk<K>>,
    /// The last block forgotten, for the next push: a set in its steady
    /// state (one forgotten for each one added) then allocates nothing.
    /// Each block freed and allocated again would go back to the arena of
    /// the thread that allocated it, and the engine's task moves between
    /// threads.
    spare: Option<Box<Block<K>>>,
}

impl<K> Default for Blocks<K> {
    fn default() -> Self {
        Blocks {
            chunks: VecDeque::new(),
            spare: None,
        }
    }
}

impl<K: Key> Blocks<K> {
    /// Remembers `key` with `value`, or, when `key` is already here, leaves
    /// the set as it is and returns the value first remembered for it.
    fn insert(&mut self, key: K, value: f64) -> Option<f64> {
        let full = match self.chunks.back() {
            None => true,
            // In order: the back, without a search (a search over a long
            // seen set was 13 % of the engine's time under load).
            Some(last) if last.last() < key => last.end == BLOCK,
            Some(_) => return self.insert_within(key, value),
        };
        if full {
            self.chunks.push_back(Chunk::new(&mut self.spare));
        }
        let last = self.chunks.back_mut().expect("a chunk with room");
        last.data.keys[last.end] = key;
        last.data.values[last.end] = value;
        last.end += 1;
        None
    }

    /// `key` is not after the last key: it is here, or goes in the first
    /// chunk whose last key is after it.
    fn insert_within(&mut self, key: K, value: f64) -> Option<f64> {
        let i = self.chunks.partition_point(|c| c.last() < key);
        let chunk = &mut self.chunks[i];
        let at = match chunk.keys().binary_search(&key) {
            Ok(j) => return Some(chunk.data.values[chunk.start + j]),
            Err(j) => chunk.start + j,
        };
        if chunk.start > 0 && at == chunk.start {
            // Before the first entry, with room in front.
            chunk.start -= 1;
            chunk.data.keys[chunk.start] = key;
            chunk.data.values[chunk.start] = value;
            return None;
        }
        if chunk.len() < BLOCK {
            chunk.insert_at(at, key, value);
            return None;
        }
        // Full: the upper half moves to a new chunk after it.
        let mid = BLOCK / 2;
        let mut upper = Chunk::new(&mut self.spare);
        upper.data.keys[..BLOCK - mid].copy_from_slice(&chunk.data.keys[mid..]);
        upper.data.values[..BLOCK - mid].copy_from_slice(&chunk.data.values[mid..]);
        upper.end = BLOCK - mid;
        chunk.end = mid;
        if at <= mid {
            chunk.insert_at(at, key, value);
        } else {
            upper.insert_at(at - mid, key, value);
        }
        self.chunks.insert(i + 1, upper);
        None
    }

    /// Forgets every key before `horizon`.
    fn forget_before(&mut self, horizon: K) {
        while let Some(front) = self.chunks.front_mut() {
            if front.last() < horizon {
                if let Some(done) = self.chunks.pop_front() {
                    self.spare = Some(done.data);
                }
                continue;
            }
            let drop = front.keys().partition_point(|&k| k < horizon);
            front.start += drop;
            break;
        }
    }

    /// Entries held.
    fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    /// Blocks held: at most `len / BLOCK` plus one part-filled at each end
    /// and one for each split.
    #[cfg(test)]
    fn blocks(&self) -> usize {
        self.chunks.len()
    }

    fn iter(&self) -> impl Iterator<Item = (K, f64)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| (c.start..c.end).map(move |j| (c.data.keys[j], c.data.values[j])))
    }
}

/// Microseconds in a second.
const MICROS: i64 = 1_000_000;
/// A second's key is its offset from the base plus this: the middle of
/// `u32`, so that whole seconds within 68 years either side of the base fit.
const MIDDLE: i64 = 1 << 31;

/// Measurement times (microseconds since the epoch) and their first values.
///
/// Times are nearly always whole seconds (HJ 212 and Circular 10 carry
/// nothing finer; loggers report on the minute), so a set keeps them as
/// seconds from a base, in 32 bits: 12 bytes an entry instead of 16. The
/// first time that is not a whole second, or is 68 years from the base,
/// turns the set into microseconds for good.
#[derive(Clone)]
pub(super) enum Seen {
    /// `base` is the first time's second (set again whenever the set is
    /// empty).
    Seconds {
        base: i64,
        set: Blocks<u32>,
    },
    Micros(Blocks<i64>),
}

impl Default for Seen {
    fn default() -> Self {
        Seen::Seconds {
            base: 0,
            set: Blocks::default(),
        }
    }
}

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keys, len, blocks) = match self {
            Seen::Seconds { set, .. } => ("seconds", set.len(), set.chunks.len()),
            Seen::Micros(set) => ("microseconds", set.len(), set.chunks.len()),
        };
        f.debug_struct("Seen")
            .field("keys", &keys)
            .field("len", &len)
            .field("blocks", &blocks)
            .finish()
    }
}

impl Seen {
    /// Remembers `key` (microseconds since the epoch) with `value`, or,
    /// when `key` is already here, leaves the set as it is and returns the
    /// value first remembered for it.
    pub(super) fn insert(&mut self, key: i64, value: f64) -> Option<f64> {
        if let Seen::Seconds { base, set } = self {
            if set.chunks.is_empty() && key % MICROS == 0 {
                *base = key / MICROS;
            }
            if let Some(k) = second_key(*base, key) {
                return set.insert(k, value);
            }
            let mut micros = Blocks::default();
            for (k, v) in set.iter() {
                micros.insert(micros_of(*base, k), v);
            }
            *self = Seen::Micros(micros);
        }
        match self {
            Seen::Micros(set) => set.insert(key, value),
            Seen::Seconds { .. } => unreachable!("turned into microseconds above"),
        }
    }

    /// Forgets every time before `horizon` (microseconds since the epoch).
    pub(super) fn forget_before(&mut self, horizon: i64) {
        match self {
            Seen::Micros(set) => set.forget_before(horizon),
            Seen::Seconds { base, set } => {
                // A whole second is before `horizon` when it is before the
                // first whole second at or after it.
                let ceil = horizon.div_euclid(MICROS) + i64::from(horizon.rem_euclid(MICROS) != 0);
                let offset = ceil - *base + MIDDLE;
                match u32::try_from(offset) {
                    Ok(h) => set.forget_before(h),
                    // Past every key: all forgotten.
                    Err(_) if offset > 0 => *set = Blocks::default(),
                    // Before every key.
                    Err(_) => {}
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Seen::Seconds { set, .. } => set.len(),
            Seen::Micros(set) => set.len(),
        }
    }

    #[cfg(test)]
    fn entries(&self) -> Vec<(i64, f64)> {
        match self {
            Seen::Seconds { base, set } => {
                set.iter().map(|(k, v)| (micros_of(*base, k), v)).collect()
            }
            Seen::Micros(set) => set.iter().collect(),
        }
    }
}

/// `key`'s offset in seconds from `base`, when it is a whole second that
/// fits.
fn second_key(base: i64, key: i64) -> Option<u32> {
    if key % MICROS != 0 {
        return None;
    }
    u32::try_from(key / MICROS - base + MIDDLE).ok()
}

/// A second's key back in microseconds since the epoch.
fn micros_of(base: i64, key: u32) -> i64 {
    (i64::from(key) - MIDDLE + base) * MICROS
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn entries(set: &Blocks<i64>) -> Vec<(i64, f64)> {
        set.iter().collect()
    }

    #[test]
    fn in_order_pushes_and_forgets_hold_what_is_live_and_no_more() {
        let mut seen = Blocks::<i64>::default();
        // A day of 10-second data, then a second day forgetting the first.
        let day = 8_640_i64;
        for k in 0..2 * day {
            assert_eq!(seen.insert(k, k as f64), None);
            seen.forget_before(k + 1 - day);
        }
        assert_eq!(seen.len(), day as usize);
        let entries = entries(&seen);
        assert_eq!(entries.first(), Some(&(day, day as f64)));
        assert_eq!(entries.last(), Some(&(2 * day - 1, (2 * day - 1) as f64)));
        // A part-filled block at each end at most; a ring buffer would
        // hold 16,384 slots.
        let most = (day as usize).div_ceil(BLOCK) + 1;
        assert!(seen.blocks() <= most, "{} blocks", seen.blocks());
    }

    #[test]
    fn a_block_forgotten_is_the_next_one_filled() {
        let mut seen = Blocks::<i64>::default();
        let n = 2 * BLOCK as i64;
        for k in 0..n {
            seen.insert(k, 0.0);
        }
        assert!(seen.spare.is_none());
        seen.forget_before(BLOCK as i64);
        let forgotten = seen.spare.as_deref().map(|b| b as *const Block<i64>);
        assert!(forgotten.is_some(), "the forgotten block is kept");
        seen.insert(n, 0.0);
        assert!(seen.spare.is_none(), "the spare was used");
        let newest = seen.chunks.back().map(|c| &*c.data as *const Block<i64>);
        assert_eq!(newest, forgotten);
    }

    #[test]
    fn a_time_seen_keeps_its_first_value() {
        let mut seen = Blocks::<i64>::default();
        for k in [10, 20, 30] {
            seen.insert(k, k as f64);
        }
        assert_eq!(seen.insert(20, 99.0), Some(20.0));
        assert_eq!(seen.insert(30, 99.0), Some(30.0));
        assert_eq!(seen.insert(10, 99.0), Some(10.0));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn an_older_time_in_a_full_block_splits_it_in_order() {
        let mut seen = Blocks::<i64>::default();
        // One full block of even keys, then the odd ones below them.
        for k in 0..BLOCK as i64 {
            seen.insert(2 * k, 0.0);
        }
        assert_eq!(seen.blocks(), 1);
        for k in 0..BLOCK as i64 {
            assert_eq!(seen.insert(2 * k + 1, 1.0), None);
        }
        assert_eq!(seen.len(), 2 * BLOCK);
        let keys: Vec<i64> = seen.iter().map(|e| e.0).collect();
        assert_eq!(keys, (0..2 * BLOCK as i64).collect::<Vec<_>>());
        assert!(seen.blocks() <= 4, "{} blocks", seen.blocks());
    }

    #[test]
    fn an_older_time_in_the_upper_half_of_a_full_block_goes_to_the_new_one() {
        let mut seen = Blocks::<i64>::default();
        for k in 0..BLOCK as i64 {
            seen.insert(2 * k, 0.0);
        }
        let late = 2 * (BLOCK as i64 - 10) + 1;
        assert_eq!(seen.insert(late, 1.0), None);
        assert_eq!(seen.blocks(), 2);
        let entries = entries(&seen);
        let at = entries.iter().position(|e| e.0 == late);
        assert_eq!(at, Some(BLOCK - 9));
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen.insert(late, 2.0), Some(1.0));
    }

    #[test]
    fn an_older_time_before_the_front_uses_the_room_forgetting_left() {
        let mut seen = Blocks::<i64>::default();
        for k in 0..10 {
            seen.insert(k * 10, 0.0);
        }
        seen.forget_before(50);
        assert_eq!(seen.insert(45, 1.0), None);
        assert_eq!(seen.insert(45, 2.0), Some(1.0));
        let keys: Vec<i64> = seen.iter().map(|e| e.0).collect();
        assert_eq!(keys, vec![45, 50, 60, 70, 80, 90]);
    }

    /// 2026-12-07T00:00:00Z in microseconds.
    const DAY: i64 = 1_796_601_600 * MICROS;

    #[test]
    fn whole_seconds_are_kept_in_32_bits() {
        let mut seen = Seen::default();
        for k in 0..1_000 {
            assert_eq!(seen.insert(DAY + k * 10 * MICROS, k as f64), None);
        }
        assert!(matches!(seen, Seen::Seconds { .. }), "{seen:?}");
        assert_eq!(seen.insert(DAY + 30 * MICROS, 9.0), Some(3.0));
        seen.forget_before(DAY + 5_000 * MICROS + 1);
        let entries = seen.entries();
        assert_eq!(entries.len(), 499);
        assert_eq!(entries[0], (DAY + 5_010 * MICROS, 501.0));
        assert_eq!(seen.len(), 499);
        // Long before and long after: nothing forgotten, then everything.
        seen.forget_before(i64::MIN);
        assert_eq!(seen.len(), 499);
        seen.forget_before(i64::MAX);
        assert_eq!(seen.len(), 0);
    }

    #[test]
    fn a_time_finer_than_a_second_turns_the_set_into_microseconds() {
        let mut seen = Seen::default();
        for k in 0..300 {
            seen.insert(DAY + k * MICROS, k as f64);
        }
        assert_eq!(seen.insert(DAY + 150 * MICROS + 500_000, -1.0), None);
        assert!(matches!(seen, Seen::Micros(_)), "{seen:?}");
        assert_eq!(seen.len(), 301);
        // What was kept in seconds is found in microseconds.
        assert_eq!(seen.insert(DAY + 299 * MICROS, 0.0), Some(299.0));
        assert_eq!(seen.insert(DAY, 0.5), Some(0.0));
        assert_eq!(seen.insert(DAY + 150 * MICROS + 500_000, 0.0), Some(-1.0));
    }

    #[test]
    fn a_time_68_years_from_the_base_turns_the_set_into_microseconds() {
        let mut seen = Seen::default();
        seen.insert(DAY, 1.0);
        let far = DAY + 70 * 365 * 86_400 * MICROS;
        assert_eq!(seen.insert(far, 2.0), None);
        assert!(matches!(seen, Seen::Micros(_)), "{seen:?}");
        assert_eq!(seen.entries(), vec![(DAY, 1.0), (far, 2.0)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(i64, f64),
        Forget(i64),
    }

    /// Mostly inserts anywhere, so blocks fill and split on either side of
    /// their middle; now and then a forget of the oldest keys.
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            40 => (0i64..4_000, any::<f64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            1 => (0i64..1_000).prop_map(Op::Forget),
        ]
    }

    proptest! {
        /// The set answers and holds what a sorted map of first values
        /// would, whatever the order of inserts and forgets.
        #[test]
        fn blocks_behave_as_a_sorted_map_of_first_values(
            ops in proptest::collection::vec(op(), 0..3_000),
        ) {
            let mut seen = Blocks::<i64>::default();
            let mut model: BTreeMap<i64, f64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let want = model.get(&k).copied();
                        model.entry(k).or_insert(v);
                        let got = seen.insert(k, v);
                        prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits));
                    }
                    Op::Forget(h) => {
                        model.retain(|&k, _| k >= h);
                        seen.forget_before(h);
                    }
                }
                prop_assert_eq!(seen.len(), model.len());
            }
            let want: Vec<(i64, u64)> = model.iter().map(|(&k, v)| (k, v.to_bits())).collect();
            let got: Vec<(i64, u64)> = seen.iter().map(|(k, v)| (k, v.to_bits())).collect();
            prop_assert_eq!(got, want);
        }

        /// The same for a whole seen set, with times in whole seconds
        /// around a day, now and then one finer, and horizons anywhere.
        #[test]
        fn a_seen_set_behaves_as_a_sorted_map_of_first_values(
            ops in proptest::collection::vec(op(), 0..3_000),
            finer in proptest::collection::vec(0usize..3_000, 0..2),
        ) {
            let mut seen = Seen::default();
            let mut model: BTreeMap<i64, f64> = BTreeMap::new();
            for (i, op) in ops.into_iter().enumerate() {
                let fine = if finer.contains(&i) { 1 } else { 0 };
                match op {
                    Op::Insert(k, v) => {
                        let k = DAY + k * MICROS + fine;
                        let want = model.get(&k).copied();
                        model.entry(k).or_insert(v);
                        let got = seen.insert(k, v);
                        prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits));
                    }
                    Op::Forget(h) => {
                        let h = DAY + h * MICROS + fine;
                        model.retain(|&k, _| k >= h);
                        seen.forget_before(h);
                    }
                }
                prop_assert_eq!(seen.len(), model.len());
            }
            let want: Vec<(i64, u64)> = model.iter().map(|(&k, v)| (k, v.to_bits())).collect();
            let got: Vec<(i64, u64)> =
                seen.entries().iter().map(|&(k, v)| (k, v.to_bits())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
