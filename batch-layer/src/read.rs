//! Reading Parquet with polars into core [`Columns`], checking every column against the spec first so that an
//! error names the file and the column.

use std::path::{Path, PathBuf};

use lambda_core::master::list_files;
use lambda_core::schema::{Codes, Column, ColumnBuilder, Columns, Dictionary, Targets};
use lambda_core::spec::{FeatureKind, Spec, Task, SEQ_COLUMN};
use polars::prelude::*;

use crate::{Error, Result};

/// The master dataset as read by one batch run.
#[derive(Debug)]
pub struct MasterData {
    /// All rows, in file order.
    pub columns: Columns,
    /// Highest ingestion sequence number read: the watermark of this run.
    pub watermark: u64,
    /// Files read.
    pub files: usize,
    /// Rows dropped because their event id appeared earlier in ingestion order.
    pub duplicates: u64,
}

/// What a read needs: everything (master dataset) or only the features (forecast input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Sequence, id, key, time, features and target.
    All,
    /// Features only.
    Features,
}

fn input(path: &Path, message: impl Into<String>) -> Error {
    Error::Input { path: path.to_path_buf(), message: message.into() }
}

fn args() -> ScanArgsParquet {
    ScanArgsParquet { hive_options: HiveOptions::new_disabled(), glob: false, ..Default::default() }
}

fn scan(paths: &[PathBuf]) -> PolarsResult<LazyFrame> {
    let refs: Vec<PlRefPath> = paths.iter().cloned().map(PlRefPath::try_from_pathbuf).collect::<PolarsResult<_>>()?;
    LazyFrame::scan_parquet_files(refs.into(), args())
}

/// The cast expression that turns a column of type `dt` into what the spec wants, or why it cannot.
fn conform(name: &str, dt: &DataType, want: Want) -> std::result::Result<Expr, String> {
    let c = col(name);
    let e = match want {
        Want::Seq if dt.is_integer() => c.strict_cast(DataType::UInt64),
        Want::Text if dt.is_string() => c,
        Want::Text if dt.is_integer() => c.cast(DataType::String),
        // pandas' `category` columns reach Parquet as dictionaries that polars reads as categoricals.
        Want::Text | Want::Label if dt.is_categorical() || dt.is_enum() => c.cast(DataType::String),
        Want::Time if dt.is_integer() => c.strict_cast(DataType::Int64),
        Want::Time => match dt {
            DataType::Datetime(_, tz) => {
                c.cast(DataType::Datetime(TimeUnit::Milliseconds, tz.clone())).cast(DataType::Int64)
            }
            DataType::Date => c.cast(DataType::Datetime(TimeUnit::Milliseconds, None)).cast(DataType::Int64),
            _ => {
                return Err(format!("has type {dt}, expected integer milliseconds since the Unix epoch or a timestamp"))
            }
        },
        Want::Number if dt.is_primitive_numeric() => c.cast(DataType::Float64),
        Want::Label if dt.is_string() => c,
        Want::Label if dt.is_integer() || dt.is_bool() => c.cast(DataType::String),
        Want::Bool if dt.is_bool() => c,
        Want::Seq => return Err(format!("has type {dt}, expected an unsigned integer ingestion sequence")),
        Want::Text => return Err(format!("has type {dt}, expected a string or an integer")),
        Want::Number => return Err(format!("has type {dt}, expected a number")),
        Want::Label => return Err(format!("has type {dt}, expected a class label (string, integer or boolean)")),
        Want::Bool => return Err(format!("has type {dt}, expected a boolean")),
    };
    Ok(e.alias(name))
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Seq,
    Text,
    Time,
    Number,
    Label,
    Bool,
}

fn wanted(spec: &Spec, need: Need) -> Vec<(String, Want, bool)> {
    let d = &spec.dataset;
    let mut out = Vec::new();
    if need == Need::All {
        out.push((SEQ_COLUMN.to_string(), Want::Seq, true));
        out.push((d.id_column.clone(), Want::Text, true));
        out.push((d.key_column.clone(), Want::Text, true));
        out.push((d.time_column.clone(), Want::Time, true));
    }
    for f in &spec.features {
        let w = match f.kind {
            FeatureKind::Numeric => Want::Number,
            FeatureKind::Categorical => Want::Text,
            FeatureKind::Boolean => Want::Bool,
        };
        out.push((f.name.clone(), w, true));
    }
    if need == Need::All {
        let w = if d.task == Task::Regression { Want::Number } else { Want::Label };
        out.push((d.target.clone(), w, true));
    }
    out
}

