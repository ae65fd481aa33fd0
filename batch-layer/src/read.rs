//! Reading Parquet with polars into core [`Columns`], checking every column against the spec first so that an
//! error names the file and the column.

use std::path::{Path, PathBuf};

use lambda_core::master::list_files;
use lambda_core::schema::{Column, Columns, Target};
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

/// Converts a conformed DataFrame into [`Columns`]. Non-finite feature values become missing values; non-finite
/// regression targets make the row unlabelled.
pub fn to_columns(spec: &Spec, df: &DataFrame, need: Need, path: &Path) -> Result<Columns> {
    let pe = |e: PolarsError| input(path, e.to_string());
    let n = df.height();
    let mut out = Columns::default();
    let d = &spec.dataset;
    if need == Need::All {
        for name in [SEQ_COLUMN, &d.id_column, &d.key_column, &d.time_column] {
            nulls(path, df, name)?;
        }
        out.seqs = df
            .column(SEQ_COLUMN)
            .and_then(|c| c.u64().map(|a| a.iter().map(|v| v.unwrap_or(0)).collect()))
            .map_err(pe)?;
        let text = |name: &str| -> Result<Vec<String>> {
            df.column(name)
                .and_then(|c| c.str().map(|a| a.iter().map(|v| v.unwrap_or("").to_string()).collect()))
                .map_err(pe)
        };
        out.ids = text(&d.id_column)?;
        out.keys = text(&d.key_column)?;
        out.times = df
            .column(&d.time_column)
            .and_then(|c| c.i64().map(|a| a.iter().map(|v| v.unwrap_or(0)).collect()))
            .map_err(pe)?;
        out.targets = match d.task {
            Task::Regression => {
                let values = df.column(&d.target).and_then(|c| c.f64().cloned()).map_err(pe)?;
                let infinite = values.iter().flatten().filter(|x| x.is_infinite()).count();
                if infinite > 0 {
                    return Err(input(
                        path,
                        format!(
                            "column `{}` has {infinite} infinite values; a regression target must be a finite number \
                             (NaN or null marks a row without a label)",
                            d.target
                        ),
                    ));
                }
                values.iter().map(|v| v.filter(|x| x.is_finite()).map(Target::Value)).collect()
            }
            _ => df
                .column(&d.target)
                .and_then(|c| {
                    c.str().map(|a| {
                        a.iter().map(|v| v.filter(|s| !s.is_empty()).map(|s| Target::Class(s.to_string()))).collect()
                    })
                })
                .map_err(pe)?,
        };
    } else {
        out.seqs = vec![0; n];
        out.ids = vec![String::new(); n];
        out.keys = vec![String::new(); n];
        out.times = vec![0; n];
        out.targets = vec![None; n];
    }
    let mut non_finite = 0usize;
    for f in &spec.features {
        let c = df.column(&f.name).map_err(pe)?;
        let column = match f.kind {
            FeatureKind::Numeric => Column::Num(
                c.f64()
                    .map_err(pe)?
                    .iter()
                    .map(|v| match v {
                        Some(x) if !x.is_finite() => {
                            non_finite += 1;
                            None
                        }
                        v => v,
                    })
                    .collect(),
            ),
            FeatureKind::Categorical => {
                Column::Cat(c.str().map_err(pe)?.iter().map(|v| v.map(str::to_string)).collect())
            }
            FeatureKind::Boolean => Column::Bool(c.bool().map_err(pe)?.iter().collect()),
        };
        out.features.push(column);
    }
    if non_finite > 0 {
        tracing::warn!(path = %path.display(), values = non_finite, "non-finite feature values read as missing");
    }
    Ok(out)
}

/// Reads the whole master dataset.
pub fn read_master(spec: &Spec) -> Result<MasterData> {
    let root = &spec.paths.master;
    let files = list_files(root)?;
    if files.is_empty() {
        return Err(input(root, "the master dataset has no Parquet files"));
    }
    let df = read_frame(spec, &files, Need::All)?;
    if df.height() == 0 {
        return Err(input(root, "the master dataset has no rows"));
    }
    let columns = match to_columns(spec, &df, Need::All, root) {
        Ok(c) => c,
        // Name the file at fault: read them one by one, which only an error pays for.
        Err(e) => {
            for f in &files {
                let one = read_frame(spec, std::slice::from_ref(f), Need::All)?;
                to_columns(spec, &one, Need::All, f)?;
            }
            return Err(e);
        }
    };
    check_features(spec, &columns, root)?;
    let watermark = columns.seqs.iter().copied().max().unwrap_or(0);
    let (columns, duplicates) = drop_duplicate_ids(columns);
    if duplicates > 0 {
        tracing::warn!(rows = duplicates, "dropped rows whose event id appeared earlier in ingestion order");
    }
    Ok(MasterData { columns, watermark, files: files.len(), duplicates })
}

/// How many distinct set values `column` has, counting no further than two.
fn distinct_up_to_two<T: PartialEq>(column: &[Option<T>]) -> usize {
    let mut set = column.iter().flatten();
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
            Column::Num(v) => distinct_up_to_two(v),
            Column::Cat(v) => distinct_up_to_two(v),
            Column::Bool(v) => distinct_up_to_two(v),
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

/// Keeps the first row (in ingestion order) of each event id: a replay that reached the master dataset twice,
/// from two writers or across the speed layer's de-duplication window, is counted once.
pub fn drop_duplicate_ids(columns: Columns) -> (Columns, u64) {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_by_key(|&r| columns.seqs[r]);
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::with_capacity(columns.len());
    let mut keep = vec![false; columns.len()];
    for r in order {
        keep[r] = seen.insert(columns.ids[r].as_str());
    }
    let kept: Vec<usize> = (0..columns.len()).filter(|&r| keep[r]).collect();
    let dropped = (columns.len() - kept.len()) as u64;
    if dropped == 0 {
        return (columns, 0);
    }
    (columns.take(&kept), dropped)
}
