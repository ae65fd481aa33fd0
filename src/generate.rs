//! A deterministic generator of sample pipelines: from a seed, a master dataset of keyed, timestamped, labelled
//! events whose label rule drifts over time, plus a stream of later events to replay (with a few malformed records
//! and replays, as live traffic has). The same seed and sizes always give the same files.
//!
//! Two shapes: `sample` (four features, a nearly linear label, the quickstart pipeline) and `wide` (20 features,
//! a target made of thresholds, interactions, a sine and categorical effects, where a linear model falls short: the
//! data the model zoo and the search are measured on, up to 10 million rows).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use lambda_core::schema::{Cell, Event, Target};
use lambda_core::spec::{Spec, Task};
use lambda_stores::master;

/// Options of `lambda-ml generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline spec whose `paths.master` receives the history (it must use the sample schema).
    #[arg(long)]
    pub spec: PathBuf,
    /// Rows of history written to the master dataset.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u64,
    /// Later events written as NDJSON to `--stream`.
    #[arg(long, default_value_t = 2_000)]
    pub stream_rows: u64,
    /// Where to write the stream.
    #[arg(long)]
    pub stream: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of stream lines that are malformed (they must be rejected).
    #[arg(long, default_value_t = 0.01)]
    pub bad_fraction: f64,
    /// Distinct keys (default: one per 40 events, between 10 and 100,000).
    #[arg(long)]
    pub keys: Option<u64>,
    /// Which data: `sample` (the quickstart schema) or `wide` (14 numeric and 6 categorical features, a non-linear
    /// target; the spec's task picks binary classes, three classes or a value).
    #[arg(long, value_enum, default_value_t = Shape::Sample)]
    pub shape: Shape,
}

/// The generator's data shapes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// amount, country, mobile, session_seconds; a drifting, nearly linear label.
    Sample,
    /// x01..x14 numeric, c1..c6 categorical; a non-linear target.
    Wide,
}

/// SplitMix64: tiny, fast, and stable across versions, which a seeded generator must be.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

const COUNTRIES: [&str; 6] = ["fr", "de", "us", "jp", "br", "in"];
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const SPAN_MS: i64 = 30 * 86_400_000;

/// Event `i` of a sequence of `total`; its label rule drifts with `i / total`.
fn event(rng: &mut Rng, i: u64, total: u64, keys: u64) -> Event {
    let progress = i as f64 / total.max(1) as f64;
    let user = rng.next() % keys;
    let mut time = START_MS + (progress * SPAN_MS as f64) as i64;
    if rng.unit() < 0.02 {
        // Late arrival: happened up to two days before it was ingested.
        time -= (rng.unit() * 2.0 * 86_400_000.0) as i64;
    }
    let country = COUNTRIES[(rng.next() % COUNTRIES.len() as u64) as usize];
    let mobile = rng.unit() < 0.55;
    let amount = (3.0 + 0.8 * rng.normal()).exp();
    let session = if rng.unit() < 0.05 { None } else { Some((60.0 + 40.0 * rng.normal()).max(1.0)) };
    let country_effect = match country {
        "us" => 0.6,
        "jp" => 0.3,
        "br" => -0.4,
        "in" => -0.2,
        _ => 0.0,
    };
    // The mobile effect flips sign over the period: a drift the speed layer must follow.
    let mobile_effect = if mobile { -1.2 + 2.4 * progress } else { 0.0 };
    let z =
        -0.5 + 0.9 * (amount.ln() - 3.0) + 0.012 * (session.unwrap_or(60.0) - 60.0) + country_effect + mobile_effect;
    let p = 1.0 / (1.0 + (-z).exp());
    let label = if rng.unit() < p { "yes" } else { "no" };
    // About one event in twenty arrives unlabelled.
    let target = (rng.unit() >= 0.05).then(|| Target::Class(label.to_string()));
    Event {
        id: format!("e{i:09}"),
        key: format!("user-{user:04}"),
        time,
        features: vec![
            Cell::Num(Some((amount * 100.0).round() / 100.0)),
            Cell::Cat(Some(country.to_string())),
            Cell::Bool(Some(mobile)),
            Cell::Num(session.map(|s| s.round())),
        ],
        target,
    }
}

/// Levels of the wide shape's categorical features c1..c6.
const LEVELS: [u64; 6] = [3, 5, 8, 12, 16, 24];

