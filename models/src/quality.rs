//! Whether the live input is fit to learn from: the share of rejected records, of accepted records with a value
//! outside the range seen in history, and of accepted labels the model does not know, over the latest records
//! received; and whether what the speed model learned made it worse. When one of them passes its limit the speed
//! layer freezes its online updates and goes back to its last good state, and resumes once a whole window of
//! records is clean.
//!
//! The last test watches the speed model's errors against the batch model's on the same events: a Page-Hinkley
//! test on their difference (mistake minus mistake, or the difference of absolute errors in three of history's
//! deviations, clamped to [−1, 1]) signals when the speed model fell behind the batch model by more than it was.
//! A change of the difference, not its level: a linear speed model beside a boosted champion is behind all along;
//! and on a concept drift the batch model falls behind, not the speed model. What it catches is learning that
//! hurt: labels or inputs wrong in a way the speed model follows, while the input's ranges look normal.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::drift::{DriftState, PageHinkley};
use lambda_core::spec::FreezeSettings;

const REJECTED: u8 = 1;
const OUT_OF_RANGE: u8 = 2;
const UNKNOWN_LABEL: u8 = 4;

/// The Page-Hinkley test on the gap: a rise of up to 0.2 (the speed model wrong on a fifth more of the events
/// than the batch model, relative to before) is tolerated. With 0.05, as for one model's errors, the linear model
/// drifting behind the batch model on a stream whose classes move all along froze clean input twice in 15,000
/// events (bench/pipeline, rbf_moving), and each freeze put the forest back to an older state.
fn gap_test() -> PageHinkley {
    PageHinkley::new(30, 0.2, 50.0, 1.0)
}

/// Why and since when the online updates are frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frozen {
    /// Sequence number of the last event accepted before the freeze.
    pub since_seq: u64,
    /// When it froze (milliseconds since the Unix epoch).
    pub since_ms: i64,
    /// What was wrong.
    pub reason: String,
    /// Records received since.
    pub records: u64,
}

/// The latest records' flags and the freeze state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    size: usize,
    flags: VecDeque<u8>,
    counts: [u64; 3],
    /// Set while online updates are frozen.
    pub frozen: Option<Frozen>,
    /// Freezes since the record started.
    pub freezes: u64,
    // Last, so that a record written before them ends early and is refused rather than misread.
    /// Page-Hinkley on the speed model's error less the batch model's.
    gap: PageHinkley,
    /// Sequence number of the event at which it signalled, not yet acted on (0: none).
    gap_seq: u64,
    /// The keys of the rejected records in the window, oldest first (`None`: kept without one).
    rejected_keys: VecDeque<Option<u64>>,
}

/// The rates a verdict is taken on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Records in the window.
    pub records: usize,
    /// Share rejected.
    pub rejected: f64,
    /// Share with a numeric value outside the history's range.
    pub out_of_range: f64,
    /// Share with a label the model does not know.
    pub unknown_labels: f64,
}

impl Quality {
    /// An empty record over the latest `size` records.
    pub fn new(size: usize) -> Quality {
        Quality {
            size: size.max(1),
            flags: VecDeque::new(),
            counts: [0; 3],
            frozen: None,
            freezes: 0,
            gap: gap_test(),
            gap_seq: 0,
            rejected_keys: VecDeque::new(),
        }
    }

    /// Starts the comparison of the speed and the batch model over (a new batch version and its speed model).
    pub fn restart_gap(&mut self) {
        self.gap = gap_test();
        self.gap_seq = 0;
    }

    /// Counts one labelled event the speed and the batch model both scored: `gap` is the speed model's error less
    /// the batch model's (see the module's documentation). While frozen the speed model does not learn, so what
    /// it says then is not counted.
    pub fn observe_gap(&mut self, gap: f64, seq: u64) {
        if self.frozen.is_some() || !gap.is_finite() {
            return;
        }
        if self.gap.update(gap.clamp(-1.0, 1.0)) == DriftState::Drift {
            self.gap_seq = seq;
        }
    }

    /// Counts one record received.
    pub fn push(&mut self, rejected: bool, out_of_range: bool, unknown_label: bool) {
        let f = u8::from(rejected) * REJECTED
            + u8::from(out_of_range) * OUT_OF_RANGE
            + u8::from(unknown_label) * UNKNOWN_LABEL;
        self.push_flag(f, None);
    }

    /// Counts one rejected record, known by `key` (its event id's hash, or its line's), unless a record of the
    /// same key is among the window's rejections: a client that got no answer (a crash) sends its request again,
    /// and its rejected lines are the same records, as its accepted events are duplicates. Returns whether it
    /// counted.
    pub fn push_rejected(&mut self, key: u64) -> bool {
        if self.rejected_keys.contains(&Some(key)) {
            return false;
        }
        self.push_flag(REJECTED, Some(key));
        true
    }

