//! The batch view, aggregated by polars group-by expressions over the master data's columns.
//!
//! Rows are put in key order (a stable `arg_sort` of the key's dictionary codes, then polars' parallel `take` of
//! the columns), so every group-by runs on a sorted key and polars aggregates contiguous slices instead of
//! gathering each key's rows for every expression (10M rows, 15 columns: 7.1 s against 10.7 s hashed;
//! bench/results/2026-11-26-2-batch-automl.md). Each key's first row orders the slots and each class's first row
//! the class columns, as the
//! speed layer's row-by-row fold ([`ViewTable::observe`]) assigns them. Sums are polars' sums of `x × 2^-scale`
//! at the scale [`Stats::observe`] settles on for the key's largest magnitude: a column is summed plain, and once
//! more scaled where some key's values reach past 2^450, so that a history holding `1e200` gives finite stats as
//! the speed layer's fold does.

use lambda_core::schema::{Codes, Column as Values, Columns, Targets};
use lambda_core::spec::{Spec, Task};
use lambda_stores::views::{Stats, ViewTable};
use polars::prelude::*;

/// Value columns aggregated by one group-by: bounds the copies held beside the master data's columns
/// (10M rows × 4 columns ≈ 330 MB).
const COLUMNS_PER_QUERY: usize = 4;

