//! Per-key views as monoids. A [`KeyView`] holds the count, per-feature sum, sum of squares, min and max (numeric
//! and boolean features), label counts or target sums, and first and last event time of one key; [`ViewTable`]
//! maps keys to views. [`ViewTable::merge`] is associative and commutative with the empty table as identity, so
//! `batch ⊕ realtime` equals the aggregate over all events, whichever way the events were split.
//!
//! A table is laid out by column (one slot per key; counts, times, stats and label counts in flat vectors; key
//! bytes in one arena indexed by a hash table of slots), so a key costs about 200 bytes with the sample schema,
//! whatever its history. Sums are kept scaled by a power of two chosen so that no finite input can overflow them:
//! with ordinary values the scale is 1 and the sums are the plain sums, bit for bit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int16Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use crate::master::pq_err;
use lambda_core::error::Result;
use lambda_core::schema::{CellRef, RowSource, Target, TargetRef};
use lambda_core::spec::{FeatureKind, Spec, Task};

/// Largest scaled magnitude kept before the scale grows: squares of it, summed 2^63 times, stay finite.
const SCALED_LIMIT_EXP: i32 = 450;

/// `v × 2^k`, exact unless the result leaves the normal range.
fn ldexp(mut v: f64, mut k: i32) -> f64 {
    while k > 1000 {
        v *= 2f64.powi(1000);
        k -= 1000;
    }
    while k < -1000 {
        v *= 2f64.powi(-1000);
        k += 1000;
    }
    v * 2f64.powi(k)
}

/// Count, sum, sum of squares, min and max of one value stream. Sums are stored scaled by `2^-exp` (and the sum of
/// squares by `2^-2exp`) so that no sequence of finite values overflows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Non-missing values seen.
    pub count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    exp: i16,
}

impl Stats {
    /// Adds one finite value.
    pub fn observe(&mut self, x: f64) {
        self.fit_scale(x);
        let s = ldexp(x, -i32::from(self.exp));
        self.count += 1;
        self.sum += s;
        self.sum_sq += s * s;
        if self.count == 1 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }

    fn fit_scale(&mut self, x: f64) {
        let to = i32::from(Stats::scale_for(x));
        if to > i32::from(self.exp) {
            self.rescale(to);
        }
    }

    /// The scale exponent that [`Stats::observe`] settles on for values of largest magnitude `|x|`: 0 below
    /// 2^450, then rounded up to a multiple of 64 so that rescaling stays rare. An aggregation that sums
    /// `x × 2^-scale` and `(x × 2^-scale)²` stores what `observe` would, up to the order of the additions.
    pub fn scale_for(x: f64) -> i16 {
        let (_, e) = frexp(x);
        let need = e - SCALED_LIMIT_EXP;
        if need > 0 {
            ((need + 63) / 64 * 64).min(i32::from(i16::MAX)) as i16
        } else {
            0
        }
    }

    /// `x × 2^-scale`: a value as a stat of that scale sums it (exact for every finite `x` that needs the scale).
    pub fn scaled(x: f64, scale: i16) -> f64 {
        ldexp(x, -i32::from(scale))
    }

    fn rescale(&mut self, to: i32) {
        let d = i32::from(self.exp) - to;
        self.sum = ldexp(self.sum, d);
        self.sum_sq = ldexp(self.sum_sq, 2 * d);
        self.exp = to.clamp(0, i32::from(i16::MAX)) as i16;
    }

    /// The monoid operation.
    pub fn merge(&mut self, o: &Stats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let mut o = *o;
        let to = self.exp.max(o.exp);
        if self.exp != to {
            self.rescale(i32::from(to));
        }
        if o.exp != to {
            o.rescale(i32::from(to));
        }
        self.count += o.count;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Sum of the values; infinite only when the true sum lies beyond the range of `f64`.
    pub fn sum(&self) -> f64 {
        ldexp(self.sum, i32::from(self.exp))
    }

    /// Sum of squares; infinite only when the true value lies beyond the range of `f64`.
    pub fn sum_sq(&self) -> f64 {
        ldexp(self.sum_sq, 2 * i32::from(self.exp))
    }

    /// Smallest value, if any.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean of the values, if any; always finite.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| ldexp(self.sum / self.count as f64, i32::from(self.exp)))
    }

