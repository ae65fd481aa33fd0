//! The Forecast pattern: score a whole Parquet table with the current model. The output holds the input's columns,
//! the prediction (class label or value), one probability column per class, and the model version.

use std::fs::File;
use std::path::Path;

use lambda_core::model::{Model, Prediction};
use lambda_core::registry::{Published, Registry};
use lambda_core::spec::Spec;
use polars::prelude::*;

use crate::read::{read_frame, to_columns, Need};
use crate::{Error, Result};

/// Rows scored and the model version that scored them.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastReport {
    /// Rows written.
    pub rows: usize,
    /// Model version used.
    pub version: String,
}

/// Name of the probability column of a class.
pub fn probability_column(class: &str) -> String {
    format!("probability_{class}")
}

/// Scores `input` with the current model of the registry and writes `output`.
pub fn forecast(spec: &Spec, input: &Path, output: &Path) -> Result<ForecastReport> {
    let registry = Registry::open(&spec.paths.registry);
    let published = registry.load_current(spec)?.ok_or_else(|| {
        Error::Data(format!("no model is published in {}; run `lambda-ml batch` first", spec.paths.registry.display()))
    })?;
    forecast_with(spec, &published, input, output)
}

/// Scores `input` with a given published model and writes `output`.
pub fn forecast_with(spec: &Spec, published: &Published, input: &Path, output: &Path) -> Result<ForecastReport> {
    let conformed = read_frame(spec, &[input.to_path_buf()], Need::Features)?;
    let columns = to_columns(spec, &conformed, Need::Features, input)?;
    let file = File::open(input).map_err(|e| Error::Input { path: input.to_path_buf(), message: e.to_string() })?;
    let mut df = ParquetReader::new(file).finish().map_err(pe(input))?;

    let art = &published.artifact;
    // A chunk of rows encoded at a time: the encoded matrix of a large table would dwarf the table.
    let mut predictions = Vec::with_capacity(columns.len());
    let rows: Vec<usize> = (0..columns.len()).collect();
    for chunk in rows.chunks(8192) {
        predictions.extend(art.model.predict_batch(&art.encoder.encode_rows(&columns, chunk.iter().copied())));
    }
    let mut extra = prediction_columns(&art.model, &predictions);
    extra.push(Column::new("model_version".into(), vec![published.manifest.version.as_str(); predictions.len()]));
    for c in extra {
        df.with_column(c).map_err(pe(output))?;
    }

    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::Input { path: dir.to_path_buf(), message: e.to_string() })?;
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(|e| Error::Input { path: tmp.clone(), message: e.to_string() })?;
    ParquetWriter::new(file).with_compression(ParquetCompression::Snappy).finish(&mut df).map_err(pe(&tmp))?;
    std::fs::rename(&tmp, output).map_err(|e| Error::Input { path: output.to_path_buf(), message: e.to_string() })?;
    Ok(ForecastReport { rows: predictions.len(), version: published.manifest.version.clone() })
}

fn pe(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::Input { path: path.to_path_buf(), message: e.to_string() }
}

fn prediction_columns(model: &Model, predictions: &[Prediction]) -> Vec<Column> {
    if model.classes().is_empty() {
        let values: Vec<f64> = predictions
            .iter()
            .map(|p| match p {
                Prediction::Value(v) => *v,
                Prediction::Probabilities(_) => f64::NAN,
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
    let labels: Vec<&str> = predictions.iter().map(|p| model.label(p).unwrap_or("")).collect();
    let mut out = vec![Column::new("prediction".into(), labels)];
    for (k, class) in model.classes().iter().enumerate() {
        let col: Vec<f64> = probs.iter().map(|p| p.get(k).copied().unwrap_or(f64::NAN)).collect();
        out.push(Column::new(probability_column(class).into(), col));
    }
    out
}
