//! Decay, measured: a model's prequential record over a sliding window of its latest labelled events (each scored
//! before any model learned it), and change detectors on its error stream.
//!
//! The window holds, per event, the loss, whether the most probable class was right (or the absolute error) and,
//! for two classes, the probability of the second class, so that accuracy, log loss and AUC (or MAE and RMSE) of
//! the last `size` events are exact. ADWIN and Page-Hinkley ([`crate::drift`]) watch the error stream: mistakes
//! (0 or 1) for classes; for values the absolute error over three deviations of the history's target, capped at 1.
//! Only a rise of the error is a drift: a window ADWIN cuts because the error fell is the model getting better.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::drift::{Adwin, DriftState, PageHinkley};
use crate::metrics::{evaluate, Metrics};
use crate::model::{argmax, Prediction};
use lambda_core::schema::{Target, TargetRef};

/// One scored event of a window: class probabilities (empty for a value) or the value, and the label. Not a
/// [`Prediction`], whose untagged form the checkpoint's encoding cannot read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Scored {
    probabilities: Vec<f64>,
    value: f64,
    target: Target,
}

impl Scored {
    fn prediction(&self) -> Prediction {
        if self.probabilities.is_empty() {
            Prediction::Value(self.value)
        } else {
            Prediction::Probabilities(self.probabilities.clone())
        }
    }

    /// Its error as [`crate::model::error`] gives it, without building a prediction.
    fn error(&self, classes: &[String]) -> Option<f64> {
        match &self.target {
            Target::Class(c) if !self.probabilities.is_empty() => {
                classes.iter().position(|k| k == c).map(|i| f64::from(argmax(&self.probabilities) != i))
            }
            Target::Value(y) if self.probabilities.is_empty() => Some((self.value - y).abs()),
            _ => None,
        }
    }
}

/// A change detector's state with when it last changed. A drift stays the state for a window's worth of events
/// after the detector signalled it, so that a reader polling now and then sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorStatus {
    /// Stable, warning or drift.
    pub state: DriftState,
    /// Ingestion sequence number of the event at which the state last changed (0: never).
    pub changed_seq: u64,
    /// Event time (milliseconds) of that event.
    pub changed_ms: i64,
    /// Drifts signalled since the record started.
    pub drifts: u64,
    /// Sequence number of the event at which the last drift was signalled (0: never).
    pub last_drift_seq: u64,
    /// Count of recorded events at the last drift.
    last_drift_at: u64,
}

impl Default for DetectorStatus {
    fn default() -> Self {
        DetectorStatus {
            state: DriftState::Stable,
            changed_seq: 0,
            changed_ms: 0,
            drifts: 0,
            last_drift_seq: 0,
            last_drift_at: 0,
        }
    }
}

impl DetectorStatus {
    /// Takes the detector's answer for the `at`-th recorded event (sequence `seq`, time `ms`).
    fn set(&mut self, raw: DriftState, at: u64, hold: u64, seq: u64, ms: i64) {
        if raw == DriftState::Drift {
            self.drifts += 1;
            self.last_drift_seq = seq;
            self.last_drift_at = at;
        }
        let state = if self.drifts > 0 && at - self.last_drift_at < hold { DriftState::Drift } else { raw };
        if state != self.state {
            self.state = state;
            self.changed_seq = seq;
            self.changed_ms = ms;
        }
    }
}

/// Confidence of the warning ADWIN: ten times the drift ADWIN's chance of a false cut, so that it cuts earlier on
/// the same rise (as the adaptive random forest pairs a warning and a drift detector, Gomes et al. 2017).
pub const WARNING_DELTA: f64 = 0.02;

/// A model's windowed prequential record and detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Events the window holds at most.
    pub size: usize,
    /// Class labels (empty for regression).
    pub classes: Vec<String>,
    /// Scale of the error for the detectors (regression): three deviations of the history's target.
    pub error_scale: f64,
    scored: VecDeque<Scored>,
    /// Events recorded since the record started.
    pub recorded: u64,
    /// ADWIN on the error stream.
    pub adwin: Adwin,
    /// Its state, and the warning ADWIN's: drift from the first, warning from the second.
    pub adwin_status: DetectorStatus,
    /// Page-Hinkley on the error stream.
    pub page_hinkley: PageHinkley,
    /// Its state.
    pub page_hinkley_status: DetectorStatus,
    // Last, so that a record written before them ends early and is refused rather than misread.
    /// A second, more sensitive ADWIN ([`WARNING_DELTA`]) whose cuts where the error rose are warnings.
    pub adwin_warning: Adwin,
    /// Count of recorded events at its last such cut not yet followed by a drift (0: none).
    warned_at: u64,
}

impl Window {
    /// An empty record of a model with `classes` (empty for regression; `target_std` then scales its errors).
    pub fn new(size: usize, classes: Vec<String>, target_std: f64) -> Window {
        let error_scale = if target_std.is_finite() && target_std > 0.0 { 3.0 * target_std } else { 1.0 };
        Window {
            size: size.max(1),
            classes,
            error_scale,
            scored: VecDeque::new(),
            recorded: 0,
            adwin: Adwin::default(),
            adwin_status: DetectorStatus::default(),
            page_hinkley: PageHinkley::default(),
            page_hinkley_status: DetectorStatus::default(),
            adwin_warning: Adwin::new(WARNING_DELTA),
            warned_at: 0,
        }
    }