    /// Population standard deviation, if any values.
    pub fn std(&self) -> Option<f64> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            let m = self.sum / n;
            ldexp((self.sum_sq / n - m * m).max(0.0).sqrt(), i32::from(self.exp))
        })
    }

    /// The raw stored parts `(count, scaled sum, scaled sum of squares, min, max, scale exponent)`.
    pub fn parts(&self) -> (u64, f64, f64, f64, f64, i16) {
        (self.count, self.sum, self.sum_sq, self.min, self.max, self.exp)
    }

    /// Rebuilds stats from [`Stats::parts`].
    pub fn from_parts(count: u64, sum: f64, sum_sq: f64, min: f64, max: f64, exp: i16) -> Stats {
        Stats { count, sum, sum_sq, min, max, exp }
    }

    /// Whether every stored number is finite.
    pub fn is_finite(&self) -> bool {
        self.sum.is_finite() && self.sum_sq.is_finite() && self.min.is_finite() && self.max.is_finite()
    }
}

/// Binary exponent `e` with `|x| < 2^e` (0 for zero).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.abs().to_bits();
    let raw = ((bits >> 52) & 0x7ff) as i32;
    if raw == 0 {
        // Subnormal: far below any scale that matters.
        return (x, -1022);
    }
    (x, raw - 1022)
}

/// The aggregate of one key, as an owned value (API answers, merges of single keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyView {
    /// Events seen.
    pub count: u64,
    /// Stats per aggregated feature, in [`ViewTable::features`] order.
    pub features: Vec<Stats>,
    /// Events per class label (classification).
    pub labels: BTreeMap<String, u64>,
    /// Stats of the target (regression).
    pub target: Stats,
    /// Earliest event time.
    pub first_seen: Option<i64>,
    /// Latest event time.
    pub last_seen: Option<i64>,
    /// Highest ingestion sequence number.
    pub last_seq: u64,
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl KeyView {
    /// The monoid operation.
    pub fn merge(&mut self, o: &KeyView) {
        self.count += o.count;
        if self.features.len() < o.features.len() {
            self.features.resize(o.features.len(), Stats::default());
        }
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
        for (label, n) in &o.labels {
            *self.labels.entry(label.clone()).or_default() += n;
        }
        self.target.merge(&o.target);
        self.first_seen = opt(self.first_seen, o.first_seen, i64::min);
        self.last_seen = opt(self.last_seen, o.last_seen, i64::max);
        self.last_seq = self.last_seq.max(o.last_seq);
    }
}

/// One key's view in the compact form that realtime files carry; label counts follow the file's class list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedRow {
    /// The key.
    pub key: String,
    /// Events seen.
    pub count: u64,
    /// Earliest event time.
    pub first_seen: i64,
    /// Latest event time.
    pub last_seen: i64,
    /// Highest ingestion sequence number.
    pub last_seq: u64,
    /// Feature stats, then the target stats for regression.
    pub stats: Vec<Stats>,
    /// Count per class, in the class list's order.
    pub labels: Vec<u64>,
}

fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Per-key views of a pipeline, laid out by column.
#[derive(Debug, Clone, Default)]
pub struct ViewTable {
    /// Names of the aggregated features (numeric and boolean ones, spec order).
    pub features: Vec<String>,
    /// Indices of those features in the spec.
    pub feature_index: Vec<usize>,
    regression: bool,
    classes: Vec<String>,
    index: HashTable<u32>,
    key_bytes: Vec<u8>,
    key_ends: Vec<u64>,
    count: Vec<u64>,
    first_seen: Vec<i64>,
    last_seen: Vec<i64>,
    last_seq: Vec<u64>,
    cells: Vec<StatCell>,
    /// Scale exponents of the few stats whose sums are scaled (0 elsewhere), by cell index.
    scaled: std::collections::HashMap<usize, i16>,
    labels: Vec<u64>,
}

/// A stat as a table stores it: the scale exponent, almost always 0, lives apart so a cell is 40 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct StatCell {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
}

/// Appends `n` copies of `value`, growing the capacity by an eighth rather than doubling: large tables stay
/// within about 12% of what they hold (big reallocations are remapped by the allocator, not copied).
fn grow<T: Clone>(v: &mut Vec<T>, n: usize, value: T) {
    if v.len() + n > v.capacity() {
        v.reserve_exact(n.max(v.len() / 8).max(16));
    }
    v.resize(v.len() + n, value);
}

