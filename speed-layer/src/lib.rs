//! The lambda-ml speed layer: the continuous daemon.
//!
//! Events arrive over HTTP ([`http`]), from a file or from stdin ([`ingest`]); they are parsed and validated off
//! the async workers (at most `speed.max_parsing` bodies at once), then handed over a crossbeam channel to one
//! learner thread ([`Speed`]) that owns all state ([`stages::Learner`], its stages in [`stages`]). At most `speed.max_queued` requests wait
//! there; beyond that a request waits asynchronously up to `speed.ingest_wait` and is then answered 503 with
//! `Retry-After`. The learner gives each accepted event an ingestion sequence number, appends it to the log
//! and syncs before acknowledging, predicts then learns (prequential), and folds it into the realtime
//! view, which an in-process serving layer reads in place. Every `speed.checkpoint_interval` it archives what is
//! due into the master dataset, flushes de-duplication runs and checkpoints what changed.

pub mod http;
pub mod ingest;
pub mod nats;
pub mod retrain;
pub mod stages;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver, Sender, TrySendError};
use lambda_core::spec::Spec;
use lambda_stores::checkpoint::Live;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use ingest::Incoming;
pub use retrain::{RetrainError, Retrained, Retrainer};
pub use stages::{IngestReport, Learner, Status};

/// Result with the speed [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the speed layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared core.
    #[error(transparent)]
    Core(#[from] lambda_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A state file is corrupt beyond a torn tail.
    #[error("{path}: corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The state folder holds the state of an earlier lambda-ml, which this one does not read.
    #[error(
        "{0} holds the state of an earlier lambda-ml (checkpoints/, wal.ndjson). That version archived every \
         accepted event into the master dataset at each checkpoint, so once its daemon has stopped cleanly (SIGTERM, \
         or `speed --once`) move that folder away: this version starts from the master dataset and keeps its state \
         in log/, checkpoint/ and dedup/"
    )]
    EarlierState(PathBuf),
    /// No batch model is published to warm-start from.
    #[error("no batch model is published in {registry}; run `lambda-ml batch --spec {spec}` first")]
    NoModel {
        /// The registry.
        registry: PathBuf,
        /// The spec to run the batch layer with.
        spec: PathBuf,
    },
    /// The batch version the checkpoint is built on cannot be loaded.
    #[error("the checkpoint is built on batch version {version}: {source}")]
    Base {
        /// The version.
        version: String,
        /// Why it cannot be loaded.
        #[source]
        source: lambda_core::Error,
    },
    /// A batch version to adopt covers events this speed layer did not write.
    #[error(
        "batch version {version} has watermark {watermark}, past the last event this speed layer accepted \
         ({last_seq}): the master dataset holds events from another writer; staying on {current}"
    )]
    AheadOfLog {
        /// The version.
        version: String,
        /// Its watermark.
        watermark: u64,
        /// The last event accepted here.
        last_seq: u64,
        /// The version the state stays on.
        current: String,
    },
    /// A thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// A part of the speed layer has stopped and takes no more work.
    #[error("the {0} has stopped")]
    Stopped(&'static str),
    /// The NATS server or stream failed.
    #[error("{what} ({stream}): {source}")]
    Nats {
        /// What was being done.
        what: String,
        /// The stream, as `nats://host/stream`.
        stream: String,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The speed layer's own state disagrees with itself (a bug: nothing was written).
    #[error("{0}")]
    Inconsistent(String),
    /// A failure on the learner thread, as each caller of the group it failed receives it.
    #[error(transparent)]
    Learner(Arc<Error>),
    /// The learner is behind: retry later.
    #[error("the speed layer is busy: {0}")]
    Busy(String),
    /// Events could not be made durable (a full or failing disk); nothing of the request was accepted.
    #[error("cannot make the events durable, nothing was accepted: {0}")]
    Storage(Arc<Error>),
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Whether the error comes from storage (full disk, failing device).
    pub fn is_storage(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Core(lambda_core::Error::Io { .. }) | Error::Storage(_) => true,
            Error::Learner(e) => e.is_storage(),
            _ => false,
        }
    }

    /// The cause an error crossing from the learner thread wraps (itself otherwise).
    pub fn cause(&self) -> &Error {
        match self {
            Error::Storage(e) | Error::Learner(e) => e.cause(),
            e => e,
        }
    }
}

/// An error as it crosses from the learner thread to its callers: the same cause to each, its kind kept.
fn crossing(e: Error) -> Error {
    shared(Arc::new(e))
}

