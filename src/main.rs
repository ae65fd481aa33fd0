//! `lambda-ml`: the command line that wires the batch, speed and serving layers together.

mod generate;
mod publish;

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lambda_core::spec::Spec;
use lambda_serving::Serving;
use lambda_speed::Speed;
use lambda_stores::checkpoint::Live;
use lambda_stores::registry::Registry;

/// Machine-learning models in production as a lambda architecture.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Nightly batch job: read the master dataset, fit, search, publish the model and the batch view when the
    /// winner is at least as good as the current model. Exits with 3 when the gate holds it back.
    Batch {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Publish the winner even if the champion/challenger gate would hold it back.
        #[arg(long)]
        force: bool,
    },
    /// Score a Parquet table with the current model (the Forecast pattern).
    Forecast {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Parquet file with the feature columns.
        #[arg(long)]
        input: PathBuf,
        /// Parquet file to write: the input plus predictions and the model version.
        #[arg(long)]
        output: PathBuf,
    },
    /// Speed-layer daemon: ingest events over HTTP (and from a source), learn, keep realtime views, archive.
    Speed {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Also read events: NDJSON from `file:PATH` or `stdin`, or a NATS JetStream stream,
        /// `nats://HOST:PORT/STREAM[?subject=S&durable=NAME&batch=N]` (a durable pull consumer, acked once durable).
        #[arg(long)]
        source: Option<String>,
        /// Stop once the source is read (for NATS: once the consumer has nothing left), checkpointing first,
        /// instead of serving HTTP ingest.
        #[arg(long, requires = "source")]
        once: bool,
        /// Read the source at most this many records a second (a recorded stream at a live pace).
        #[arg(long, requires = "source")]
        rate: Option<f64>,
        /// Ingest address, overriding `speed.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Serving layer: HTTP predictions and per-key views.
    Serve {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Address, overriding `serving.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Everything in one process: a batch run if no model exists, then the speed and serving layers.
    Up {
        /// Pipeline spec (TOML).
        #[arg(long, default_value = "data/quickstart.toml")]
        spec: PathBuf,
        /// Serving address, overriding `serving.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Ingest address, overriding `speed.listen`.
        #[arg(long)]
        ingest_listen: Option<SocketAddr>,
        /// Also read events from a source, as `speed --source` does (`file:PATH`, `stdin` or `nats://...`).
        #[arg(long)]
        source: Option<String>,
    },
    /// Publish NDJSON events to a NATS JetStream stream (created if missing), one message per line, with
    /// `Nats-Msg-Id` set to the event's id so that the stream's duplicate window drops a re-sent event; or post
    /// them to a speed layer over HTTP.
    #[command(group(clap::ArgGroup::new("to").required(true).args(["nats", "http"])))]
    Publish {
        /// Pipeline spec (TOML): names the id field.
        #[arg(long)]
        spec: PathBuf,
        /// The stream: `nats://HOST:PORT/STREAM[?subject=S]`.
        #[arg(long)]
        nats: Option<String>,
        /// A speed layer's (or `up`'s) base URL, `http://HOST:PORT`: events go to its `/v1/events`.
        #[arg(long)]
        http: Option<String>,
        /// Events per HTTP request.
        #[arg(long, default_value_t = 1, requires = "http")]
        batch: usize,
        /// Most messages waiting for the stream's ack at once (NATS), or requests at once (HTTP).
        #[arg(long)]
        in_flight: Option<usize>,
        /// NDJSON file to send, or `-` for stdin.
        file: PathBuf,
    },
    /// Model versions: list them, promote one, roll back.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// The speed layer's live record as of its last checkpoint: each model's metrics over its latest labelled
    /// events, its drift detectors, and the other online learners.
    Status {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
    },
    /// Point the registry's `CURRENT` at a kept model version (as `models rollback --to`).
    Rollback {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// The version to make current, e.g. v000003.
        #[arg(long)]
        to: String,
    },
    /// Generate a sample pipeline: master dataset (Parquet) and a later event stream (NDJSON), from a seed.
    Generate(generate::Args),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every kept version: when, what, its holdout metric, and whether it is current, was published or was held
    /// back by the gate (and why).
    List {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
    },
    /// Make a kept version current (for example a challenger the gate held back); the speed and serving layers
    /// follow.
    Promote {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// The version, e.g. v000004.
        version: String,
    },
    /// Point `CURRENT` back at the newest published version older than the current one, or at `--to`.
    Rollback {
        /// Pipeline spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// The version to make current instead of the previous published one.
        #[arg(long)]
        to: Option<String>,
    },
}