/// A value column of the view: numbers (NaN missing), booleans, or none (a categorical feature).
enum Source<'a> {
    Num(&'a [f64]),
    Bool(&'a [Option<bool>]),
    Missing,
}

/// The rows in key order, with the sorted key column that every group-by of the view runs on.
struct Sorted {
    /// Original row of each sorted row.
    order: IdxCa,
    /// Key codes in sorted order, flagged sorted.
    keys: Column,
    /// Key codes in row order.
    codes: Vec<u32>,
}

impl Sorted {
    /// The sorted keys beside `columns` put in key order (by polars' take, a column per thread), and with `rows`
    /// each sorted row's original row as `r`.
    fn frame(&self, columns: Vec<Column>, rows: bool) -> PolarsResult<LazyFrame> {
        let mut frame = DataFrame::new(self.order.len(), columns)?.take(&self.order)?;
        frame.insert_column(0, self.keys.clone())?;
        if rows {
            frame.with_column(self.order.clone().with_name("r".into()).into_column())?;
        }
        Ok(frame.lazy())
    }
}

/// The batch view of `columns` for `spec`.
pub fn batch_view(spec: &Spec, columns: &Columns) -> PolarsResult<ViewTable> {
    let mut view = ViewTable::new(spec);
    let keys = &columns.keys;
    // A row without a key counts under the key "", as in the speed layer; so does a key that is "".
    let blank = keys.values.iter().position(String::is_empty).unwrap_or(keys.values.len()) as u32;
    let codes: Vec<u32> = keys.codes.iter().map(|&c| if c == Codes::NONE { blank } else { c }).collect();
    let order = UInt32Chunked::from_slice("k".into(), &codes).arg_sort(SortOptions {
        maintain_order: true,
        multithreaded: true,
        ..SortOptions::default()
    });
    let mut sorted_keys =
        UInt32Chunked::from_vec("k".into(), order.into_no_null_iter().map(|r| codes[r as usize]).collect());
    sorted_keys.set_sorted_flag(polars::series::IsSorted::Ascending);
    let sorted = Sorted { keys: sorted_keys.into_column(), order, codes };
    let key_of = |code: u32| keys.values.get(code as usize).map_or("", String::as_str);

    let totals = sorted
        .frame(vec![Column::new("t".into(), &columns.times), Column::new("s".into(), &columns.seqs)], true)?
        .group_by([col("k")])
        .agg([
            len().cast(DataType::UInt64).alias("n"),
            col("r").min().alias("r"),
            col("t").min().alias("first"),
            col("t").max().alias("last"),
            col("s").max().alias("seq"),
        ])
        .sort(["r"], SortMultipleOptions::default())
        .collect()?;
    let mut slot_of_code = vec![u32::MAX; keys.values.len() + 1];
    {
        let (k, count) = (totals.column("k")?.u32()?, totals.column("n")?.u64()?);
        let (first, last, seq) =
            (totals.column("first")?.i64()?, totals.column("last")?.i64()?, totals.column("seq")?.u64()?);
        for g in 0..totals.height() {
            let code = k.get(g).unwrap_or(blank);
            let slot = view.add_totals(
                key_of(code),
                count.get(g).unwrap_or(0),
                first.get(g).unwrap_or(i64::MAX),
                last.get(g).unwrap_or(i64::MIN),
                seq.get(g).unwrap_or(0),
            );
            slot_of_code[code as usize] = slot;
        }
    }

    // Stat columns in the view's order: numeric and boolean features, then a regression target.
    let mut sources: Vec<Source<'_>> = Vec::new();
    for &f in &view.feature_index {
        sources.push(match &columns.features[f] {
            Values::Num(v) => Source::Num(v),
            Values::Bool(v) => Source::Bool(v),
            Values::Cat(_) => Source::Missing,
        });
    }
    if let (Task::Regression, Targets::Values(v)) = (spec.dataset.task, &columns.targets) {
        sources.push(Source::Num(v));
    }
    for (chunk, first) in sources.chunks(COLUMNS_PER_QUERY).zip((0..).step_by(COLUMNS_PER_QUERY)) {
        for (i, per_code) in stat_columns(&sorted, chunk)?.into_iter().enumerate() {
            for (code, st) in per_code {
                view.merge_stats(slot_of_code[code as usize], first + i, &st);
            }
        }
    }

    if let Targets::Classes(classes) = &columns.targets {
        let c = classes.codes.iter().map(|&c| (c != Codes::NONE).then_some(c));
        let labels = sorted
            .frame(vec![UInt32Chunked::from_iter_options("c".into(), c).into_column()], true)?
            .filter(col("c").is_not_null())
            .group_by([col("k"), col("c")])
            .agg([len().cast(DataType::UInt64).alias("n"), col("r").min().alias("r")])
            .sort(["r"], SortMultipleOptions::default())
            .collect()?;
        let (k, c, count) = (labels.column("k")?.u32()?, labels.column("c")?.u32()?, labels.column("n")?.u64()?);
        // Pairs in order of their first rows: a class's first pair holds its first row, so class columns follow
        // the order of first appearance.
        for g in 0..labels.height() {
            let (Some(k), Some(c), Some(count)) = (k.get(g), c.get(g), count.get(g)) else { continue };
            view.add_label(slot_of_code[k as usize], &classes.values[c as usize], count);
        }
    }
    Ok(view)
}

/// Count, min, max and sums per key code of a few value columns, by one group-by (and a second, scaled, for a
/// column where some key's values need a scale).
fn stat_columns(sorted: &Sorted, sources: &[Source<'_>]) -> PolarsResult<Vec<Vec<(u32, Stats)>>> {
    let name = |i: usize| format!("v{i}");
    let mut values = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        // Missing values as nulls, which the aggregations skip.
        let column = match source {
            Source::Num(v) => {
                Float64Chunked::from_iter_options(name(i).into(), v.iter().map(|&x| (!x.is_nan()).then_some(x)))
            }
            Source::Bool(v) => {
                Float64Chunked::from_iter_options(name(i).into(), v.iter().map(|b| b.map(|b| f64::from(u8::from(b)))))
            }
            Source::Missing => Float64Chunked::full_null(name(i).into(), sorted.order.len()),
        };
        values.push(column.into_column());
    }
    let mut aggs = vec![];
    for i in 0..sources.len() {
        let v = name(i);
        aggs.extend([
            col(&v).count().cast(DataType::UInt64).alias(format!("{v}.n")),
            col(&v).min().alias(format!("{v}.min")),
            col(&v).max().alias(format!("{v}.max")),
            col(&v).sum().alias(format!("{v}.sum")),
            (col(&v) * col(&v)).sum().alias(format!("{v}.sq")),
        ]);
    }
    let out = sorted.frame(values.clone(), false)?.group_by([col("k")]).agg(aggs).collect()?;
    let k = out.column("k")?.u32()?;
    let mut result = Vec::with_capacity(sources.len());
    for (i, column) in values.iter().enumerate() {
        let v = name(i);
        let count = out.column(&format!("{v}.n"))?.u64()?;
        let (min, max) = (out.column(&format!("{v}.min"))?.f64()?, out.column(&format!("{v}.max"))?.f64()?);
        let (sum, sq) = (out.column(&format!("{v}.sum"))?.f64()?, out.column(&format!("{v}.sq"))?.f64()?);
        let mut stats = Vec::with_capacity(out.height());
        let mut scale_of_code: Vec<i16> = Vec::new();
        for g in 0..out.height() {
            let (Some(code), Some(count)) = (k.get(g), count.get(g)) else { continue };
            if count == 0 {
                continue;
            }
            let (lo, hi) = (min.get(g).unwrap_or(0.0), max.get(g).unwrap_or(0.0));
            let scale = Stats::scale_for(lo.abs().max(hi.abs()));
            if scale != 0 {
                if scale_of_code.len() <= code as usize {
                    scale_of_code.resize(code as usize + 1, 0);
                }
                scale_of_code[code as usize] = scale;
            }
            let (s, q) = (sum.get(g).unwrap_or(0.0), sq.get(g).unwrap_or(0.0));
            stats.push((code, Stats::from_parts(count, s, q, lo, hi, scale)));
        }
        if !scale_of_code.is_empty() {
            let scaled = scaled_sums(sorted, column, &scale_of_code)?;
            for (code, st) in &mut stats {
                let (count, _, _, lo, hi, scale) = st.parts();
                if let (true, Some(&(s, q))) = (scale != 0, scaled.get(code)) {
                    *st = Stats::from_parts(count, s, q, lo, hi, scale);
                }
            }
        }
        result.push(stats);
    }
    Ok(result)
}

/// Sum and sum of squares of `x × 2^-scale` per key code, each row (of `column`, in row order) at its key's scale
/// (0 past the table's end).
fn scaled_sums(
    sorted: &Sorted,
    column: &Column,
    scale_of_code: &[i16],
) -> PolarsResult<std::collections::HashMap<u32, (f64, f64)>> {
    let scaled: Float64Chunked = column
        .f64()?
        .iter()
        .zip(sorted.codes.iter().copied())
        .map(|(x, code)| x.map(|x| Stats::scaled(x, scale_of_code.get(code as usize).copied().unwrap_or(0))))
        .collect();
    let out = sorted
        .frame(vec![scaled.with_name("x".into()).into_column()], false)?
        .group_by([col("k")])
        .agg([col("x").sum().alias("sum"), (col("x") * col("x")).sum().alias("sq")])
        .collect()?;
    let (k, sum, sq) = (out.column("k")?.u32()?, out.column("sum")?.f64()?, out.column("sq")?.f64()?);
    Ok((0..out.height())
        .filter_map(|g| Some((k.get(g)?, (sum.get(g).unwrap_or(0.0), sq.get(g).unwrap_or(0.0)))))
        .collect())
}