    fn push_flag(&mut self, f: u8, key: Option<u64>) {
        if self.flags.len() == self.size {
            if let Some(old) = self.flags.pop_front() {
                self.count(old, false);
                if old & REJECTED != 0 {
                    self.rejected_keys.pop_front();
                }
            }
        }
        if f & REJECTED != 0 {
            self.rejected_keys.push_back(key);
        }
        self.flags.push_back(f);
        self.count(f, true);
        if let Some(z) = &mut self.frozen {
            z.records += 1;
        }
    }

    fn count(&mut self, f: u8, add: bool) {
        for (i, bit) in [REJECTED, OUT_OF_RANGE, UNKNOWN_LABEL].into_iter().enumerate() {
            if f & bit != 0 {
                if add {
                    self.counts[i] += 1;
                } else {
                    self.counts[i] -= 1;
                }
            }
        }
    }

    /// The shares over the window.
    pub fn rates(&self) -> Rates {
        let n = self.flags.len().max(1) as f64;
        Rates {
            records: self.flags.len(),
            rejected: self.counts[0] as f64 / n,
            out_of_range: self.counts[1] as f64 / n,
            unknown_labels: self.counts[2] as f64 / n,
        }
    }

    /// What is wrong with the input now, if anything: a share above its limit, once half a window of records is in.
    pub fn verdict(&self, limits: &FreezeSettings) -> Option<String> {
        let r = self.rates();
        if r.records * 2 < self.size {
            return None;
        }
        let over = [
            ("rejected", r.rejected, limits.max_rejected),
            ("out-of-range", r.out_of_range, limits.max_out_of_range),
            ("unknown-label", r.unknown_labels, limits.max_unknown_labels),
        ];
        if let Some((what, rate, limit)) = over.into_iter().find(|(_, rate, limit)| rate > limit) {
            return Some(format!("{what} rate {rate:.3} > {limit} over the latest {} records", r.records));
        }
        (self.gap_seq > 0 && self.frozen.is_none()).then(|| {
            format!(
                "the speed model's errors rose above the batch model's (Page-Hinkley on their difference, at seq {})",
                self.gap_seq
            )
        })
    }

    /// The verdict taken and acted on after the record of sequence `seq` ([`Quality::decide`]); cheap enough for
    /// every record: nothing is computed while a freeze has not yet seen a whole window of records.
    pub fn judge(&mut self, limits: &FreezeSettings, seq: u64, now_ms: i64) -> Option<bool> {
        if self.frozen.as_ref().is_some_and(|z| z.records < self.size as u64) {
            return None;
        }
        let verdict = self.verdict(limits);
        self.decide(verdict, seq, now_ms)
    }