/// Exit status of `batch` when the champion/challenger gate kept the new version back.
const EXIT_HELD: i32 = 3;

/// A long-running daemon whose tables grow by small steps: jemalloc keeps it from fragmenting the heap (with the
/// system allocator resident memory grew half again beyond what the tables hold). `.cargo/config.toml` makes it give
/// freed pages back after 1 s instead of 10 s.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let command = Cli::parse().command;
    if matches!(command, Command::Speed { .. } | Command::Serve { .. } | Command::Up { .. }) {
        exit_on_panic();
    }
    // Fail points named in `FAILPOINTS` (`learner::after_dead_letters=panic`, say) act only in a build with the
    // `fail/failpoints` feature, which the test build has: the daemon's tests crash it at chosen places.
    let _failpoints = std::env::var_os("FAILPOINTS").map(|_| fail::FailScenario::setup());
    match command {
        Command::Batch { spec, force } => {
            let spec = load(&spec)?;
            let out = lambda_batch::run(&spec, force).context("batch run failed; nothing was published")?;
            let m = &out.manifest;
            let reason = m.gate.as_ref().map(|g| g.reason.as_str()).unwrap_or_default();
            if out.published {
                println!(
                    "published {} (watermark {}, {} training rows): {reason}",
                    m.version, m.watermark, m.training_rows
                );
            } else {
                println!("not published: {reason}");
                println!(
                    "kept as {} ({} stays current); `lambda-ml models promote --spec {} {}` makes it current",
                    m.version,
                    m.gate.as_ref().and_then(|g| g.champion_version.as_deref()).unwrap_or("the champion"),
                    spec.source.display(),
                    m.version
                );
            }
            // With rolling-origin folds the winner's metrics are their mean, and `rows` their scored rows.
            let judged = match &m.search {
                Some(r) if r.folds > 1 => format!("mean of {} rolling-origin folds", r.folds),
                _ => "holdout".to_string(),
            };
            for (k, v) in &m.metrics {
                println!("  {judged} {k}: {v:.4}");
            }
            if let Some(r) = &m.search {
                println!("search: {} in {:.1} s of a {:.0} s budget", r.stopped, r.seconds, r.budget_seconds);
            }
            let metric = spec.metric().name();
            println!("  {:<22} {:<58} {:>9} {:>9} {:>8}", "family", "settings", metric, "rows", "fit s");
            for e in m.leaderboard.iter().take(5) {
                let v = e.metrics.get(metric).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
                // Boosting cut short by early stopping says how many rounds it kept.
                let params = match e.rounds_kept {
                    Some(kept) if !e.params.starts_with(&format!("rounds={kept} ")) => {
                        format!("{} (kept {kept} rounds)", e.params)
                    }
                    _ => e.params.clone(),
                };
                println!("  {:<22} {params:<58} {v:>9} {:>9} {:>8.2}", e.algorithm, e.rows, e.fit_seconds);
            }
            if !out.published {
                use std::io::Write;
                std::io::stdout().flush()?;
                std::process::exit(EXIT_HELD);
            }
            Ok(())
        }
        Command::Models { command } => models(command),
        Command::Status { spec } => status(&load(&spec)?),
        Command::Forecast { spec, input, output } => {
            let spec = load(&spec)?;
            let r = lambda_batch::forecast::forecast(&spec, &input, &output).context("forecast failed")?;
            println!("wrote {} predictions of model {} to {}", r.rows - r.not_scored, r.version, output.display());
            if r.not_scored > 0 {
                println!(
                    "{} rows have no prediction: a numeric value far outside the range the model saw (column `{}` \
                     says which)",
                    r.not_scored,
                    lambda_batch::forecast::NOT_SCORED
                );
            }
            Ok(())
        }
        Command::Speed { spec, source, once, rate, listen } => {
            let mut spec = load(&spec)?;
            if let Some(l) = listen {
                spec.speed.listen = l.to_string();
            }
            let source = source.as_deref().map(Source::parse).transpose()?;
            if rate.is_some() && matches!(source, Some(Source::Nats(_))) {
                bail!("--rate paces a file or stdin replay; a NATS stream comes at its producers' pace");
            }
            runtime()?.block_on(speed(spec, source, once, rate))
        }
        Command::Serve { spec, listen } => {
            let mut spec = load(&spec)?;
            if let Some(l) = listen {
                spec.serving.listen = l.to_string();
            }
            runtime()?.block_on(serve(spec))
        }
        Command::Publish { spec, nats, http, batch, in_flight, file } => {
            let spec = load(&spec)?;
            let lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::BufRead::lines(BufReader::new(std::io::stdin())))
            } else {
                let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
                Box::new(std::io::BufRead::lines(BufReader::new(f)))
            };
            let started = std::time::Instant::now();
            if let Some(base) = http {
                let r = publish::http(&base, lines, batch, in_flight.unwrap_or(1))?;
                let seconds = started.elapsed().as_secs_f64();
                println!(
                    "posted to {base}: {} accepted, {} duplicates, {} rejected in {} requests, in {seconds:.3} s \
                     ({:.0} events/s)",
                    r.accepted,
                    r.duplicates,
                    r.rejected,
                    r.requests,
                    (r.accepted + r.duplicates + r.rejected) as f64 / seconds.max(1e-9)
                );
                return Ok(());
            }
            let target = lambda_speed::nats::NatsSource::parse(nats.as_deref().unwrap_or_default())
                .map_err(anyhow::Error::msg)?;
            let in_flight = in_flight.unwrap_or(256);
            let r =
                runtime()?.block_on(lambda_speed::nats::publish(&target, &spec.dataset.id_column, lines, in_flight))?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "published to {}: {} stored, {} dropped as duplicates by the stream, {} without an id, in {seconds:.3} s \
                 ({:.0} messages/s)",
                target.display(),
                r.stored,
                r.duplicates,
                r.without_id,
                (r.stored + r.duplicates) as f64 / seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Up { spec, listen, ingest_listen, source } => {
            let mut spec = load(&spec)?;
            if let Some(l) = listen {
                spec.serving.listen = l.to_string();
            }
            if let Some(l) = ingest_listen {
                spec.speed.listen = l.to_string();
            }
            if Registry::open(&spec.paths.registry).current_version()?.is_none() {
                println!("no model published yet: running the batch layer first");
                let m = lambda_batch::run(&spec, false).context("batch run failed")?.manifest;
                println!("published {} (watermark {})", m.version, m.watermark);
            }
            let source = source.as_deref().map(Source::parse).transpose()?;
            runtime()?.block_on(up(spec, source))
        }
        Command::Rollback { spec, to } => models(ModelsCommand::Rollback { spec, to: Some(to) }),
        Command::Generate(args) => generate::run(&args),
    }
}