/// A fixed effect in [-0.8, 0.8] for level `j` of categorical `k`.
fn level_effect(k: usize, j: u64) -> f64 {
    let mut r = Rng(0xC0FF_EE00 ^ ((k as u64) << 32) ^ j);
    (r.unit() - 0.5) * 1.6
}

/// Event `i` of the wide shape: 14 numeric features (x03, x08 and x12 missing 5% of the time) and 6 categorical
/// ones with skewed level frequencies. The target mixes a sine, a threshold interaction, a product, a square, level
/// effects and a level-by-value interaction; x10..x14, c5 and c6 are noise.
fn wide_event(rng: &mut Rng, i: u64, total: u64, keys: u64, task: Task) -> Event {
    let progress = i as f64 / total.max(1) as f64;
    let user = rng.next() % keys;
    let mut time = START_MS + (progress * SPAN_MS as f64) as i64;
    if rng.unit() < 0.02 {
        time -= (rng.unit() * 2.0 * 86_400_000.0) as i64;
    }
    let mut x = [0.0f64; 14];
    for (d, v) in x.iter_mut().enumerate() {
        *v = match d {
            1 => rng.unit(),
            5 => rng.unit() * 4.0 - 2.0,
            7 => (1.0 + 0.7 * rng.normal()).exp(),
            _ => rng.normal(),
        };
    }
    let missing = [2usize, 7, 11].map(|d| (d, rng.unit() < 0.05));
    let cats: Vec<u64> = LEVELS
        .iter()
        .map(|&l| {
            // Skewed: low levels are common, high ones rare, as real categories are.
            let u = rng.unit();
            ((u * u * l as f64) as u64).min(l - 1)
        })
        .collect();
    let x03 = if missing[0].1 { 0.0 } else { x[2] };
    let z = -0.3 + 1.2 * (2.0 * x[0]).sin() + 1.5 * f64::from(u8::from(x[1] > 0.6 && x03 > 0.0)) - 0.5
        + 0.8 * x[3] * x[4]
        + 0.4 * (x[5] * x[5] - 4.0 / 3.0)
        + level_effect(0, cats[0])
        + level_effect(1, cats[1])
        + level_effect(2, cats[2])
        + level_effect(3, cats[3]) * x[6]
        + 0.3 * x[8];
    let target = match task {
        Task::BinaryClassification => {
            let p = 1.0 / (1.0 + (-2.0 * z).exp());
            Target::Class(if rng.unit() < p { "yes" } else { "no" }.to_string())
        }
        Task::MulticlassClassification => {
            // Logistic noise on the score, then three bands.
            let u = rng.unit().clamp(1e-12, 1.0 - 1e-12);
            let s = z + 0.3 * (u / (1.0 - u)).ln();
            Target::Class(
                if s < -0.5 {
                    "low"
                } else if s < 0.5 {
                    "mid"
                } else {
                    "high"
                }
                .to_string(),
            )
        }
        Task::Regression => Target::Value(3.0 * z + rng.normal()),
    };
    // About one event in fifty arrives unlabelled.
    let target = (rng.unit() >= 0.02).then_some(target);
    let mut features: Vec<Cell> = x
        .iter()
        .enumerate()
        .map(|(d, v)| {
            let gone = missing.iter().any(|&(m, is)| m == d && is);
            Cell::Num((!gone).then(|| (v * 10_000.0).round() / 10_000.0))
        })
        .collect();
    features
        .extend(cats.iter().enumerate().map(|(k, j)| Cell::Cat(Some(format!("{}{j:02}", (b'a' + k as u8) as char)))));
    Event { id: format!("e{i:09}"), key: format!("user-{user:05}"), time, features, target }
}

fn to_json(spec: &Spec, e: &Event) -> serde_json::Value {
    let d = &spec.dataset;
    let mut o = serde_json::Map::new();
    o.insert(d.id_column.clone(), e.id.clone().into());
    o.insert(d.key_column.clone(), e.key.clone().into());
    o.insert(d.time_column.clone(), e.time.into());
    for (f, c) in spec.features.iter().zip(&e.features) {
        let v = match c {
            Cell::Num(Some(x)) => serde_json::json!(x),
            Cell::Cat(Some(s)) => serde_json::json!(s),
            Cell::Bool(Some(b)) => serde_json::json!(b),
            _ => serde_json::Value::Null,
        };
        o.insert(f.name.clone(), v);
    }
    match &e.target {
        Some(Target::Class(c)) => {
            o.insert(d.target.clone(), c.clone().into());
        }
        Some(Target::Value(v)) => {
            o.insert(d.target.clone(), serde_json::json!(v));
        }
        None => {}
    }
    serde_json::Value::Object(o)
}