fn key_at<'a>(bytes: &'a [u8], ends: &[u64], slot: u32) -> &'a [u8] {
    let s = slot as usize;
    let start = if s == 0 { 0 } else { ends[s - 1] as usize };
    &bytes[start..ends[s] as usize]
}

impl ViewTable {
    /// An empty table for `spec`: the identity of [`ViewTable::merge`].
    pub fn new(spec: &Spec) -> ViewTable {
        let picked: Vec<(usize, String)> = spec
            .features
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind != FeatureKind::Categorical)
            .map(|(i, f)| (i, f.name.clone()))
            .collect();
        ViewTable {
            feature_index: picked.iter().map(|(i, _)| *i).collect(),
            features: picked.into_iter().map(|(_, n)| n).collect(),
            regression: spec.dataset.task == Task::Regression,
            ..ViewTable::default()
        }
    }

    /// An empty table like `self` (same features and classes).
    pub fn empty_like(&self) -> ViewTable {
        ViewTable {
            features: self.features.clone(),
            feature_index: self.feature_index.clone(),
            regression: self.regression,
            classes: self.classes.clone(),
            ..ViewTable::default()
        }
    }

    /// Class labels with a count column, in column order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    fn width(&self) -> usize {
        self.features.len() + usize::from(self.regression)
    }

    fn stat(&self, i: usize) -> Stats {
        let c = self.cells[i];
        let exp = if self.scaled.is_empty() { 0 } else { self.scaled.get(&i).copied().unwrap_or(0) };
        Stats { count: c.count, sum: c.sum, sum_sq: c.sum_sq, min: c.min, max: c.max, exp }
    }

    fn set_stat(&mut self, i: usize, st: Stats) {
        self.cells[i] = StatCell { count: st.count, sum: st.sum, sum_sq: st.sum_sq, min: st.min, max: st.max };
        if st.exp != 0 {
            self.scaled.insert(i, st.exp);
        } else if !self.scaled.is_empty() {
            self.scaled.remove(&i);
        }
    }

    fn stats_of(&self, slot: usize) -> Vec<Stats> {
        let w = self.width();
        (slot * w..(slot + 1) * w).map(|i| self.stat(i)).collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    /// Whether no key has been seen.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    /// The key of a slot.
    pub fn key(&self, slot: u32) -> &str {
        // Keys enter only as `&str`, so the arena holds valid UTF-8 between slot bounds.
        std::str::from_utf8(key_at(&self.key_bytes, &self.key_ends, slot)).unwrap_or_default()
    }

    /// The slot of a key, if present.
    pub fn slot(&self, key: &str) -> Option<u32> {
        let (bytes, ends) = (&self.key_bytes, &self.key_ends);
        self.index.find(key_hash(key.as_bytes()), |&s| key_at(bytes, ends, s) == key.as_bytes()).copied()
    }

    fn slot_or_insert(&mut self, key: &str) -> u32 {
        if let Some(s) = self.slot(key) {
            return s;
        }
        let slot = self.count.len() as u32;
        if self.key_bytes.len() + key.len() > self.key_bytes.capacity() {
            self.key_bytes.reserve_exact(key.len().max(self.key_bytes.len() / 8).max(64));
        }
        self.key_bytes.extend_from_slice(key.as_bytes());
        grow(&mut self.key_ends, 1, self.key_bytes.len() as u64);
        grow(&mut self.count, 1, 0);
        grow(&mut self.first_seen, 1, i64::MAX);
        grow(&mut self.last_seen, 1, i64::MIN);
        grow(&mut self.last_seq, 1, 0);
        let w = self.width();
        grow(&mut self.cells, w, StatCell::default());
        grow(&mut self.labels, self.classes.len(), 0);
        let (bytes, ends) = (&self.key_bytes, &self.key_ends);
        self.index.insert_unique(key_hash(key.as_bytes()), slot, |&s| key_hash(key_at(bytes, ends, s)));
        slot
    }

    /// The column of a class label, adding it (and widening the label counts) when new.
    fn class_column(&mut self, label: &str) -> usize {
        if let Some(i) = self.classes.iter().position(|c| c == label) {
            return i;
        }
        let old = self.classes.len();
        let mut widened = Vec::with_capacity(self.len() * (old + 1));
        for row in 0..self.len() {
            widened.extend_from_slice(&self.labels[row * old..(row + 1) * old]);
            widened.push(0);
        }
        self.labels = widened;
        self.classes.push(label.to_string());
        old
    }

    /// Declares class labels up front (in model order), so that label columns follow the model's classes.
    pub fn with_classes(mut self, classes: &[String]) -> ViewTable {
        for c in classes {
            self.class_column(c);
        }
        self
    }

    /// Folds one record into the table; returns the key's slot.
    pub fn observe<R: RowSource + ?Sized>(
        &mut self,
        key: &str,
        time: i64,
        seq: u64,
        row: &R,
        target: Option<&Target>,
    ) -> u32 {
        self.observe_ref(key, time, seq, row, target.map(Target::borrow))
    }

    /// [`ViewTable::observe`] with a borrowed label.
    pub fn observe_ref<R: RowSource + ?Sized>(
        &mut self,
        key: &str,
        time: i64,
        seq: u64,
        row: &R,
        target: Option<TargetRef<'_>>,
    ) -> u32 {
        let class = match target {
            Some(TargetRef::Class(c)) => Some(self.class_column(c)),
            _ => None,
        };
        let slot = self.slot_or_insert(key);
        let s = slot as usize;
        self.count[s] += 1;
        self.first_seen[s] = self.first_seen[s].min(time);
        self.last_seen[s] = self.last_seen[s].max(time);
        self.last_seq[s] = self.last_seq[s].max(seq);
        let w = self.width();
        for k in 0..self.feature_index.len() {
            let x = match row.cell(self.feature_index[k]) {
                CellRef::Num(Some(x)) => x,
                CellRef::Bool(Some(b)) => f64::from(u8::from(b)),
                _ => continue,
            };
            let mut st = self.stat(s * w + k);
            st.observe(x);
            self.set_stat(s * w + k, st);
        }
        if let (true, Some(TargetRef::Value(y))) = (self.regression, target) {
            let mut st = self.stat(s * w + w - 1);
            st.observe(y);
            self.set_stat(s * w + w - 1, st);
        }
        if let Some(c) = class {
            let n = self.classes.len();
            self.labels[s * n + c] += 1;
        }
        slot
    }

    /// Adds the totals of `key` over many events, aggregated elsewhere: their count, time range and highest
    /// sequence number. Returns the key's slot, for [`ViewTable::merge_stats`] and [`ViewTable::add_label`].
    pub fn add_totals(&mut self, key: &str, count: u64, first_seen: i64, last_seen: i64, last_seq: u64) -> u32 {
        let slot = self.slot_or_insert(key);
        let s = slot as usize;
        self.count[s] += count;
        self.first_seen[s] = self.first_seen[s].min(first_seen);
        self.last_seen[s] = self.last_seen[s].max(last_seen);
        self.last_seq[s] = self.last_seq[s].max(last_seq);
        slot
    }

    /// Merges `st` into stat `k` of a slot: the features in [`ViewTable::features`] order, then the regression
    /// target.
    pub fn merge_stats(&mut self, slot: u32, k: usize, st: &Stats) {
        let i = slot as usize * self.width() + k;
        let mut merged = self.stat(i);
        merged.merge(st);
        self.set_stat(i, merged);
    }

    /// Adds `n` events of class `label` to a slot; a new label gets the next class column.
    pub fn add_label(&mut self, slot: u32, label: &str, n: u64) {
        let c = self.class_column(label);
        let width = self.classes.len();
        self.labels[slot as usize * width + c] += n;
    }

    /// The view of a slot.
    pub fn view_at(&self, slot: u32) -> KeyView {
        let s = slot as usize;
        let w = self.width();
        let stats = self.stats_of(s);
        let n = self.classes.len();
        let present = self.count[s] > 0;
        KeyView {
            count: self.count[s],
            features: stats[..self.features.len()].to_vec(),
            labels: self
                .classes
                .iter()
                .zip(&self.labels[s * n..(s + 1) * n])
                .filter(|(_, c)| **c > 0)
                .map(|(l, c)| (l.clone(), *c))
                .collect(),
            target: if self.regression { stats[w - 1] } else { Stats::default() },
            first_seen: present.then_some(self.first_seen[s]),
            last_seen: present.then_some(self.last_seen[s]),
            last_seq: self.last_seq[s],
        }
    }

    /// The view of a key.
    pub fn get(&self, key: &str) -> Option<KeyView> {
        self.slot(key).map(|s| self.view_at(s))
    }

    /// Every key and its view, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, KeyView)> + '_ {
        (0..self.len() as u32).map(|s| (self.key(s), self.view_at(s)))
    }

    /// Every key, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len() as u32).map(|s| self.key(s))
    }

    /// Folds one key's view into the table.
    pub fn merge_key(&mut self, key: &str, v: &KeyView) {
        let first = v.first_seen.unwrap_or(i64::MAX);
        let slot = self.add_totals(key, v.count, first, v.last_seen.unwrap_or(i64::MIN), v.last_seq);
        for (k, b) in v.features.iter().enumerate().take(self.features.len()) {
            self.merge_stats(slot, k, b);
        }
        if self.regression {
            self.merge_stats(slot, self.width() - 1, &v.target);
        }
        for (label, count) in &v.labels {
            self.add_label(slot, label, *count);
        }
    }

    /// The monoid operation: folds `other` into `self`.
    pub fn merge(&mut self, other: &ViewTable) {
        if self.features.is_empty() && self.is_empty() {
            self.features.clone_from(&other.features);
            self.feature_index.clone_from(&other.feature_index);
            self.regression = other.regression;
        }
        for (k, v) in other.iter() {
            self.merge_key(k, &v);
        }
    }

    /// A slot in the compact row form of realtime files.
    pub fn packed(&self, slot: u32) -> PackedRow {
        let s = slot as usize;
        let n = self.classes.len();
        PackedRow {
            key: self.key(slot).to_string(),
            count: self.count[s],
            first_seen: self.first_seen[s],
            last_seen: self.last_seen[s],
            last_seq: self.last_seq[s],
            stats: self.stats_of(s),
            labels: self.labels[s * n..(s + 1) * n].to_vec(),
        }
    }

    /// Replaces a key's view with a packed row whose label counts follow `classes`. Returns the slot.
    pub fn put_packed(&mut self, row: &PackedRow, classes: &[String]) -> u32 {
        let columns: Vec<usize> = classes.iter().map(|c| self.class_column(c)).collect();
        let slot = self.slot_or_insert(&row.key);
        let s = slot as usize;
        self.count[s] = row.count;
        self.first_seen[s] = row.first_seen;
        self.last_seen[s] = row.last_seen;
        self.last_seq[s] = row.last_seq;
        let w = self.width();
        for k in 0..w {
            self.set_stat(s * w + k, row.stats.get(k).copied().unwrap_or_default());
        }
        let n = self.classes.len();
        self.labels[s * n..(s + 1) * n].fill(0);
        for (c, count) in columns.into_iter().zip(&row.labels) {
            self.labels[s * n + c] = *count;
        }
        slot
    }

    /// Approximate heap bytes held, for reports.
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.key_bytes.capacity()
            + self.key_ends.capacity() * 8
            + (self.count.capacity()
                + self.first_seen.capacity()
                + self.last_seen.capacity()
                + self.last_seq.capacity())
                * 8
            + self.cells.capacity() * std::mem::size_of::<StatCell>()
            + self.scaled.capacity() * 16
            + self.labels.capacity() * 8
    }

    /// The view of one key as a JSON document for the API.
    pub fn key_json(&self, key: &str) -> Option<serde_json::Value> {
        Some(view_json(&self.features, key, &self.get(key)?))
    }

    /// Writes the table as one Parquet file, one row per key (sorted), atomically (temporary name, then rename).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_unstable_by(|a, b| self.key(*a).cmp(self.key(*b)));
        let mut fields = vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("count", DataType::UInt64, false),
            Field::new("first_seen", DataType::Int64, true),
            Field::new("last_seen", DataType::Int64, true),
            Field::new("last_seq", DataType::UInt64, false),
        ];
        let u = |f: &dyn Fn(usize) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(order.iter().map(|&s| f(s as usize))))
        };
        let i = |f: &dyn Fn(usize) -> Option<i64>| -> ArrayRef {
            Arc::new(Int64Array::from_iter(order.iter().map(|&s| f(s as usize))))
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(order.iter().map(|&s| self.key(s)))),
            u(&|s| self.count[s]),
            i(&|s| (self.count[s] > 0).then_some(self.first_seen[s])),
            i(&|s| (self.count[s] > 0).then_some(self.last_seen[s])),
            u(&|s| self.last_seq[s]),
        ];
        let w = self.width();
        let mut stat_columns = |prefix: String, at: usize| {
            let st: Vec<Stats> = order.iter().map(|&s| self.stat(s as usize * w + at)).collect();
            fields.push(Field::new(format!("{prefix}.count"), DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::from_iter_values(st.iter().map(|s| s.count))));
            fields.push(Field::new(format!("{prefix}.sum"), DataType::Float64, false));
            columns.push(Arc::new(Float64Array::from_iter_values(st.iter().map(|s| s.sum))));
            fields.push(Field::new(format!("{prefix}.sum_sq"), DataType::Float64, false));
            columns.push(Arc::new(Float64Array::from_iter_values(st.iter().map(|s| s.sum_sq))));
            fields.push(Field::new(format!("{prefix}.min"), DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from_iter(st.iter().map(Stats::min))));
            fields.push(Field::new(format!("{prefix}.max"), DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from_iter(st.iter().map(Stats::max))));
            // Sums are stored scaled by 2^-scale (sum of squares by 2^-2·scale); 0 for ordinary values.
            fields.push(Field::new(format!("{prefix}.scale"), DataType::Int16, false));
            columns.push(Arc::new(Int16Array::from_iter_values(st.iter().map(|s| s.exp))));
        };
        for (at, name) in self.features.iter().enumerate() {
            stat_columns(format!("feature.{name}"), at);
        }
        if self.regression {
            stat_columns("target".to_string(), w - 1);
        }
        let n = self.classes.len();
        for (c, label) in self.classes.iter().enumerate() {
            fields.push(Field::new(format!("label.{label}"), DataType::UInt64, false));
            columns.push(u(&|s| self.labels[s * n + c]));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns).map_err(|e| pq_err(path, e))?;
        crate::master::write_batch_atomically(path, &batch)
    }

    /// Reads a table written by [`ViewTable::write_parquet`] for `spec`.
    pub fn read_parquet(spec: &Spec, path: &Path) -> Result<ViewTable> {
        let mut table = ViewTable::new(spec);
        for batch in crate::master::read_batches(path)? {
            let col = |name: &str| -> Result<&ArrayRef> {
                batch.column_by_name(name).ok_or_else(|| pq_err(path, format!("view has no column `{name}`")))
            };
            let typed = |name: &str| -> Result<ArrayRef> { col(name).cloned() };
            let u64s = |name: &str| -> Result<UInt64Array> {
                typed(name)?
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not UInt64")))
            };
            let i64s = |name: &str| -> Result<Int64Array> {
                typed(name)?
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not Int64")))
            };
            let f64s = |name: &str| -> Result<Float64Array> {
                typed(name)?
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not Float64")))
            };
            let stats = |prefix: &str| -> Result<Vec<Stats>> {
                let (c, s, q, lo, hi) = (
                    u64s(&format!("{prefix}.count"))?,
                    f64s(&format!("{prefix}.sum"))?,
                    f64s(&format!("{prefix}.sum_sq"))?,
                    f64s(&format!("{prefix}.min"))?,
                    f64s(&format!("{prefix}.max"))?,
                );
                // Views written before sums were scaled have no scale column: scale 0.
                let scale = batch
                    .column_by_name(&format!("{prefix}.scale"))
                    .map(|a| a.as_any().downcast_ref::<Int16Array>().map(|a| a.values().to_vec()).unwrap_or_default());
                Ok((0..c.len())
                    .map(|r| Stats {
                        count: c.value(r),
                        sum: s.value(r),
                        sum_sq: q.value(r),
                        min: if lo.is_valid(r) { lo.value(r) } else { 0.0 },
                        max: if hi.is_valid(r) { hi.value(r) } else { 0.0 },
                        exp: scale.as_ref().and_then(|v| v.get(r).copied()).unwrap_or(0),
                    })
                    .collect())
            };
            let keys = col("key")?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| pq_err(path, "`key` is not Utf8"))?;
            let (count, first, last, seq) =
                (u64s("count")?, i64s("first_seen")?, i64s("last_seen")?, u64s("last_seq")?);
            let mut per_stat: Vec<Vec<Stats>> =
                table.features.iter().map(|n| stats(&format!("feature.{n}"))).collect::<Result<_>>()?;
            if table.regression {
                per_stat.push(stats("target")?);
            }
            let label_cols: Vec<(String, UInt64Array)> = batch
                .schema()
                .fields()
                .iter()
                .filter_map(|f| f.name().strip_prefix("label.").map(str::to_string))
                .map(|l| Ok((l.clone(), u64s(&format!("label.{l}"))?)))
                .collect::<Result<_>>()?;
            let classes: Vec<String> = label_cols.iter().map(|(l, _)| l.clone()).collect();
            for r in 0..batch.num_rows() {
                let row = PackedRow {
                    key: keys.value(r).to_string(),
                    count: count.value(r),
                    first_seen: if first.is_valid(r) { first.value(r) } else { i64::MAX },
                    last_seen: if last.is_valid(r) { last.value(r) } else { i64::MIN },
                    last_seq: seq.value(r),
                    stats: per_stat.iter().map(|s| s[r]).collect(),
                    labels: label_cols.iter().map(|(_, c)| c.value(r)).collect(),
                };
                table.put_packed(&row, &classes);
            }
        }
        Ok(table)
    }
}

