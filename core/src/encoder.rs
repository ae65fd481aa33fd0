//! The feature encoder: fitted once from history by the batch layer, stored with the model, and applied by every
//! layer through [`Encoder::encode_row`], the one code path for single records and column batches alike.
//!
//! Layout per feature, in spec order:
//! - numeric: `[standardized value, missing]` (a missing value is encoded as the mean, i.e. 0, plus the flag);
//! - boolean: `[value as 0/1, missing]`;
//! - categorical: one-hot over the vocabulary, then an unknown bucket, then a missing slot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::{CellRef, Codes, Column, Columns, Rejection, RowSource, Target, Targets};
use crate::spec::{FeatureKind, Spec};

/// How many history spans (max - min) beyond the history range a numeric value may lie before it is rejected.
pub const RANGE_SLACK: f64 = 10.0;

/// How far past history's range, in spans, a numeric value counts as outside it (a sign of shifted input when many
/// are). Real data widens its range as it goes: on River's TrumpApproval 14 of the first 300 live records had an
/// approval rate 1.0 past history's largest (a span of 12), and the freeze's out-of-range share (7% > 5%) stopped
/// online learning on clean input.
pub const RANGE_MARGIN: f64 = 0.1;

/// How one feature is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureEncoder {
    /// Standardization of a numeric feature.
    Numeric {
        /// Feature name.
        name: String,
        /// Mean over the non-missing training values.
        mean: f64,
        /// Standard deviation over the non-missing training values (1 when constant).
        std: f64,
        /// Smallest training value.
        min: f64,
        /// Largest training value.
        max: f64,
        /// Correlation of the value with event time over the training rows (0 when not measured): a feature that
        /// grows with time (a date, a running count) is expected past its largest training value.
        #[serde(default)]
        trend: f64,
    },
    /// One-hot encoding of a categorical feature.
    Categorical {
        /// Feature name.
        name: String,
        /// Category to slot, most frequent categories only.
        vocabulary: BTreeMap<String, usize>,
    },
    /// A boolean feature.
    Boolean {
        /// Feature name.
        name: String,
    },
}

impl FeatureEncoder {
    /// Number of output dimensions.
    pub fn width(&self) -> usize {
        match self {
            FeatureEncoder::Numeric { .. } | FeatureEncoder::Boolean { .. } => 2,
            FeatureEncoder::Categorical { vocabulary, .. } => vocabulary.len() + 2,
        }
    }

    /// Feature name.
    pub fn name(&self) -> &str {
        match self {
            FeatureEncoder::Numeric { name, .. }
            | FeatureEncoder::Categorical { name, .. }
            | FeatureEncoder::Boolean { name } => name,
        }
    }

    /// Writes the encoding of `cell` into `out`, which is exactly [`FeatureEncoder::width`] long and zeroed.
    fn encode_cell(&self, cell: CellRef<'_>, out: &mut [f64]) {
        match (self, cell) {
            (FeatureEncoder::Numeric { mean, std, .. }, CellRef::Num(Some(x))) => out[0] = (x - mean) / std,
            (FeatureEncoder::Boolean { .. }, CellRef::Bool(Some(b))) => out[0] = if b { 1.0 } else { 0.0 },
            (FeatureEncoder::Categorical { vocabulary, .. }, CellRef::Cat(Some(c))) => {
                let slot = vocabulary.get(c).copied().unwrap_or(vocabulary.len());
                out[slot] = 1.0;
            }
            (FeatureEncoder::Categorical { .. }, _) => out[out.len() - 1] = 1.0,
            // Missing numeric or boolean (or a cell of another kind, which a checked record never has).
            _ => out[1] = 1.0,
        }
    }
}

/// The range of a regression target in history, against which live targets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetRange {
    /// Smallest training target.
    pub min: f64,
    /// Largest training target.
    pub max: f64,
    /// Standard deviation of the training targets.
    pub std: f64,
}

/// The fitted encoder of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// One encoder per feature, in spec order.
    pub features: Vec<FeatureEncoder>,
    /// Range of the regression target in history (`None` for classification, or for models fitted before it
    /// was kept).
    #[serde(default)]
    pub target: Option<TargetRange>,
}

/// Count, mean, M2, min and max of a stream (Welford: stable on large, shifted data).
fn moments<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64, f64, f64, f64) {
    let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in values {
        n += 1.0;
        let d = x - mean;
        mean += d / n;
        m2 += d * (x - mean);
        min = min.min(*x);
        max = max.max(*x);
    }
    (n, mean, m2, min, max)
}