/// Writes the history into the spec's master dataset and the stream to `--stream`.
pub fn run(args: &Args) -> Result<()> {
    let spec = Spec::from_file(&args.spec)?;
    let names: Vec<&str> = spec.features.iter().map(|f| f.name.as_str()).collect();
    let task = spec.dataset.task;
    match args.shape {
        Shape::Sample => anyhow::ensure!(
            names == ["amount", "country", "mobile", "session_seconds"] && task == Task::BinaryClassification,
            "--shape sample writes the quickstart schema (amount, country, mobile, session_seconds; binary \
             classification); {} declares {names:?}",
            args.spec.display()
        ),
        Shape::Wide => {
            let want: Vec<String> =
                (1..=14).map(|d| format!("x{d:02}")).chain((1..=6).map(|k| format!("c{k}"))).collect();
            anyhow::ensure!(
                names == want,
                "--shape wide writes features x01..x14 (numeric) and c1..c6 (categorical), in that order (see \
                 data/wide.toml); {} declares {names:?}",
                args.spec.display()
            );
        }
    }
    let make = |rng: &mut Rng, i: u64, total: u64, keys: u64| match args.shape {
        Shape::Sample => event(rng, i, total, keys),
        Shape::Wide => wide_event(rng, i, total, keys, task),
    };
    let total = args.rows + args.stream_rows;
    let keys = args.keys.unwrap_or((total / 40).clamp(10, 100_000)).max(1);
    let mut rng = Rng(args.seed);
    // History: partitioned by the day each event was ingested (its undelayed time).
    let mut partitions: BTreeMap<i64, Vec<(u64, Event)>> = BTreeMap::new();
    let chunk = 250_000;
    let mut written = 0;
    for i in 0..args.rows {
        let e = make(&mut rng, i, total, keys);
        let day = (START_MS + ((i as f64 / total as f64) * SPAN_MS as f64) as i64).div_euclid(86_400_000);
        partitions.entry(day).or_default().push((i + 1, e));
        if i + 1 == args.rows || (i + 1) % chunk == 0 {
            for (day, rows) in std::mem::take(&mut partitions) {
                let refs: Vec<(u64, &Event)> = rows.iter().map(|(s, e)| (*s, e)).collect();
                let path = master::partition(&spec.paths.master, day * 86_400_000)
                    .join(format!("part-{:012}.parquet", rows[0].0));
                master::write_events(&spec, &path, &refs)?;
                written += 1;
            }
        }
    }
    // Stream: the events after the history, with some malformed records and replayed ids.
    if let Some(dir) = args.stream.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.stream).with_context(|| format!("cannot create {}", args.stream.display()))?,
    );
    let mut last = None;
    for i in args.rows..total {
        let e = make(&mut rng, i, total, keys);
        let line = to_json(&spec, &e);
        let r = rng.unit();
        if r < args.bad_fraction {
            let mut bad = line.clone();
            match rng.next() % 4 {
                0 => bad["amount"] = serde_json::json!("NaN"),
                1 => {
                    bad.as_object_mut().map(|o| o.remove(&spec.dataset.id_column));
                }
                2 => bad["mobile"] = serde_json::json!("yes"),
                _ => bad[&spec.dataset.time_column] = serde_json::json!("yesterday"),
            }
            writeln!(out, "{bad}")?;
        } else if r < args.bad_fraction * 1.5 && last.is_some() {
            // At-least-once delivery replays an event already sent.
            writeln!(out, "{}", last.as_ref().map(ToString::to_string).unwrap_or_default())?;
        }
        writeln!(out, "{line}")?;
        last = Some(line);
    }
    out.flush()?;
    println!(
        "wrote {} history rows in {written} files under {} and {} stream events to {}",
        args.rows,
        spec.paths.master.display(),
        args.stream_rows,
        args.stream.display()
    );
    Ok(())
}