/// Checks each file's columns and builds the select expressions from the first file.
fn plan(spec: &Spec, files: &[PathBuf], need: Need) -> Result<Vec<Expr>> {
    let want = wanted(spec, need);
    let mut exprs = Vec::with_capacity(want.len());
    let mut first: Option<Vec<DataType>> = None;
    for path in files {
        let meta = std::fs::metadata(path).map_err(|e| input(path, e.to_string()))?;
        if meta.len() == 0 {
            return Err(input(path, "is an empty file, not Parquet"));
        }
        let mut lf = scan(std::slice::from_ref(path)).map_err(|e| input(path, e.to_string()))?;
        let schema = lf.collect_schema().map_err(|e| input(path, format!("is not readable Parquet: {e}")))?;
        let mut types = Vec::with_capacity(want.len());
        for (name, w, _) in &want {
            let Some(dt) = schema.get(name) else {
                return Err(input(path, format!("has no column `{name}` (declared in the spec)")));
            };
            let e = conform(name, dt, *w).map_err(|m| input(path, format!("column `{name}` {m}")))?;
            if first.is_none() {
                exprs.push(e);
            }
            types.push(dt.clone());
        }
        match &first {
            None => first = Some(types),
            Some(f) => {
                for ((name, _, _), (a, b)) in want.iter().zip(f.iter().zip(&types)) {
                    if a != b {
                        return Err(input(path, format!("column `{name}` has type {b}, other files have {a}")));
                    }
                }
            }
        }
    }
    Ok(exprs)
}

/// Reads the given Parquet files into a DataFrame of conformed columns.
pub fn read_frame(spec: &Spec, files: &[PathBuf], need: Need) -> Result<DataFrame> {
    let exprs = plan(spec, files, need)?;
    let place = files.first().cloned().unwrap_or_default();
    scan(files)
        .and_then(|lf| lf.select(exprs).collect())
        .map_err(|e| input(if files.len() == 1 { &place } else { &spec.paths.master }, e.to_string()))
}

fn nulls(path: &Path, df: &DataFrame, name: &str) -> Result<()> {
    let n = df.column(name).map_err(|e| input(path, e.to_string()))?.null_count();
    if n > 0 {
        return Err(input(path, format!("column `{name}` has {n} null values; it must be set on every row")));
    }
    Ok(())
}

/// Appends conformed DataFrames (one file at a time) into [`Columns`]: numbers into flat buffers, strings into
/// dictionary codes, so that no row costs a `String`.
struct Builder {
    need: Need,
    seqs: Vec<u64>,
    keys: Dictionary,
    times: Vec<i64>,
    features: Vec<ColumnBuilder>,
    classes: Dictionary,
    values: Vec<f64>,
    non_finite: usize,
}

impl Builder {
    fn new(spec: &Spec, need: Need) -> Builder {
        Builder {
            need,
            seqs: Vec::new(),
            keys: Dictionary::default(),
            times: Vec::new(),
            features: spec.features.iter().map(|f| ColumnBuilder::new(f.kind)).collect(),
            classes: Dictionary::default(),
            values: Vec::new(),
            non_finite: 0,
        }
    }