    /// Events in the window.
    pub fn len(&self) -> usize {
        self.scored.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.scored.is_empty()
    }

    /// Records the prediction a model made for an event before learning it. A prediction of the other task, or of
    /// a class the model does not know, is not recorded.
    pub fn record(&mut self, prediction: &Prediction, target: &Target, seq: u64, ms: i64) {
        let error = match (prediction, target) {
            (Prediction::Probabilities(p), Target::Class(c)) => match self.classes.iter().position(|k| k == c) {
                Some(i) if p.len() == self.classes.len() => f64::from(argmax(p) != i),
                _ => return,
            },
            (Prediction::Value(v), Target::Value(y)) if v.is_finite() && y.is_finite() => {
                ((v - y).abs() / self.error_scale).min(1.0)
            }
            _ => return,
        };
        if self.scored.len() == self.size {
            self.scored.pop_front();
        }
        let (probabilities, value) = match prediction {
            Prediction::Probabilities(p) => (p.clone(), 0.0),
            Prediction::Value(v) => (Vec::new(), *v),
        };
        self.scored.push_back(Scored { probabilities, value, target: target.clone() });
        self.recorded += 1;
        let (at, hold) = (self.recorded, self.size as u64);
        // A cut after which the error is lower is the model getting better, not decay: not a drift.
        let before = self.adwin.mean();
        let rose = self.adwin.update(error) && self.adwin.mean() > before;
        let before = self.adwin_warning.mean();
        if self.adwin_warning.update(error) && self.adwin_warning.mean() > before {
            self.warned_at = at;
        }
        let raw = if rose {
            self.warned_at = 0;
            DriftState::Drift
        } else if self.warned_at > 0 && at - self.warned_at < hold {
            DriftState::Warning
        } else {
            DriftState::Stable
        };
        self.adwin_status.set(raw, at, hold, seq, ms);
        let ph = self.page_hinkley.update(error);
        self.page_hinkley_status.set(ph, at, hold, seq, ms);
    }

    /// The summed errors of its latest `k` events (mistakes for classes, absolute errors for values), with the
    /// events it held if fewer.
    pub fn latest_errors(&self, k: usize) -> (f64, usize) {
        let skip = self.scored.len().saturating_sub(k);
        let mut sum = 0.0;
        let mut n = 0;
        for s in self.scored.iter().skip(skip) {
            if let Some(e) = s.error(&self.classes) {
                sum += e;
                n += 1;
            }
        }
        (sum, n)
    }