fn models(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List { spec } => {
            let spec = load(&spec)?;
            let registry = Registry::open(&spec.paths.registry);
            let current = registry.current_version()?;
            let metric = spec.metric().name();
            println!(
                "{:<9} {:<20} {:>10} {:>10} {:>10}  {:<30} status",
                "version", "created", metric, "watermark", "rows", "algorithm"
            );
            for m in registry.manifests()?.iter().rev() {
                let status = if current.as_deref() == Some(m.version.as_str()) {
                    "current".to_string()
                } else {
                    match &m.gate {
                        Some(g) if !g.published => format!("held back: {}", g.reason),
                        _ => "published".to_string(),
                    }
                };
                let value = m.metrics.get(metric).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
                println!(
                    "{:<9} {:<20} {:>10} {:>10} {:>10}  {:<30} {status}",
                    m.version, m.created, value, m.watermark, m.training_rows, m.algorithm
                );
            }
            Ok(())
        }
        ModelsCommand::Promote { spec, version } => make_current(&load(&spec)?, &version),
        ModelsCommand::Rollback { spec, to } => {
            let spec = load(&spec)?;
            let registry = Registry::open(&spec.paths.registry);
            let target = match to {
                Some(v) => v,
                None => {
                    let Some(current) = registry.current_version()? else { bail!("no version is current yet") };
                    // The newest version before the current one that was published (not one the gate held back).
                    registry
                        .manifests()?
                        .into_iter()
                        .rev()
                        .filter(|m| m.version < current)
                        .find(|m| m.gate.as_ref().is_none_or(|g| g.published))
                        .map(|m| m.version)
                        .with_context(|| format!("no published version older than {current} to roll back to"))?
                }
            };
            make_current(&spec, &target)
        }
    }
}