    /// Takes the verdict on the input after the record of sequence `seq`: returns `Some(true)` when the updates
    /// freeze now, `Some(false)` when they resume (a whole window of records since the freeze and nothing wrong).
    pub fn decide(&mut self, verdict: Option<String>, seq: u64, now_ms: i64) -> Option<bool> {
        match (&self.frozen, verdict) {
            (None, Some(reason)) => {
                self.frozen = Some(Frozen { since_seq: seq, since_ms: now_ms, reason, records: 0 });
                self.freezes += 1;
                // The rise is acted on: the good state put back starts a new comparison.
                self.restart_gap();
                Some(true)
            }
            (Some(z), None) if z.records >= self.size as u64 => {
                self.frozen = None;
                Some(false)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FreezeSettings {
        FreezeSettings::default()
    }

    /// Feeds `n` labelled events to `q`: the speed model wrong with chance `speed(i)`, the batch model with `batch(i)`.
    fn gaps(q: &mut Quality, seed: u64, n: u64, speed: impl Fn(u64) -> f64, batch: impl Fn(u64) -> f64) -> Vec<u64> {
        let mut r = crate::testing::Lcg(seed);
        let mut signals = Vec::new();
        for i in 0..n {
            q.push(false, false, false);
            let d = f64::from(r.next() < speed(i)) - f64::from(r.next() < batch(i));
            q.observe_gap(d, i + 1);
            if q.verdict(&limits()).is_some() {
                signals.push(i);
                q.decide(q.verdict(&limits()), i + 1, 0);
                q.frozen = None;
            }
        }
        signals
    }

    #[test]
    fn the_speed_model_falling_behind_the_batch_model_freezes_a_steady_gap_or_a_drift_does_not() {
        for seed in 1..=5 {
            // Behind by 10 points all along (a linear model beside a boosted champion): nothing in 200,000 events.
            let mut q = Quality::new(200);
            assert_eq!(gaps(&mut q, seed, 200_000, |_| 0.2, |_| 0.1), Vec::<u64>::new(), "seed {seed}");
            // A concept drift: the batch model falls to 50% wrong, the speed model less so.
            let mut q = Quality::new(200);
            let drift = |i: u64| if i < 5_000 { 0.1 } else { 0.5 };
            assert_eq!(gaps(&mut q, seed, 20_000, |i| drift(i) * 0.6, drift), Vec::<u64>::new(), "seed {seed}");
            // Behind by 10 more points from event 5,000 (drifting behind on a stream that moves): tolerated.
            let mut q = Quality::new(200);
            assert_eq!(gaps(&mut q, seed, 20_000, |i| if i < 5_000 { 0.2 } else { 0.3 }, |_| 0.2), Vec::<u64>::new());
            // What the speed model learned hurt it: from event 5,000 it is wrong 60% of the time, the batch 10%.
            let mut q = Quality::new(200);
            let signals = gaps(&mut q, seed, 10_000, |i| if i < 5_000 { 0.1 } else { 0.6 }, |_| 0.1);
            let first = *signals.first().unwrap_or_else(|| panic!("seed {seed}: no signal"));
            assert!((5_000..5_000 + 300).contains(&first), "seed {seed}: first at {first}");
            assert!(q.verdict(&limits()).is_none(), "acted on once");
        }
    }

    #[test]
    fn a_share_above_its_limit_freezes_and_a_clean_window_resumes() {
        let mut q = Quality::new(100);
        for i in 0..100 {
            // 3% out of range: under the 5% limit.
            q.push(false, i % 33 == 0, false);
        }
        assert_eq!(q.verdict(&limits()), None);
        for i in 0..30 {
            q.push(false, i % 2 == 0, false);
        }
        let why = q.verdict(&limits()).unwrap();
        assert!(why.starts_with("out-of-range rate 0.1"), "{why}");
        assert_eq!(q.decide(Some(why.clone()), 130, 7), Some(true));
        assert_eq!(q.decide(Some(why), 131, 8), None);
        // Clean records: the rate falls under the limit before a whole window has passed, but updates resume only
        // after one.
        for _ in 0..99 {
            q.push(false, false, false);
        }
        assert_eq!(q.verdict(&limits()), None);
        assert_eq!(q.decide(None, 230, 9), None);
        q.push(false, false, false);
        assert_eq!(q.decide(None, 231, 10), Some(false));
        assert_eq!((q.frozen.as_ref(), q.freezes), (None, 1));
    }

    #[test]
    fn rejections_and_unknown_labels_are_each_a_reason() {
        let mut q = Quality::new(10);
        for _ in 0..4 {
            q.push(true, false, false);
        }
        // Less than half a window: no verdict yet.
        assert_eq!(q.verdict(&limits()), None);
        q.push(false, false, false);
        assert!(q.verdict(&limits()).unwrap().starts_with("rejected rate 0.8"));
        let mut q = Quality::new(10);
        for i in 0..10 {
            q.push(false, false, i == 0);
        }
        assert!(q.verdict(&limits()).unwrap().starts_with("unknown-label rate 0.1"));
    }

    #[test]
    fn a_rejected_record_sent_again_counts_once_while_its_first_rejection_is_in_the_window() {
        let mut q = Quality::new(10);
        assert!(q.push_rejected(7));
        q.push(false, false, false);
        // The same record again (a client's retry after a crash): not counted.
        assert!(!q.push_rejected(7));
        assert!(q.push_rejected(8));
        assert_eq!((q.rates().records, q.rates().rejected), (3, 2.0 / 3.0));
        // Once its rejection left the window, the key is a new record again.
        for _ in 0..10 {
            q.push(false, false, false);
        }
        assert!(q.push_rejected(7));
        assert_eq!(q.rates().rejected, 0.1);
        // A million records later the keys kept are the window's rejections only.
        for i in 0..1_000_000u64 {
            if i % 3 == 0 {
                q.push_rejected(i);
            } else {
                q.push(false, false, false);
            }
        }
        let rejected = q.flags.iter().filter(|f| *f & REJECTED != 0).count();
        assert_eq!(q.rejected_keys.len(), rejected);
        assert!(!q.push_rejected(999_999) && q.push_rejected(999_000));
    }

    #[test]
    fn the_counts_stay_exact_over_a_long_stream() {
        let mut q = Quality::new(1000);
        for i in 0..1_000_000u64 {
            q.push(i % 7 == 0, i % 11 == 0, i % 13 == 0);
        }
        let r = q.rates();
        let exact = |m: u64| (999_000..1_000_000u64).filter(|i| i % m == 0).count() as f64 / 1000.0;
        assert_eq!((r.records, r.rejected, r.out_of_range, r.unknown_labels), (1000, exact(7), exact(11), exact(13)));
    }
}