    /// The window's metrics: accuracy, log loss and AUC, or RMSE, MAE and R²; empty when it holds no event.
    pub fn metrics(&self) -> Metrics {
        if self.scored.is_empty() {
            return Metrics::new();
        }
        let predictions: Vec<Prediction> = self.scored.iter().map(Scored::prediction).collect();
        let targets: Vec<TargetRef<'_>> = self.scored.iter().map(|s| s.target.borrow()).collect();
        evaluate(&self.classes, &predictions, &targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["no".into(), "yes".into()]
    }

    fn p(yes: f64) -> Prediction {
        Prediction::Probabilities(vec![1.0 - yes, yes])
    }

    #[test]
    fn the_window_scores_only_its_latest_events() {
        let mut w = Window::new(100, classes(), 1.0);
        // 300 wrong answers, then 100 right ones: the window sees only the right ones.
        for i in 0..300 {
            w.record(&p(0.9), &Target::Class("no".into()), i, i as i64);
        }
        for i in 300..400 {
            w.record(&p(0.9), &Target::Class("yes".into()), i, i as i64);
        }
        assert_eq!(w.len(), 100);
        let m = w.metrics();
        assert_eq!(m["accuracy"], 1.0);
        assert!((m["log_loss"] - -(0.9f64.ln())).abs() < 1e-12);
        // Unknown classes and the other task are not recorded.
        w.record(&p(0.5), &Target::Class("maybe".into()), 400, 400);
        w.record(&Prediction::Value(1.0), &Target::Value(1.0), 401, 401);
        assert_eq!(w.len(), 100);
    }

    #[test]
    fn a_rise_of_the_error_moves_both_detectors_to_drift_and_says_when() {
        let mut w = Window::new(1000, classes(), 1.0);
        let mut state = 17u64;
        let mut coin = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..10_000u64 {
            // Right 85% of the time, then 45% from event 5,000 on.
            let right = coin() < if i < 5_000 { 0.85 } else { 0.45 };
            let label = if right { "yes" } else { "no" };
            w.record(&p(0.8), &Target::Class(label.into()), i + 1, 1_000 * i as i64);
            if i == 4_999 {
                assert_eq!((w.adwin_status.drifts, w.page_hinkley_status.drifts), (0, 0));
            }
        }
        assert!(w.adwin_status.drifts >= 1 && w.page_hinkley_status.drifts >= 1);
        for d in [&w.adwin_status, &w.page_hinkley_status] {
            assert!(d.last_drift_seq > 5_000, "{d:?}");
        }

        let m = w.metrics();
        assert!((m["accuracy"] - 0.45).abs() < 0.06, "{m:?}");
    }

    /// States of the ADWIN status after each of `n` events, the `i`-th mistaken with chance `rate(i)`.
    fn adwin_states(seed: u64, n: u64, rate: impl Fn(u64) -> f64) -> Vec<DriftState> {
        let mut w = Window::new(1000, classes(), 1.0);
        let mut r = crate::testing::Lcg(seed);
        (0..n)
            .map(|i| {
                let label = if r.next() < rate(i) { "no" } else { "yes" };
                w.record(&p(0.8), &Target::Class(label.into()), i + 1, i as i64);
                w.adwin_status.state
            })
            .collect()
    }

    #[test]
    fn adwin_warns_before_it_signals_a_drift_on_a_slow_rise_of_the_error() {
        for seed in 1..=10 {
            // 10% mistakes, rising to 40% between events 20,000 and 30,000.
            let rate = |i: u64| 0.1 + 0.3 * ((i as f64 - 20_000.0) / 10_000.0).clamp(0.0, 1.0);
            let states = adwin_states(seed, 40_000, rate);
            let first = |s| states.iter().position(|x| *x == s);
            let (warning, drift) = (first(DriftState::Warning), first(DriftState::Drift));
            let (Some(warning), Some(drift)) = (warning, drift) else {
                panic!("seed {seed}: warning {warning:?}, drift {drift:?}")
            };
            assert!(warning >= 20_000 && warning < drift, "seed {seed}: warning at {warning}, drift at {drift}");
        }
    }

    #[test]
    fn adwin_raises_few_warnings_and_no_drift_on_a_stable_error() {
        let mut warnings = 0;
        for seed in 1..=5 {
            let states = adwin_states(seed, 200_000, |_| 0.2);
            assert!(!states.contains(&DriftState::Drift), "seed {seed}");
            warnings +=
                states.windows(2).filter(|w| w[0] != DriftState::Warning && w[1] == DriftState::Warning).count();
        }
        eprintln!("warnings in a million stable events: {warnings}");
        assert!(warnings <= 5, "{warnings} warnings in a million stable events");
    }

    #[test]
    fn a_fall_of_the_error_is_not_a_drift() {
        let mut w = Window::new(1000, classes(), 1.0);
        for i in 0..6_000u64 {
            // Wrong on every other event, then always right.
            let label = if i < 3_000 && i % 2 == 0 { "no" } else { "yes" };
            w.record(&p(0.9), &Target::Class(label.into()), i + 1, 0);
        }
        assert!(w.adwin.width() < 3_000, "ADWIN cut its window");
        assert_eq!((w.adwin_status.drifts, w.adwin_status.state), (0, DriftState::Stable));
    }

    #[test]
    fn a_drift_stays_the_state_for_a_window_of_events_then_the_detector_speaks_again() {
        let mut d = DetectorStatus::default();
        d.set(DriftState::Stable, 1, 100, 501, 1);
        d.set(DriftState::Drift, 10, 100, 510, 10);
        assert_eq!((d.state, d.changed_seq, d.last_drift_seq, d.drifts), (DriftState::Drift, 510, 510, 1));
        d.set(DriftState::Warning, 109, 100, 609, 109);
        assert_eq!((d.state, d.changed_seq), (DriftState::Drift, 510));
        d.set(DriftState::Warning, 110, 100, 610, 110);
        assert_eq!((d.state, d.changed_seq, d.changed_ms), (DriftState::Warning, 610, 110));
    }

    #[test]
    fn a_window_round_trips_through_the_state_encoding() {
        let mut w = Window::new(5, classes(), 1.0);
        let mut r = Window::new(5, vec![], 2.0);
        for i in 0..8 {
            w.record(&p(0.1 * i as f64), &Target::Class("yes".into()), i, 0);
            r.record(&Prediction::Value(i as f64), &Target::Value(1.0), i, 0);
        }
        let path = std::path::Path::new("window");
        let back: Window = crate::testing::decode(path, &crate::testing::encode(&w).unwrap()).unwrap();
        let back_r: Window = crate::testing::decode(path, &crate::testing::encode(&r).unwrap()).unwrap();
        assert_eq!((back.metrics(), back_r.metrics()), (w.metrics(), r.metrics()));
        assert_eq!((back, back_r), (w, r));
    }

    #[test]
    fn regression_errors_are_scaled_by_the_history_s_deviation() {
        let mut w = Window::new(10, vec![], 2.0);
        for i in 0..10 {
            w.record(&Prediction::Value(1.0), &Target::Value(4.0), i, 0);
        }
        let m = w.metrics();
        assert_eq!(m["mae"], 3.0);
        assert_eq!(m["rmse"], 3.0);
        assert_eq!(w.adwin.mean(), 0.5);
    }
}