    /// Appends the rows of `df` (read from `path`) for which `keep` says so.
    fn append(&mut self, spec: &Spec, df: &DataFrame, path: &Path, keep: &dyn Fn(usize) -> bool) -> Result<()> {
        let pe = |e: PolarsError| input(path, e.to_string());
        let n = df.height();
        let d = &spec.dataset;
        if self.need == Need::All {
            for name in [SEQ_COLUMN, &d.id_column, &d.key_column, &d.time_column] {
                nulls(path, df, name)?;
            }
            let seqs = df.column(SEQ_COLUMN).and_then(|c| c.u64().cloned()).map_err(pe)?;
            self.seqs.extend(seqs.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(0)));
            let keys = df.column(&d.key_column).and_then(|c| c.str().cloned()).map_err(pe)?;
            for (r, k) in keys.iter().enumerate() {
                if keep(r) {
                    self.keys.push(k);
                }
            }
            let times = df.column(&d.time_column).and_then(|c| c.i64().cloned()).map_err(pe)?;
            self.times.extend(times.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(0)));
            match d.task {
                Task::Regression => {
                    let values = df.column(&d.target).and_then(|c| c.f64().cloned()).map_err(pe)?;
                    let infinite = values.iter().flatten().filter(|x| x.is_infinite()).count();
                    if infinite > 0 {
                        return Err(input(
                            path,
                            format!(
                                "column `{}` has {infinite} infinite values; a regression target must be a finite \
                                 number (NaN or null marks a row without a label)",
                                d.target
                            ),
                        ));
                    }
                    self.values.extend(
                        values.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(f64::NAN)),
                    );
                }
                _ => {
                    let labels = df.column(&d.target).and_then(|c| c.str().cloned()).map_err(pe)?;
                    for (r, v) in labels.iter().enumerate() {
                        if keep(r) {
                            self.classes.push(v.filter(|s| !s.is_empty()));
                        }
                    }
                }
            }
        } else {
            self.times.extend(std::iter::repeat_n(0, n));
        }
        for (f, b) in spec.features.iter().zip(&mut self.features) {
            let c = df.column(&f.name).map_err(pe)?;
            match b {
                ColumnBuilder::Num(v) => {
                    for (r, x) in c.f64().map_err(pe)?.iter().enumerate() {
                        if keep(r) {
                            v.push(match x {
                                Some(x) if x.is_finite() => x,
                                Some(_) => {
                                    self.non_finite += 1;
                                    f64::NAN
                                }
                                None => f64::NAN,
                            });
                        }
                    }
                }
                ColumnBuilder::Cat(v) => {
                    for (r, x) in c.str().map_err(pe)?.iter().enumerate() {
                        if keep(r) {
                            v.push(x);
                        }
                    }
                }
                ColumnBuilder::Bool(v) => {
                    v.extend(c.bool().map_err(pe)?.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, x)| x));
                }
            }
        }
        Ok(())
    }

    fn finish(self, spec: &Spec, path: &Path) -> Columns {
        if self.non_finite > 0 {
            tracing::warn!(path = %path.display(), values = self.non_finite, "non-finite feature values read as missing");
        }
        let n = self.times.len();
        let (seqs, keys, targets) = match (self.need, spec.dataset.task) {
            (Need::All, Task::Regression) => (self.seqs, self.keys.finish(), Targets::Values(self.values)),
            (Need::All, _) => (self.seqs, self.keys.finish(), Targets::Classes(self.classes.finish())),
            (Need::Features, _) => (
                vec![0; n],
                Codes { codes: vec![Codes::NONE; n], values: Vec::new() },
                Targets::Values(vec![f64::NAN; n]),
            ),
        };
        let features = self.features.into_iter().map(ColumnBuilder::finish).collect();
        Columns { seqs, keys, times: self.times, features, targets }
    }
}

/// Converts a conformed DataFrame into [`Columns`]. Non-finite feature values become missing values; non-finite
/// regression targets make the row unlabelled.
pub fn to_columns(spec: &Spec, df: &DataFrame, need: Need, path: &Path) -> Result<Columns> {
    let mut b = Builder::new(spec, need);
    b.append(spec, df, path, &|_| true)?;
    Ok(b.finish(spec, path))
}

/// Marks, in the order of `files`, every row whose event id appeared at a lower ingestion sequence number: a
/// replay that reached the master dataset twice, from two writers or across the speed layer's de-duplication
/// window, is counted once. Reads only the id and sequence columns. Also gives the duplicates' count, the
/// highest sequence number and each file's rows.
fn duplicate_rows(spec: &Spec, files: &[PathBuf]) -> Result<(Vec<bool>, u64, u64, Vec<usize>)> {
    let id = spec.dataset.id_column.as_str();
    let mut frames: Vec<DataFrame> = Vec::with_capacity(files.len());
    for path in files {
        let df = scan(std::slice::from_ref(path))
            .and_then(|lf| {
                lf.select([col(SEQ_COLUMN).strict_cast(DataType::UInt64), col(id).cast(DataType::String)]).collect()
            })
            .map_err(|e| input(path, e.to_string()))?;
        frames.push(df);
    }
    let columns: Vec<(UInt64Chunked, StringChunked)> = frames
        .iter()
        .zip(files)
        .map(|(df, path)| {
            let pe = |e: PolarsError| input(path, e.to_string());
            let seq = df.column(SEQ_COLUMN).and_then(|c| c.u64().cloned()).map_err(pe)?;
            let ids = df.column(id).and_then(|c| c.str().cloned()).map_err(pe)?;
            Ok((seq, ids))
        })
        .collect::<Result<_>>()?;
    let ids: Vec<&str> = columns.iter().flat_map(|(_, i)| i.iter().map(|v| v.unwrap_or(""))).collect();
    let seqs: Vec<u64> = columns.iter().flat_map(|(s, _)| s.iter().map(|v| v.unwrap_or(0))).collect();
    // Each id maps to its row of lowest sequence number so far; the other rows of that id are duplicates.
    let mut first: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(ids.len());
    let mut dropped = vec![false; ids.len()];
    let hash = |s: &str| xxhash_rust::xxh3::xxh3_64(s.as_bytes());
    let mut count = 0u64;
    for r in 0..ids.len() {
        let h = hash(ids[r]);
        match first.find_mut(h, |&o| ids[o as usize] == ids[r]) {
            Some(o) => {
                count += 1;
                if seqs[r] < seqs[*o as usize] {
                    dropped[*o as usize] = true;
                    *o = r as u32;
                } else {
                    dropped[r] = true;
                }
            }
            None => {
                first.insert_unique(h, r as u32, |&o| hash(ids[o as usize]));
            }
        }
    }
    let heights = frames.iter().map(DataFrame::height).collect();
    Ok((dropped, count, seqs.iter().copied().max().unwrap_or(0), heights))
}