fn shared(e: Arc<Error>) -> Error {
    if e.is_storage() {
        Error::Storage(e)
    } else {
        Error::Learner(e)
    }
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T>>;

enum Command {
    Ingest(Vec<Incoming>, Reply<IngestReport>, Option<OwnedSemaphorePermit>),
    Checkpoint(Reply<()>),
    ArchiveAll(Reply<()>),
}

/// A running speed layer: one learner thread fed by a channel.
pub struct Speed {
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<Result<()>>>,
    spec: Arc<Spec>,
    queue: Arc<Semaphore>,
    parsing: Arc<Semaphore>,
    status: Arc<arc_swap::ArcSwap<Status>>,
}

/// Most requests whose events share one sync of the log.
const GROUP_COMMIT: usize = 64;
/// Room in the channel for callers outside the async runtime (file and stdin replays), beyond `max_queued`.
const BLOCKING_ROOM: usize = 16;

fn stopped() -> Error {
    Error::Stopped("speed layer")
}

impl Speed {
    /// Opens the state (restoring the last checkpoint and replaying the log) and starts the learner thread.
    /// `live`, when given, receives the served pair (batch and speed side of one version), which an in-process
    /// serving layer reads; the learner updates it in place, so an acknowledged event is visible at once.
    pub fn start(spec: Spec, live: Option<Arc<Live>>) -> Result<Speed> {
        Speed::start_with(spec, live, None)
    }

    /// [`Speed::start`] with what runs the batch pipeline after a confirmed drift ([`retrain`]).
    pub fn start_with(spec: Spec, live: Option<Arc<Live>>, retrainer: Option<Arc<dyn Retrainer>>) -> Result<Speed> {
        let spec = Arc::new(spec);
        let mut learner = Learner::open((*spec).clone(), live)?;
        if let Some(r) = retrainer {
            learner.set_retrainer(r);
        }
        learner.work_in_background()?;
        let status = Arc::new(arc_swap::ArcSwap::from_pointee(learner.status()));
        let (tx, rx) = crossbeam_channel::bounded(spec.speed.max_queued + BLOCKING_ROOM);
        let interval = spec.checkpoint_interval;
        let published = status.clone();
        let thread = std::thread::Builder::new()
            .name("speed-learner".into())
            .spawn(move || run(learner, rx, interval, published))
            .map_err(|source| Error::Spawn { name: "learner", source })?;
        Ok(Speed {
            tx: Some(tx),
            thread: Some(thread),
            queue: Arc::new(Semaphore::new(spec.speed.max_queued)),
            parsing: Arc::new(Semaphore::new(spec.speed.max_parsing)),
            status,
            spec,
        })
    }

    /// What the learner last reported about itself (refreshed every `speed.checkpoint_interval`).
    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// Requests waiting for the learner: how far behind it is.
    pub fn queued(&self) -> usize {
        self.spec.speed.max_queued.saturating_sub(self.queue.available_permits())
    }

    /// Sets the speed layer's state in the Prometheus metrics (see `lambda_http::telemetry`).
    pub fn collect_metrics(&self) {
        use lambda_http::telemetry as t;
        let s = self.status();
        for (outcome, n) in [("accepted", s.accepted), ("rejected", s.rejected), ("duplicate", s.duplicates)] {
            metrics::counter!("lambda_speed_events_total", "outcome" => outcome).absolute(n);
        }
        metrics::gauge!("lambda_speed_last_seq").set(s.last_seq as f64);
        metrics::gauge!("lambda_speed_archived_through").set(s.archived_through as f64);
        metrics::gauge!("lambda_speed_learner_queue").set(self.queued() as f64);
        metrics::counter!("lambda_speed_checkpoints_total").absolute(s.checkpoints);
        metrics::gauge!("lambda_speed_log_bytes").set(s.log_bytes as f64);
        metrics::gauge!("lambda_speed_realtime_keys").set(s.keys as f64);
        metrics::gauge!("lambda_speed_frozen").set(if s.frozen.is_some() { 1.0 } else { 0.0 });
        metrics::counter!("lambda_speed_freezes_total").absolute(s.freezes);
        if let Some(b) = s.resident_bytes {
            metrics::gauge!("lambda_speed_resident_bytes").set(b as f64);
        }
        t::set_model_version("speed", &s.base_version);
        t::set_prequential_loss("speed", s.speed_loss);
        t::set_prequential_loss("batch", s.batch_loss);
        for l in &s.learners {
            t::set_prequential_loss(&l.name, l.prequential_loss);
        }
        t::set_windows(&s.windows);
    }

    /// The spec.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    fn sender(&self) -> Result<&Sender<Command>> {
        self.tx.as_ref().ok_or_else(stopped)
    }

    /// Parses and validates a request body off the async workers, at most `speed.max_parsing` at once.
    pub async fn parse(&self, body: String) -> Result<std::result::Result<Vec<Incoming>, String>> {
        let wait = self.spec.ingest_wait;
        let permit = match tokio::time::timeout(wait, self.parsing.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(Error::Busy(format!("{} bodies are being parsed", self.spec.speed.max_parsing))),
        };
        let spec = self.spec.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            ingest::parse_body(&spec, &body)
        })
        .await
        .map_err(|_| Error::Panicked("parsing"))?;
        Ok(parsed)
    }

    /// Hands parsed events to the learner; answers once they are durable and applied. Waits asynchronously for
    /// room at the learner up to `speed.ingest_wait`, then fails with [`Error::Busy`].
    pub async fn ingest(&self, items: Vec<Incoming>) -> Result<IngestReport> {
        let wait = self.spec.ingest_wait;
        let permit = match tokio::time::timeout(wait, self.queue.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => {
                return Err(Error::Busy(format!("{} requests are waiting for the learner", self.spec.speed.max_queued)))
            }
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.sender()?.try_send(Command::Ingest(items, reply, Some(permit))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Busy("the learner's queue is full".into())),
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        rx.await.map_err(|_| stopped())?
    }

    /// [`Speed::ingest`] for callers outside an async runtime: waits for room as long as it takes.
    pub fn ingest_blocking(&self, items: Vec<Incoming>) -> Result<IngestReport> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.sender()?.send(Command::Ingest(items, reply, None)).map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    /// Checkpoints now.
    pub fn checkpoint_blocking(&self) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.sender()?.send(Command::Checkpoint(reply)).map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    /// Archives every logged event into the master dataset and checkpoints (the end of a finite replay).
    pub fn archive_all_blocking(&self) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.sender()?.send(Command::ArchiveAll(reply)).map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    /// Stops the learner after a last checkpoint.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        drop(self.tx.take());
        self.queue.close();
        self.parsing.close();
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::Panicked("learner"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Speed {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "speed layer shutdown");
        }
    }
}