/// A feature whose correlation with event time is beyond this in history trends: past its range in the trend's
/// direction is not a sign of shifted input.
pub const TREND: f64 = 0.9;

/// Pearson correlation of the non-missing `values` of `rows` with their event `times` (0 without spread).
fn time_correlation(values: &[f64], times: &[i64], rows: &[usize]) -> f64 {
    let (mut n, mut mx, mut mt, mut cxx, mut ctt, mut cxt) = (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &r in rows {
        let (x, t) = (values[r], times[r] as f64);
        if x.is_nan() {
            continue;
        }
        n += 1.0;
        let (dx, dt) = (x - mx, t - mt);
        mx += dx / n;
        mt += dt / n;
        cxx += dx * (x - mx);
        ctt += dt * (t - mt);
        cxt += dx * (t - mt);
    }
    let c = cxt / (cxx * ctt).sqrt();
    if c.is_finite() {
        c
    } else {
        0.0
    }
}

impl Encoder {
    /// Fits the encoder on every row of `columns`.
    pub fn fit(spec: &Spec, columns: &Columns) -> Result<Encoder> {
        let all: Vec<usize> = (0..columns.len()).collect();
        Encoder::fit_rows(spec, columns, &all)
    }

    /// Fits the encoder on the given rows of `columns`.
    pub fn fit_rows(spec: &Spec, columns: &Columns, rows: &[usize]) -> Result<Encoder> {
        if columns.features.len() != spec.features.len() {
            return Err(Error::Data(format!(
                "{} feature columns given, the spec declares {}",
                columns.features.len(),
                spec.features.len()
            )));
        }
        let mut features = Vec::with_capacity(spec.features.len());
        for (f, col) in spec.features.iter().zip(&columns.features) {
            let enc = match (f.kind, col) {
                (FeatureKind::Numeric, Column::Num(values)) => {
                    let (n, mean, m2, mut min, mut max) =
                        moments(rows.iter().map(|&r| &values[r]).filter(|x| !x.is_nan()));
                    let std = if n > 0.0 { (m2 / n).sqrt() } else { 0.0 };
                    let std = if std.is_finite() && std > 1e-12 { std } else { 1.0 };
                    if n == 0.0 {
                        (min, max) = (0.0, 0.0);
                    }
                    let trend = time_correlation(values, &columns.times, rows);
                    FeatureEncoder::Numeric { name: f.name.clone(), mean, std, min, max, trend }
                }
                (FeatureKind::Categorical, Column::Cat(values)) => {
                    let mut counts = vec![0u64; values.values.len()];
                    for &r in rows {
                        if let Some(n) = counts.get_mut(values.codes[r] as usize) {
                            *n += 1;
                        }
                    }
                    let mut ranked: Vec<(&str, u64)> = values
                        .values
                        .iter()
                        .zip(counts)
                        .filter(|(_, n)| *n > 0)
                        .map(|(c, n)| (c.as_str(), n))
                        .collect();
                    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                    ranked.truncate(spec.batch.max_categories);
                    let mut names: Vec<&str> = ranked.into_iter().map(|(c, _)| c).collect();
                    names.sort_unstable();
                    let vocabulary = names.into_iter().enumerate().map(|(i, c)| (c.to_string(), i)).collect();
                    FeatureEncoder::Categorical { name: f.name.clone(), vocabulary }
                }
                (FeatureKind::Boolean, Column::Bool(_)) => FeatureEncoder::Boolean { name: f.name.clone() },
                (kind, _) => {
                    return Err(Error::Data(format!("column `{}` does not hold {kind:?} values", f.name)));
                }
            };
            features.push(enc);
        }
        let target = match &columns.targets {
            Targets::Values(ys) => {
                let (n, _, m2, min, max) = moments(rows.iter().map(|&r| &ys[r]).filter(|y| !y.is_nan()));
                (n > 0.0).then(|| {
                    let std = (m2 / n).sqrt();
                    TargetRange { min, max, std: if std.is_finite() { std } else { 0.0 } }
                })
            }
            Targets::Classes(_) => None,
        };
        Ok(Encoder { features, target })
    }

    /// Length of an encoded vector.
    pub fn dim(&self) -> usize {
        self.features.iter().map(FeatureEncoder::width).sum()
    }

    /// The largest absolute value each encoded dimension took in history: a standardized number's farthest
    /// training value, 1 for a flag or a one-hot slot. An online learner that normalizes by feature scale starts from
    /// these, so that history's values never count as a scale change.
    pub fn scales(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.dim());
        for f in &self.features {
            match f {
                FeatureEncoder::Numeric { mean, std, min, max, .. } => {
                    let s = (max - mean).abs().max((min - mean).abs()) / std;
                    out.push(if s.is_finite() && s > 0.0 { s } else { 1.0 });
                    out.push(1.0);
                }
                _ => out.extend(std::iter::repeat_n(1.0, f.width())),
            }
        }
        out
    }

    /// Encodes one row into `out` (length [`Encoder::dim`]). The only encoding code path.
    pub fn encode_row<R: RowSource + ?Sized>(&self, row: &R, out: &mut [f64]) {
        out.fill(0.0);
        let mut at = 0;
        for (i, f) in self.features.iter().enumerate() {
            let w = f.width();
            f.encode_cell(row.cell(i), &mut out[at..at + w]);
            at += w;
        }
    }

    /// Encodes one row into a new vector.
    pub fn encode<R: RowSource + ?Sized>(&self, row: &R) -> Vec<f64> {
        let mut out = vec![0.0; self.dim()];
        self.encode_row(row, &mut out);
        out
    }

    /// Encodes every row of `columns` into one row-major matrix (`len × dim`).
    pub fn encode_batch(&self, columns: &Columns) -> Vec<f64> {
        self.encode_rows(columns, 0..columns.len())
    }

    /// Encodes the given rows of `columns` into one row-major matrix (`rows × dim`), bit for bit as
    /// [`Encoder::encode_row`] would; category codes are looked up in the vocabulary once per column, not per row.
    pub fn encode_rows(&self, columns: &Columns, rows: impl ExactSizeIterator<Item = usize>) -> Vec<f64> {
        let dim = self.dim();
        let n = rows.len();
        let mut out = vec![0.0; n * dim];
        // Per categorical column, the slot of each code: the same lookup `encode_cell` makes.
        let slots: Vec<Vec<usize>> = self
            .features
            .iter()
            .zip(&columns.features)
            .map(|(f, c)| match (f, c) {
                (FeatureEncoder::Categorical { vocabulary, .. }, Column::Cat(codes)) => codes
                    .values
                    .iter()
                    .map(|v| vocabulary.get(v.as_str()).copied().unwrap_or(vocabulary.len()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        for (i, r) in rows.enumerate() {
            let row = &mut out[i * dim..(i + 1) * dim];
            let mut at = 0;
            for ((f, c), slots) in self.features.iter().zip(&columns.features).zip(&slots) {
                let w = f.width();
                let cell = &mut row[at..at + w];
                match (f, c) {
                    (FeatureEncoder::Categorical { .. }, Column::Cat(codes)) => match codes.codes[r] {
                        Codes::NONE => cell[w - 1] = 1.0,
                        code => cell[slots[code as usize]] = 1.0,
                    },
                    (f, c) => f.encode_cell(c.get(r), cell),
                }
                at += w;
            }
        }
        out
    }

    /// Checks numeric values against the range seen in history, widened by [`RANGE_SLACK`] spans on each side:
    /// a finite but absurd value (a unit mix-up, a sentinel such as 1e300) would otherwise swamp an SGD step.
    pub fn check_ranges<R: RowSource + ?Sized>(&self, row: &R) -> Result<(), Rejection> {
        for (i, f) in self.features.iter().enumerate() {
            if let (FeatureEncoder::Numeric { name, std, min, max, .. }, CellRef::Num(Some(x))) = (f, row.cell(i)) {
                let span = (max - min).max(*std);
                if x < min - RANGE_SLACK * span || x > max + RANGE_SLACK * span {
                    return Err(Rejection::new(
                        name.clone(),
                        format!("{x} is far outside the range seen in history [{min}, {max}]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a numeric value lies outside the range seen in history by more than [`RANGE_MARGIN`] spans (a sign
    /// of shifted input when many do); past the end a feature that trends with time in history moves to is not.
    pub fn outside_history<R: RowSource + ?Sized>(&self, row: &R) -> bool {
        self.features.iter().enumerate().any(|(i, f)| match (f, row.cell(i)) {
            (FeatureEncoder::Numeric { min, max, std, trend, .. }, CellRef::Num(Some(x))) => {
                let margin = RANGE_MARGIN * (max - min).max(*std);
                (x < min - margin && *trend > -TREND) || (x > max + margin && *trend < TREND)
            }
            _ => false,
        })
    }

    /// Checks a regression target against the range of the training targets, like [`Encoder::check_ranges`].
    pub fn check_target(&self, field: &str, target: &Target) -> Result<(), Rejection> {
        if let (Some(r), Target::Value(y)) = (&self.target, target) {
            let span = (r.max - r.min).max(r.std).max(f64::MIN_POSITIVE);
            if *y < r.min - RANGE_SLACK * span || *y > r.max + RANGE_SLACK * span {
                return Err(Rejection::new(
                    field,
                    format!("{y} is far outside the range of targets seen in history [{}, {}]", r.min, r.max),
                ));
            }
        }
        Ok(())
    }

    /// The encoded dimensions of each feature, in order: they cover `0..dim()` once.
    pub fn feature_inputs(&self) -> Vec<Vec<u32>> {
        let mut at = 0u32;
        self.features
            .iter()
            .map(|f| {
                let w = f.width() as u32;
                at += w;
                (at - w..at).collect()
            })
            .collect()
    }

    /// Names of the encoded dimensions, for reports.
    pub fn dimension_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.dim());
        for f in &self.features {
            match f {
                FeatureEncoder::Numeric { name, .. } | FeatureEncoder::Boolean { name } => {
                    out.push(name.clone());
                    out.push(format!("{name}=<missing>"));
                }
                FeatureEncoder::Categorical { name, vocabulary } => {
                    let mut cats: Vec<(&String, &usize)> = vocabulary.iter().collect();
                    cats.sort_by_key(|(_, i)| **i);
                    out.extend(cats.into_iter().map(|(c, _)| format!("{name}={c}")));
                    out.push(format!("{name}=<unknown>"));
                    out.push(format!("{name}=<missing>"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Cell, Event};
    use proptest::prelude::*;
    use std::path::Path;

    fn spec() -> Spec {
        Spec::from_toml(crate::spec::tests::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
        let cell_num = prop_oneof![Just(None), (-1e6f64..1e6).prop_map(Some)];
        let cell_cat = prop_oneof![Just(None), "[a-e]{1,2}".prop_map(Some)];
        let cell_bool = prop_oneof![Just(None), any::<bool>().prop_map(Some)];
        prop::collection::vec((cell_num, cell_cat, cell_bool, any::<bool>()), 1..60).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (n, c, b, y))| Event {
                    id: format!("e{i}"),
                    key: format!("k{}", i % 3),
                    time: i as i64,
                    features: vec![Cell::Num(n), Cell::Cat(c), Cell::Bool(b)],
                    target: Some(Target::Class(y.to_string())),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn batch_and_single_record_encodings_are_bit_identical(fit in events_strategy(), rows in events_strategy()) {
            let s = spec();
            let enc = Encoder::fit(&s, &Columns::from_events(&s, fit.iter().enumerate().map(|(i, e)| (i as u64, e)))).unwrap();
            let cols = Columns::from_events(&s, rows.iter().enumerate().map(|(i, e)| (i as u64, e)));
            let batch = enc.encode_batch(&cols);
            let dim = enc.dim();
            for (r, e) in rows.iter().enumerate() {
                let single = enc.encode(e);
                let from_batch = &batch[r * dim..(r + 1) * dim];
                prop_assert_eq!(single.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                                from_batch.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn standardizes_and_flags_missing_and_unknown() {
        let s = spec();
        let ev = |n: Option<f64>, c: Option<&str>, b: Option<bool>| Event {
            id: "e".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(n), Cell::Cat(c.map(str::to_string)), Cell::Bool(b)],
            target: None,
        };
        let fit = [ev(Some(1.0), Some("fr"), Some(true)), ev(Some(3.0), Some("de"), Some(false))];
        let enc = Encoder::fit(&s, &Columns::from_events(&s, fit.iter().map(|e| (0, e)))).unwrap();
        assert_eq!(enc.dim(), 2 + 4 + 2);
        // mean 2, std 1; vocabulary sorted: de=0, fr=1.
        assert_eq!(enc.encode(&ev(Some(3.0), Some("fr"), Some(true))), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(enc.encode(&ev(None, Some("it"), None)), vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(enc.encode(&ev(Some(2.0), None, Some(false))), vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(enc.dimension_names()[4], "country=<unknown>");
        // History spans [1, 3]: values within ten spans pass, beyond are rejected, missing values pass.
        assert!(enc.check_ranges(&ev(Some(20.0), None, None)).is_ok());
        assert!(enc.check_ranges(&ev(None, None, None)).is_ok());
        let r = enc.check_ranges(&ev(Some(1e300), None, None)).unwrap_err();
        assert_eq!(r.field, "amount");
        assert!(enc.check_ranges(&ev(Some(-30.0), None, None)).is_err());
    }

    /// An event at time `t` with amount `x` and nothing else.
    fn timed_amount(t: i64, x: f64) -> Event {
        Event {
            id: format!("e{t}"),
            key: "k".into(),
            time: t,
            features: vec![Cell::Num(Some(x)), Cell::Cat(None), Cell::Bool(None)],
            target: None,
        }
    }

    #[test]
    fn a_feature_that_grows_with_time_is_not_out_of_range_past_its_end() {
        // Regression: a date-like feature (River's TrumpApproval, `ordinal_date`) is past history's largest value on
        // every live event; all of them counted out of range and froze online learning until the next batch.
        let s = spec();
        let ev = timed_amount;
        let rising: Vec<Event> = (0..100).map(|t| ev(t, 1_000.0 + t as f64 + (t % 3) as f64)).collect();
        let enc = Encoder::fit(&s, &Columns::from_events(&s, rising.iter().map(|e| (0, e)))).unwrap();
        assert!(!enc.outside_history(&ev(200, 1_150.0)), "past the end it grows to");
        assert!(enc.outside_history(&ev(200, 900.0)), "before its start");
        // Without a trend both sides count.
        let flat: Vec<Event> = (0..100).map(|t| ev(t, 1_000.0 + ((t * 37) % 100) as f64)).collect();
        let enc = Encoder::fit(&s, &Columns::from_events(&s, flat.iter().map(|e| (0, e)))).unwrap();
        assert!(enc.outside_history(&ev(200, 1_150.0)) && enc.outside_history(&ev(200, 900.0)));
        assert!(!enc.outside_history(&ev(200, 1_050.0)));
    }

    #[test]
    fn a_value_just_past_history_s_range_is_not_out_of_range() {
        // Regression: real data's ranges widen as it goes (River's TrumpApproval froze online learning at 7% of its
        // records a little past history's largest value).
        let s = spec();
        let ev = timed_amount;
        let history: Vec<Event> = (0..100).map(|t| ev(t, ((t * 37) % 101) as f64 / 10.0)).collect();
        let enc = Encoder::fit(&s, &Columns::from_events(&s, history.iter().map(|e| (0, e)))).unwrap();
        for (x, outside) in [(10.5, false), (-0.5, false), (11.5, true), (-1.5, true), (5.0, false)] {
            assert_eq!(enc.outside_history(&ev(200, x)), outside, "{x} in a history of [0, 10]");
        }
    }

    #[test]
    fn regression_target_1e200_is_rejected_like_a_feature() {
        let mut s = spec();
        s.dataset.task = crate::spec::Task::Regression;
        let ev = |y: f64| Event {
            id: "e".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(Some(1.0)), Cell::Cat(None), Cell::Bool(None)],
            target: Some(Target::Value(y)),
        };
        let fit = [ev(10.0), ev(30.0), ev(20.0)];
        let enc = Encoder::fit(&s, &Columns::from_events(&s, fit.iter().map(|e| (0, e)))).unwrap();
        assert_eq!(enc.target.map(|t| (t.min, t.max)), Some((10.0, 30.0)));
        assert!(enc.check_target("y", &Target::Value(200.0)).is_ok());
        let r = enc.check_target("y", &Target::Value(1e200)).unwrap_err();
        assert!(r.field == "y" && r.problem.contains("far outside"), "{r}");
        assert!(enc.check_target("y", &Target::Value(-400.0)).is_err());
        // Classification targets are not ranged.
        assert!(enc.check_target("y", &Target::Class("x".into())).is_ok());
    }

    #[test]
    fn vocabulary_keeps_most_frequent() {
        let mut s = spec();
        s.batch.max_categories = 1;
        let ev = |c: &str| Event {
            id: "e".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(None), Cell::Cat(Some(c.into())), Cell::Bool(None)],
            target: None,
        };
        let fit = [ev("a"), ev("b"), ev("b")];
        let enc = Encoder::fit(&s, &Columns::from_events(&s, fit.iter().map(|e| (0, e)))).unwrap();
        match &enc.features[1] {
            FeatureEncoder::Categorical { vocabulary, .. } => assert_eq!(vocabulary.keys().collect::<Vec<_>>(), ["b"]),
            other => panic!("{other:?}"),
        }
    }
}
