//! The Forecast pattern: score a whole Parquet table with the current model. The output holds the input's columns,
//! the prediction (class label or value), one probability column per class, the model version, and `not_scored`:
//! why a row has no prediction (a numeric value far outside the range the model saw, as `/v1/predict` refuses it,
//! or an answer that is not finite), null when it has one.

use std::fs::File;
use std::path::Path;

use lambda_core::spec::Spec;
use lambda_models::model::{Model, Prediction};
use lambda_stores::registry::{Published, Registry};
use polars::prelude::*;

use crate::read::{read_frame, to_columns, Need};
use crate::{Error, Result};

/// Rows scored and the model version that scored them.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastReport {
    /// Rows written.
    pub rows: usize,
    /// Rows written without a prediction (`not_scored` says why).
    pub not_scored: usize,
    /// Model version used.
    pub version: String,
}

/// Name of the column that says why a row has no prediction.
pub const NOT_SCORED: &str = "not_scored";

/// Name of the probability column of a class.
pub fn probability_column(class: &str) -> String {
    format!("probability_{class}")
}

/// Scores `input` with the current model of the registry and writes `output`.
pub fn forecast(spec: &Spec, input: &Path, output: &Path) -> Result<ForecastReport> {
    let registry = Registry::open(&spec.paths.registry);
    let published = registry.load_current(spec)?.ok_or_else(|| {
        lambda_core::Error::NotFound(format!(
            "no model is published in {}; run `lambda-ml batch` first",
            spec.paths.registry.display()
        ))
    })?;
    forecast_with(spec, &published, input, output)
}

/// Scores `input` with a given published model and writes `output`.
pub fn forecast_with(spec: &Spec, published: &Published, input: &Path, output: &Path) -> Result<ForecastReport> {
    let conformed = read_frame(spec, &[input.to_path_buf()], Need::Features)?;
    let columns = to_columns(spec, &conformed, Need::Features, input)?;
    let file = File::open(input).map_err(|e| crate::read::input(input, e))?;
    let mut df = ParquetReader::new(file).finish().map_err(pe(input))?;

    let art = &published.artifact;
    // A chunk of rows encoded at a time: the encoded matrix of a large table would dwarf the table.
    let mut predictions = Vec::with_capacity(columns.len());
    let rows: Vec<usize> = (0..columns.len()).collect();
    for chunk in rows.chunks(8192) {
        predictions.extend(art.model.predict_batch(&art.encoder.encode_rows(&columns, chunk.iter().copied())));
    }
    // A value far outside what the model saw gets no answer it could stand behind (a linear model's scores
    // overflow to NaN, a tree's saturate): refused per row, as `/v1/predict` refuses it.
    let reasons: Vec<Option<String>> = predictions
        .iter()
        .enumerate()
        .map(|(r, p)| match art.encoder.check_ranges(&columns.row(r)) {
            Err(rej) => Some(rej.to_string()),
            Ok(()) if !finite(p) => Some("the model's answer is not finite".into()),
            Ok(()) => None,
        })
        .collect();
    let not_scored = reasons.iter().filter(|r| r.is_some()).count();
    let mut extra = prediction_columns(&art.model, &predictions, &reasons);
    extra.push(Column::new("model_version".into(), vec![published.manifest.version.as_str(); predictions.len()]));
    extra.push(Column::new(NOT_SCORED.into(), reasons));
    for c in extra {
        df.with_column(c).map_err(pe(output))?;
    }

    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| crate::read::input(dir, e))?;
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(|e| crate::read::input(&tmp, e))?;
    ParquetWriter::new(file).with_compression(ParquetCompression::Snappy).finish(&mut df).map_err(pe(&tmp))?;
    std::fs::rename(&tmp, output).map_err(|e| crate::read::input(output, e))?;
    Ok(ForecastReport { rows: predictions.len(), not_scored, version: published.manifest.version.clone() })
}

fn pe(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| crate::read::input(path, e)
}

fn finite(p: &Prediction) -> bool {
    match p {
        Prediction::Value(v) => v.is_finite(),
        Prediction::Probabilities(ps) => ps.iter().all(|v| v.is_finite()),
    }
}

/// The prediction columns, null where `reasons` says a row is not scored.
fn prediction_columns(model: &Model, predictions: &[Prediction], reasons: &[Option<String>]) -> Vec<Column> {
    let scored = |r: usize| reasons[r].is_none();
    if model.classes().is_empty() {
        let values: Vec<Option<f64>> = predictions
            .iter()
            .enumerate()
            .map(|(r, p)| match p {
                Prediction::Value(v) if scored(r) => Some(*v),
                _ => None,
            })
            .collect();
        return vec![Column::new("prediction".into(), values)];
    }
    let probs: Vec<&[f64]> = predictions
        .iter()
        .map(|p| match p {
            Prediction::Probabilities(p) => p.as_slice(),
            Prediction::Value(_) => &[],
        })
        .collect();
    let labels: Vec<Option<&str>> =
        predictions.iter().enumerate().map(|(r, p)| model.label(p).filter(|_| scored(r))).collect();
    let mut out = vec![Column::new("prediction".into(), labels)];
    for (k, class) in model.classes().iter().enumerate() {
        let col: Vec<Option<f64>> =
            probs.iter().enumerate().map(|(r, p)| p.get(k).copied().filter(|_| scored(r))).collect();
        out.push(Column::new(probability_column(class).into(), col));
    }
    out
}