impl PartialEq for ViewTable {
    /// Tables are equal when they hold the same features and the same view for every key, whatever the slot order.
    fn eq(&self, other: &Self) -> bool {
        self.features == other.features
            && self.len() == other.len()
            && self.iter().all(|(k, v)| other.get(k).is_some_and(|o| o == v))
    }
}

fn stats_json(s: &Stats) -> serde_json::Value {
    let finite = |v: f64| v.is_finite().then_some(v);
    serde_json::json!({"count": s.count, "sum": finite(s.sum()), "sum_sq": finite(s.sum_sq()), "min": s.min(),
        "max": s.max(), "mean": s.mean(), "std": s.std()})
}

/// A key's view as the API's JSON document.
pub fn view_json(features: &[String], key: &str, v: &KeyView) -> serde_json::Value {
    let feats: serde_json::Map<String, serde_json::Value> =
        features.iter().zip(&v.features).map(|(name, s)| (name.clone(), stats_json(s))).collect();
    let mut doc = serde_json::json!({
        "key": key,
        "count": v.count,
        "features": feats,
        "first_seen": v.first_seen,
        "last_seen": v.last_seen,
        "last_seq": v.last_seq,
    });
    if !v.labels.is_empty() {
        doc["labels"] = serde_json::json!(v.labels);
    }
    if v.target.count > 0 {
        doc["target"] = stats_json(&v.target);
    }
    doc
}