/// Rows read at once: a Parquet file of any size (Spark and pyarrow write large ones) is read this many rows at a
/// time, so that at most one slice's DataFrame is held beside the columns.
pub const READ_ROWS: usize = 1 << 20;

/// Reads the whole master dataset, [`READ_ROWS`] rows at a time, without the rows whose event id came earlier in
/// ingestion order.
pub fn read_master(spec: &Spec) -> Result<MasterData> {
    read_master_in(spec, READ_ROWS)
}

/// [`read_master`], `rows_per_read` rows at a time.
pub fn read_master_in(spec: &Spec, rows_per_read: usize) -> Result<MasterData> {
    let root = &spec.paths.master;
    let files = list_files(root)?;
    if files.is_empty() {
        return Err(input(root, "the master dataset has no Parquet files"));
    }
    let exprs = plan(spec, &files, Need::All)?;
    // The watermark counts dropped duplicates too: they were ingested.
    let (dropped, duplicates, watermark, heights) = duplicate_rows(spec, &files)?;
    if dropped.len() > u32::MAX as usize {
        return Err(input(root, format!("has {} rows; one batch run reads at most {}", dropped.len(), u32::MAX)));
    }
    let mut b = Builder::new(spec, Need::All);
    let mut offset = 0;
    let step = rows_per_read.clamp(1, u32::MAX as usize);
    for (f, &height) in files.iter().zip(&heights) {
        for first in (0..height).step_by(step) {
            let df = scan(std::slice::from_ref(f))
                .and_then(|lf| lf.slice(first as i64, step as u32).select(exprs.clone()).collect())
                .map_err(|e| input(f, e.to_string()))?;
            let at = offset + first;
            b.append(spec, &df, f, &|r| !dropped[at + r])?;
        }
        offset += height;
    }
    let columns = b.finish(spec, root);
    if columns.is_empty() {
        return Err(input(root, "the master dataset has no rows"));
    }
    check_features(spec, &columns, root)?;
    if duplicates > 0 {
        tracing::warn!(rows = duplicates, "dropped rows whose event id appeared earlier in ingestion order");
    }
    Ok(MasterData { columns, watermark, files: files.len(), duplicates })
}

/// How many distinct set values `column` has, counting no further than two.
fn distinct_up_to_two<T: PartialEq>(mut set: impl Iterator<Item = T>) -> usize {
    match set.next() {
        None => 0,
        Some(first) if set.any(|x| x != first) => 2,
        Some(_) => 1,
    }
}

/// Refuses a feature that no model can learn from: missing in every row, or the same value in every row. Either
/// is almost always a broken upstream column, and the spec should drop it rather than train around it.
fn check_features(spec: &Spec, columns: &Columns, root: &Path) -> Result<()> {
    for (f, column) in spec.features.iter().zip(&columns.features) {
        let distinct = match column {
            Column::Num(v) => distinct_up_to_two(v.iter().filter(|x| !x.is_nan())),
            Column::Cat(v) => distinct_up_to_two(v.codes.iter().filter(|&&c| c != Codes::NONE)),
            Column::Bool(v) => distinct_up_to_two(v.iter().flatten()),
        };
        if distinct == 0 {
            return Err(input(
                root,
                format!(
                    "column `{}` is missing (null or not finite) in all {} rows; drop it from the spec's features or \
                     fix the history",
                    f.name,
                    columns.len()
                ),
            ));
        }
        if distinct == 1 {
            return Err(input(
                root,
                format!(
                    "column `{}` has the same value in all {} rows where it is set, so no model can learn from it; \
                     drop it from the spec's features or fix the history",
                    f.name,
                    columns.len()
                ),
            ));
        }
    }
    Ok(())
}
