//! Turning raw input (an HTTP body, a file, stdin) into validated events or rejections with their reasons.

use std::io::BufRead;

use lambda_core::schema::{Event, Mode};
use lambda_core::spec::Spec;
use lambda_stores::checkpoint::SourcePosition;
use serde_json::Value;

use crate::{IngestReport, Result, Speed};

/// One input record after validation.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A valid event and the JSON it came from (what the log keeps).
    Accepted {
        /// Line number in its input (1-based).
        line: usize,
        /// The checked event.
        event: Event,
        /// Its JSON.
        raw: Value,
        /// Its place in an external event log, when it came from one.
        source: Option<SourcePosition>,
    },
    /// A record that failed validation: it goes to the dead-letter file and never trains.
    Rejected {
        /// Line number in its input (1-based).
        line: usize,
        /// Why.
        error: String,
        /// The raw text.
        raw: String,
    },
}

impl Incoming {
    /// The record as one from an external event log at `position`.
    pub fn from_source(mut self, position: SourcePosition) -> Incoming {
        if let Incoming::Accepted { source, .. } = &mut self {
            *source = Some(position);
        }
        self
    }
}

/// Validates one JSON line.
pub fn parse_line(spec: &Spec, line_no: usize, text: &str) -> Incoming {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => parse_value(spec, line_no, v, text),
        Err(e) => Incoming::Rejected { line: line_no, error: format!("invalid JSON: {e}"), raw: text.to_string() },
    }
}

fn parse_value(spec: &Spec, line_no: usize, v: Value, text: &str) -> Incoming {
    match spec.parse_record(&v, Mode::Event) {
        Ok(event) => Incoming::Accepted { line: line_no, event, raw: v, source: None },
        Err(r) => Incoming::Rejected { line: line_no, error: r.to_string(), raw: text.to_string() },
    }
}

/// Parses a request body: one JSON object, a JSON array of objects, or NDJSON (one object per line).
/// Fails only when the body holds no record at all.
pub fn parse_body(spec: &Spec, body: &str) -> std::result::Result<Vec<Incoming>, String> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err("empty body: send one JSON object, a JSON array of objects, or NDJSON lines".into());
    }
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return Ok(match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let text = item.to_string();
                    parse_value(spec, i + 1, item, &text)
                })
                .collect(),
            other => vec![parse_value(spec, 1, other, trimmed)],
        });
    }
    Ok(body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(spec, i + 1, l))
        .collect())
}

/// Totals of a replayed source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Events accepted.
    pub accepted: u64,
    /// Replays of known ids.
    pub duplicates: u64,
    /// Records rejected.
    pub rejected: u64,
}

/// Feeds NDJSON from `reader` to the speed layer in chunks, waiting for each to be durable; at most `rate` records
/// a second when given (a replay at a live stream's pace, so that what runs beside ingest, such as retraining on
/// the fly, has the time it would have).
pub fn replay(speed: &Speed, reader: impl BufRead, chunk: usize, rate: Option<f64>) -> Result<SourceReport> {
    let spec = speed.spec().clone();
    let mut total = SourceReport::default();
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0);
    // Paced chunks of about a tenth of a second's records, so that the pace is even.
    let chunk = rate.map_or(chunk, |r| chunk.min((r / 10.0).ceil() as usize).max(1));
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    let mut batch = Vec::with_capacity(chunk);
    let send = |batch: &mut Vec<Incoming>, total: &mut SourceReport| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let r: IngestReport = speed.ingest_blocking(std::mem::take(batch))?;
        total.accepted += r.accepted;
        total.duplicates += r.duplicates;
        total.rejected += r.rejected.len() as u64;
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                batch.push(Incoming::Rejected {
                    line: i + 1,
                    error: format!("unreadable line: {e}"),
                    raw: String::new(),
                });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        batch.push(parse_line(&spec, i + 1, &line));
        if batch.len() >= chunk {
            if let Some(r) = rate {
                let due = std::time::Duration::from_secs_f64(sent as f64 / r);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent += batch.len();
            send(&mut batch, &mut total)?;
        }
    }
    send(&mut batch, &mut total)?;
    Ok(total)
}