/// The batch view file of a model version: `views/batch-<version>.parquet`.
pub fn batch_view_path(spec: &Spec, version: &str) -> std::path::PathBuf {
    spec.paths.views.join(format!("batch-{version}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::schema::{Cell, Event};
    use proptest::prelude::*;

    fn spec() -> Spec {
        Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            (
                0u8..4,
                -1000i64..1000,
                prop::option::of(-100.0f64..100.0),
                prop::option::of(any::<bool>()),
                prop::option::of(0u8..3),
            ),
            0..40,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (k, t, x, b, y))| Event {
                    id: format!("e{i}"),
                    key: format!("k{k}"),
                    time: t,
                    features: vec![Cell::Num(x), Cell::Cat(Some("c".into())), Cell::Bool(b)],
                    target: y.map(|y| Target::Class(y.to_string())),
                })
                .collect()
        })
    }

    fn table(s: &Spec, events: &[Event], first_seq: u64) -> ViewTable {
        let mut t = ViewTable::new(s);
        for (i, e) in events.iter().enumerate() {
            t.observe(&e.key, e.time, first_seq + i as u64, e, e.target.as_ref());
        }
        t
    }

    /// Equal up to float rounding in sums; counts, min, max and labels exactly.
    fn assert_close(a: &ViewTable, b: &ViewTable) {
        let mut ka: Vec<&str> = a.keys().collect();
        let mut kb: Vec<&str> = b.keys().collect();
        ka.sort_unstable();
        kb.sort_unstable();
        assert_eq!(ka, kb);
        for (k, va) in a.iter() {
            let vb = b.get(k).unwrap();
            assert_eq!(
                (va.count, &va.labels, va.first_seen, va.last_seen, va.last_seq),
                (vb.count, &vb.labels, vb.first_seen, vb.last_seen, vb.last_seq)
            );
            for (x, y) in va.features.iter().zip(&vb.features) {
                assert_eq!((x.count, x.min(), x.max()), (y.count, y.min(), y.max()));
                assert!((x.sum() - y.sum()).abs() <= 1e-9 * (1.0 + x.sum().abs()));
                assert!((x.sum_sq() - y.sum_sq()).abs() <= 1e-9 * (1.0 + x.sum_sq().abs()));
            }
        }
    }

    proptest! {
        #[test]
        fn merge_is_associative_with_identity(a in events(), b in events(), c in events()) {
            let s = spec();
            let (ta, tb, tc) = (table(&s, &a, 0), table(&s, &b, 100), table(&s, &c, 200));
            let mut left = ta.clone();
            left.merge(&tb);
            left.merge(&tc);
            let mut bc = tb.clone();
            bc.merge(&tc);
            let mut right = ta.clone();
            right.merge(&bc);
            assert_close(&left, &right);
            let mut with_identity = ta.clone();
            with_identity.merge(&ViewTable::new(&s));
            prop_assert_eq!(&with_identity, &ta);
        }

        #[test]
        fn split_and_merge_equals_one_pass(all in events(), cut in 0usize..40) {
            let s = spec();
            let cut = cut.min(all.len());
            let mut merged = table(&s, &all[..cut], 0);
            merged.merge(&table(&s, &all[cut..], cut as u64));
            assert_close(&merged, &table(&s, &all, 0));
        }

        #[test]
        fn packed_rows_rebuild_the_same_table(all in events()) {
            let s = spec();
            let t = table(&s, &all, 0);
            let mut back = ViewTable::new(&s);
            for slot in 0..t.len() as u32 {
                back.put_packed(&t.packed(slot), t.classes());
            }
            prop_assert_eq!(&back, &t);
        }
    }

    #[test]
    fn parquet_round_trip() {
        let s = spec();
        let evs = vec![
            Event {
                id: "1".into(),
                key: "a".into(),
                time: 5,
                features: vec![Cell::Num(Some(2.0)), Cell::Cat(None), Cell::Bool(Some(true))],
                target: Some(Target::Class("x".into())),
            },
            Event {
                id: "2".into(),
                key: "b".into(),
                time: 7,
                features: vec![Cell::Num(None), Cell::Cat(None), Cell::Bool(None)],
                target: None,
            },
            Event {
                id: "3".into(),
                key: "a".into(),
                time: 1,
                features: vec![Cell::Num(Some(-1.0)), Cell::Cat(None), Cell::Bool(Some(false))],
                target: Some(Target::Class("y".into())),
            },
        ];
        let t = table(&s, &evs, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views/v.parquet");
        t.write_parquet(&path).unwrap();
        assert_eq!(ViewTable::read_parquet(&s, &path).unwrap(), t);
        let a = t.key_json("a").unwrap();
        assert_eq!(a["count"], 2);
        assert_eq!(a["features"]["amount"]["mean"], 0.5);
        assert_eq!(a["labels"]["y"], 1);
        assert!(t.key_json("zzz").is_none());
    }

    #[test]
    fn huge_finite_values_cannot_overflow_the_sums() {
        // Regression: 1e200 squared overflowed to infinity and the next start could not read the state.
        let mut s = Stats::default();
        for _ in 0..1000 {
            s.observe(1e200);
            s.observe(-3e307);
            s.observe(1.5);
        }
        assert!(s.is_finite());
        assert_eq!((s.min(), s.max()), (Some(-3e307), Some(1e200)));
        let mean = s.mean().unwrap();
        assert!(mean.is_finite() && (mean - (1e200 - 3e307 + 1.5) / 3.0).abs() <= 1e-9 * mean.abs(), "{mean}");
        // The sum of squares itself is beyond f64: reported as infinite, never stored so.
        assert!(s.sum_sq().is_infinite());
        let mut t = Stats::default();
        t.observe(2.0);
        t.merge(&s);
        assert!(t.is_finite());
        assert_eq!(t.count, 3001);
        let doc = stats_json(&t);
        assert!(doc["sum_sq"].is_null() && doc["mean"].is_number(), "{doc}");
    }

    #[test]
    fn ordinary_sums_are_the_plain_sums() {
        let mut s = Stats::default();
        let mut plain = (0.0f64, 0.0f64);
        for i in 0..1000 {
            let x = (i as f64 * 0.37).sin() * 1e6;
            s.observe(x);
            plain.0 += x;
            plain.1 += x * x;
        }
        assert_eq!((s.sum().to_bits(), s.sum_sq().to_bits()), (plain.0.to_bits(), plain.1.to_bits()));
    }
}