fn run(
    mut learner: Learner,
    rx: Receiver<Command>,
    interval: Duration,
    status: Arc<arc_swap::ArcSwap<Status>>,
) -> Result<()> {
    let ticks = tick(interval);
    let mut failing = false;
    loop {
        select! {
            recv(rx) -> cmd => match cmd {
                Ok(Command::Ingest(items, reply, permit)) => {
                    // Requests that queued up meanwhile share one sync of the log.
                    let mut group = vec![(items, reply, permit)];
                    let mut deferred = None;
                    while group.len() < GROUP_COMMIT {
                        match rx.try_recv() {
                            Ok(Command::Ingest(items, reply, permit)) => group.push((items, reply, permit)),
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut requests = Vec::with_capacity(group.len());
                    let mut replies = Vec::with_capacity(group.len());
                    for (items, reply, permit) in group {
                        requests.push(items);
                        replies.push((reply, permit));
                    }
                    match learner.ingest_many(requests) {
                        Ok(reports) => {
                            if failing {
                                tracing::info!("events are durable again");
                                failing = false;
                            }
                            for ((reply, _permit), report) in replies.into_iter().zip(reports) {
                                let _ = reply.send(Ok(report));
                            }
                        }
                        Err(e) => {
                            if !failing {
                                tracing::error!(error = %e, "cannot accept events; answering 503 until it works again");
                                failing = true;
                            }
                            let e = Arc::new(e);
                            for (reply, _permit) in replies {
                                let _ = reply.send(Err(shared(e.clone())));
                            }
                        }
                    }
                    if let Some(cmd) = deferred {
                        other(&mut learner, cmd);
                    }
                }
                Ok(cmd) => other(&mut learner, cmd),
                Err(_) => break,
            },
            recv(ticks) -> _ => {
                if let Err(e) = learner.tick() {
                    tracing::error!(error = %e, "checkpoint or archive failed; retrying at the next tick");
                }
                status.store(Arc::new(learner.status()));
            },
        }
    }
    // A retraining in progress is waited for (its time budget bounds it) and what it published adopted.
    if let Err(e) = learner.finish_retraining() {
        tracing::error!(error = %e, "retraining on the fly did not finish");
    }
    learner.checkpoint_whole()?;
    tracing::info!(last_seq = learner.last_seq(), "speed layer stopped after a final checkpoint");
    Ok(())
}

fn other(learner: &mut Learner, cmd: Command) {
    match cmd {
        Command::Checkpoint(reply) => {
            let _ = reply.send(learner.checkpoint_whole().map(|_| ()).map_err(crossing));
        }
        Command::ArchiveAll(reply) => {
            let r = learner.archive_all().map_err(crossing);
            let _ = reply.send(r);
        }
        Command::Ingest(items, reply, _permit) => {
            let _ = reply.send(learner.ingest(items).map_err(crossing));
        }
    }
}