/// Moves `CURRENT` to a kept version after checking that it loads under this spec.
fn make_current(spec: &Spec, version: &str) -> Result<()> {
    let registry = Registry::open(&spec.paths.registry);
    let _lock = registry.lock()?;
    let published = registry.load(version).with_context(|| format!("cannot make {version} current"))?;
    published.artifact.validate(spec).with_context(|| format!("cannot make {version} current"))?;
    let from = registry.current_version()?;
    registry.set_current(version).with_context(|| format!("cannot make {version} current"))?;
    println!("CURRENT: {} -> {version}", from.as_deref().unwrap_or("(none)"));
    Ok(())
}

/// Exit status of a daemon one of whose threads panicked.
const EXIT_PANIC: i32 = 70;

/// A daemon whose learner, worker or source thread panicked cannot go on as if nothing happened: its health would
/// say live while ingest answers 500 and nothing is archived. It logs the panic and ends, non-zero, so that its
/// supervisor restarts it on its state (which a crash anywhere leaves whole).
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(thread, "{info}; stopping the process (exit status {EXIT_PANIC})");
        std::process::exit(EXIT_PANIC);
    }));
}

fn load(path: &std::path::Path) -> Result<Spec> {
    Ok(Spec::from_file(path)?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn bind(addr: &str, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// Where the speed layer also reads events.
enum Source {
    /// `file:PATH` or `stdin`: NDJSON lines.
    Lines(String),
    /// A NATS JetStream stream.
    Nats(lambda_speed::nats::NatsSource),
}

impl Source {
    fn parse(s: &str) -> Result<Source> {
        if s == "stdin" || s.starts_with("file:") {
            Ok(Source::Lines(s.to_string()))
        } else if s.starts_with("nats://") {
            Ok(Source::Nats(lambda_speed::nats::NatsSource::parse(s).map_err(anyhow::Error::msg)?))
        } else {
            bail!("--source must be `file:PATH`, `stdin` or `nats://HOST:PORT/STREAM`, got {s:?}")
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Lines(s) => s.clone(),
            Source::Nats(n) => n.display(),
        }
    }
}

fn print_source(name: &str, report: &lambda_speed::ingest::SourceReport, seconds: f64) {
    println!(
        "source {name}: {} accepted, {} duplicates, {} rejected in {seconds:.3} s ({:.0} events/s)",
        report.accepted,
        report.duplicates,
        report.rejected,
        (report.accepted + report.duplicates + report.rejected) as f64 / seconds.max(1e-9)
    );
}

fn replay_source(speed: &Speed, source: &str, rate: Option<f64>) -> Result<lambda_speed::ingest::SourceReport> {
    let started = std::time::Instant::now();
    let report = if source == "stdin" {
        lambda_speed::ingest::replay(speed, std::io::stdin().lock(), 1000, rate)?
    } else if let Some(path) = source.strip_prefix("file:") {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open source {path}"))?;
        lambda_speed::ingest::replay(speed, BufReader::new(f), 1000, rate)?
    } else {
        bail!("--source must be `file:PATH` or `stdin`, got {source:?}");
    };
    print_source(source, &report, started.elapsed().as_secs_f64());
    Ok(report)
}

/// Reads the source beside the daemon until `stop` turns true (a file or stdin until its end). A source that fails
/// says why in `failed`, which stops the daemon: events that no longer come in are not a line in a log to miss.
/// (The NATS client reconnects by itself and a pull that breaks is pulled again; what reaches here is final.)
fn spawn_source(
    speed: &Arc<Speed>,
    source: Source,
    rate: Option<f64>,
    stop: tokio::sync::watch::Receiver<bool>,
    failed: tokio::sync::watch::Sender<Option<String>>,
) -> tokio::task::JoinHandle<()> {
    let s = speed.clone();
    let name = source.name();
    let fail = move |e: &dyn std::fmt::Display| {
        let reason = format!("source {name} failed: {e}");
        tracing::error!("{reason}; stopping");
        let _ = failed.send(Some(reason));
    };
    match source {
        Source::Lines(src) => tokio::task::spawn_blocking(move || {
            if let Err(e) = replay_source(&s, &src, rate) {
                fail(&format!("{e:#}"));
            }
        }),
        Source::Nats(n) => tokio::spawn(async move {
            let name = n.display();
            let started = std::time::Instant::now();
            match lambda_speed::nats::consume(s, n, false, stop).await {
                Ok(r) => print_source(&name, &r, started.elapsed().as_secs_f64()),
                Err(e) => fail(&e),
            }
        }),
    }
}

/// Waits for Ctrl-C, SIGTERM or a source's failure.
async fn stop_requested(mut failed: tokio::sync::watch::Receiver<Option<String>>) {
    let failure = async move {
        // A source that ends without failing (or no source at all) drops its sender: nothing to wait for.
        if failed.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = shutdown_signal() => {}
        () = failure => {}
    }
}

/// The daemon's end: an error when a source failed, after the final checkpoint.
fn source_failure(failed: &tokio::sync::watch::Receiver<Option<String>>) -> Result<()> {
    match failed.borrow().clone() {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// Retraining on the fly through the batch layer, in the speed layer's process.
struct BatchRetrainer;

impl lambda_speed::Retrainer for BatchRetrainer {
    fn retrain(
        &self,
        spec: &Spec,
        since_seq: u64,
    ) -> std::result::Result<lambda_speed::Retrained, lambda_speed::RetrainError> {
        let out = lambda_batch::retrain(spec, since_seq)?;
        let reason = out.manifest.gate.as_ref().map(|g| g.reason.clone()).unwrap_or_default();
        Ok(lambda_speed::Retrained { version: out.manifest.version, published: out.published, reason })
    }
}

fn start_speed(spec: &Spec, live: Option<Arc<Live>>) -> Result<Speed> {
    Ok(Speed::start_with(spec.clone(), live, Some(Arc::new(BatchRetrainer)))?)
}

async fn speed(spec: Spec, source: Option<Source>, once: bool, rate: Option<f64>) -> Result<()> {
    if let Some(r) = rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rate must be a positive number of records a second, got {r}");
    }
    let speed = Arc::new(tokio::task::block_in_place(|| start_speed(&spec, None))?);
    if once {
        match &source {
            Some(Source::Lines(src)) => {
                tokio::task::block_in_place(|| replay_source(&speed, src, rate))?;
            }
            Some(Source::Nats(n)) => {
                let started = std::time::Instant::now();
                let (_keep, never) = tokio::sync::watch::channel(false);
                let r = lambda_speed::nats::consume(speed.clone(), n.clone(), true, never).await?;
                print_source(&n.display(), &r, started.elapsed().as_secs_f64());
            }
            None => {}
        }
        // A finite replay ends with every accepted event in the master dataset.
        tokio::task::block_in_place(|| speed.archive_all_blocking())?;
        let speed = Arc::try_unwrap(speed).map_err(|_| anyhow::anyhow!("speed layer still in use"))?;
        tokio::task::block_in_place(|| speed.stop())?;
        return Ok(());
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (failed_tx, failed) = tokio::sync::watch::channel(None);
    let reading = source.map(|src| {
        println!("speed layer: reading {}", src.name());
        spawn_source(&speed, src, rate, rx, failed_tx)
    });
    let listener = bind(&spec.speed.listen, "event ingest").await?;
    println!("speed layer: POST http://{}/v1/events", listener.local_addr()?);
    axum::serve(listener, lambda_speed::http::router(speed.clone()))
        .with_graceful_shutdown(stop_requested(failed.clone()))
        .await?;
    stop_source(tx, reading).await;
    stop(speed).await?;
    source_failure(&failed)
}

/// Stops a NATS consumer after the group in hand (acked once durable); a file replay is left to end.
async fn stop_source(tx: tokio::sync::watch::Sender<bool>, reading: Option<tokio::task::JoinHandle<()>>) {
    let _ = tx.send(true);
    if let Some(task) = reading {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
}

async fn stop(speed: Arc<Speed>) -> Result<()> {
    // In-flight requests hold clones until the server has drained.
    let mut speed = speed;
    for _ in 0..100 {
        match Arc::try_unwrap(speed) {
            Ok(s) => return Ok(tokio::task::block_in_place(|| s.stop())?),
            Err(s) => {
                speed = s;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    bail!("speed layer still busy at shutdown; its last checkpoint stands and the log holds the rest")
}

async fn serve(spec: Spec) -> Result<()> {
    let serving = Serving::new(spec.clone(), None);
    if let Err(e) = serving.reload() {
        tracing::warn!(error = %e, "no model loaded yet; /health/ready stays 503 until one is published");
    }
    tokio::spawn(lambda_serving::reload_loop(serving.clone()));
    let listener = bind(&spec.serving.listen, "serving").await?;
    println!("serving layer: http://{}", listener.local_addr()?);
    axum::serve(listener, lambda_serving::router(serving)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn up(spec: Spec, source: Option<Source>) -> Result<()> {
    let live = Arc::new(Live::empty());
    let speed = Arc::new(tokio::task::block_in_place(|| start_speed(&spec, Some(live.clone())))?);
    let serving = Serving::new(spec.clone(), Some(live));
    serving.reload()?;
    tokio::spawn(lambda_serving::reload_loop(serving.clone()));
    let serve_listener = bind(&spec.serving.listen, "serving").await?;
    let ingest_listener = bind(&spec.speed.listen, "event ingest").await?;
    let (serve_addr, ingest_addr) = (serve_listener.local_addr()?, ingest_listener.local_addr()?);
    let key = example_key(&spec);
    println!("lambda-ml is up ({}).", spec.name);
    println!(
        "  serving:  http://{serve_addr}   (POST /v1/predict, POST /v1/events, GET /v1/views/{{key}}, GET /v1/models, \
         GET /health/ready)"
    );
    println!("  ingest:   http://{ingest_addr}   (POST /v1/events alone, for producers kept apart from readers)");
    println!("Try:");
    println!("  curl -s http://{serve_addr}/v1/views/{key}");
    println!("  curl -s -X POST http://{serve_addr}/v1/events -d '{}'", example_event(&spec, &key));
    println!("  curl -s -X POST http://{serve_addr}/v1/predict -d '{}'", example_record(&spec));
    println!("Ctrl-C stops it (after a final checkpoint).");
    let (source_tx, source_rx) = tokio::sync::watch::channel(false);
    let (failed_tx, failed) = tokio::sync::watch::channel(None);
    let reading = source.map(|src| {
        println!("  source:   {}", src.name());
        spawn_source(&speed, src, None, source_rx, failed_tx)
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    // One base URL for a newcomer's client: the serving address takes events too.
    let ingest = lambda_speed::http::ingest_routes(speed.clone())
        .layer(axum::middleware::from_fn(|r, n| lambda_http::telemetry::track("serving", r, n)));
    let routes = lambda_serving::router_with(serving, Some((ingest, lambda_speed::http::ingest_openapi())));
    let a = axum::serve(serve_listener, routes).with_graceful_shutdown(wait(rx.clone()));
    let b = axum::serve(ingest_listener, lambda_speed::http::router(speed.clone())).with_graceful_shutdown(wait(rx));
    let stopping = failed.clone();
    let signal = async move {
        stop_requested(stopping).await;
        let _ = tx.send(true);
    };
    let (ra, rb, ()) =
        tokio::join!(std::future::IntoFuture::into_future(a), std::future::IntoFuture::into_future(b), signal);
    ra?;
    rb?;
    stop_source(source_tx, reading).await;
    stop(speed).await?;
    source_failure(&failed)
}

fn example_key(spec: &Spec) -> String {
    let path = lambda_stores::views::batch_view_path(
        spec,
        &Registry::open(&spec.paths.registry).current_version().ok().flatten().unwrap_or_default(),
    );
    lambda_stores::views::ViewTable::read_parquet(spec, &path)
        .ok()
        .and_then(|t| t.keys().next().map(str::to_string))
        .unwrap_or_else(|| "user-0001".into())
}

fn example_record(spec: &Spec) -> String {
    let mut o = serde_json::Map::new();
    for f in &spec.features {
        let v = match f.kind {
            lambda_core::spec::FeatureKind::Numeric => serde_json::json!(1.0),
            lambda_core::spec::FeatureKind::Categorical => serde_json::json!("fr"),
            lambda_core::spec::FeatureKind::Boolean => serde_json::json!(true),
        };
        o.insert(f.name.clone(), v);
    }
    serde_json::Value::Object(o).to_string()
}

fn example_event(spec: &Spec, key: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&example_record(spec)).unwrap_or_default();
    let d = &spec.dataset;
    v[&d.id_column] = serde_json::json!("try-1");
    v[&d.key_column] = serde_json::json!(key);
    v[&d.time_column] = serde_json::json!(lambda_stores::registry::now_millis());
    v.to_string()
}

/// `lambda-ml status`: the speed layer's checkpoint, read from disk (no daemon needed).
fn status(spec: &Spec) -> anyhow::Result<()> {
    use lambda_stores::checkpoint::{self, LearnerStatus, WindowStatus, WindowStatuses};
    let Some(c) = checkpoint::read(&spec.paths.state)? else {
        anyhow::bail!("no speed-layer checkpoint in {}; start `lambda-ml speed` first", spec.paths.state.display());
    };
    let w = WindowStatuses::of(c.windows.as_ref(), c.learners.as_ref(), c.blend.as_ref());
    println!(
        "speed layer on batch version {} (watermark {}), last seq {}, {} accepted, {} rejected",
        c.base_version, c.base_watermark, c.last_seq, c.stats.accepted, c.stats.rejected
    );
    let metric = |w: &WindowStatus| {
        let get = |k: &str| w.metrics.get(k).map(|v| format!("{k} {v:.4}"));
        ["accuracy", "log_loss", "auc", "rmse", "mae"].iter().filter_map(|k| get(k)).collect::<Vec<_>>().join(", ")
    };
    let state = |d: &lambda_models::prequential::DetectorStatus| {
        format!("{:?} (since seq {}, {} drifts)", d.state, d.changed_seq, d.drifts).to_lowercase()
    };
    let rows = w
        .speed
        .iter()
        .map(|s| ("speed (linear)".to_string(), s))
        .chain(w.batch.iter().map(|b| ("batch".to_string(), b)))
        .chain(w.learners.iter().map(|(n, s)| (n.clone(), s)))
        .chain(w.blend.iter().map(|b| ("blend".to_string(), b)));
    println!("{:<22} {:>7}  {:<48} {:<34} page-hinkley", "model", "window", "metrics", "adwin");
    for (name, s) in rows {
        let n = s.metrics.get("rows").copied().unwrap_or(0.0);
        println!("{name:<22} {n:>7}  {:<48} {:<34} {}", metric(s), state(&s.adwin), state(&s.page_hinkley));
    }
    for l in LearnerStatus::all(c.learners.as_ref()) {
        let loss = l.prequential_loss.map_or("-".into(), |v| format!("{v:.4}"));
        let metric = match (l.prequential_metric, c.model.classes.is_empty()) {
            (Some(v), false) => format!(", accuracy {v:.4}"),
            (Some(v), true) => format!(", mae {v:.4}"),
            (None, _) => String::new(),
        };
        println!("{}: {} labelled events, mean prequential loss {loss}{metric}, {}", l.name, l.labelled, l.size);
    }
    if let Some(f) = c.learner_file.as_ref().filter(|f| f.seq < c.last_seq && c.learners.is_some()) {
        println!("(the online learners as of seq {}: they are written every few seconds)", f.seq);
    }
    if let Some(b) = &c.blend {
        let weights: Vec<String> =
            b.weights.names.iter().zip(&b.weights.weights).map(|(n, w)| format!("{n} {w:.3}")).collect();
        println!("blend weights over the latest {} events: {}", b.weights.events, weights.join(", "));
        if b.scored > 0 {
            let n = b.scored as f64;
            let record = if b.window.classes.is_empty() {
                format!("mae {:.4}", b.errors / n)
            } else {
                format!("accuracy {:.4}, log_loss {:.4}", 1.0 - b.errors / n, b.loss / n)
            };
            println!("blend since it started: {record} over {} events", b.scored);
        }
    }
    let mut alerts = w.alerts();
    if let Some(q) = &c.quality {
        let r = q.rates();
        println!(
            "input over the latest {} records: rejected {:.3}, out of range {:.3}, unknown labels {:.3}; {} freezes",
            r.records, r.rejected, r.out_of_range, r.unknown_labels, q.freezes
        );
        if let Some(z) = &q.frozen {
            alerts.push(format!("online updates frozen since seq {}: {}", z.since_seq, z.reason));
        }
    }
    if alerts.is_empty() {
        println!("status: ready");
    } else {
        println!("status: degraded ({})", alerts.join("; "));
    }
    Ok(())
}
