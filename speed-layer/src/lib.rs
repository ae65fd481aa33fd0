//! The lambda-ml speed layer: the continuous daemon.
//!
//! Events arrive over HTTP ([`http`]), from a file or from stdin ([`ingest`]); they are parsed and validated on the
//! I/O side, then handed over a crossbeam channel to one learner thread ([`Speed`]) that owns all state
//! ([`learner::Learner`]): it gives each accepted event an ingestion sequence number, appends it to the write-ahead
//! log ([`wal`]) and syncs before acknowledging, predicts then learns (prequential), folds it into the open realtime
//! bucket, and at each checkpoint archives the bucket's events into the master dataset and publishes a
//! [`SpeedSnapshot`](lambda_core::snapshot::SpeedSnapshot) for the serving layer.

pub mod http;
pub mod ingest;
pub mod learner;
pub mod wal;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver, Sender};
use lambda_core::snapshot::Live;
use lambda_core::spec::Spec;

pub use ingest::Incoming;
pub use learner::{IngestReport, Learner};

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
    /// A state file is corrupt beyond a torn last line.
    #[error("{path}: corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The speed layer cannot start or go on.
    #[error("{0}")]
    State(String),
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

type Reply<T> = tokio::sync::oneshot::Sender<std::result::Result<T, String>>;

enum Command {
    Ingest(Vec<Incoming>, Reply<IngestReport>),
    Checkpoint(Reply<()>),
}

/// A running speed layer: one learner thread fed by a channel.
pub struct Speed {
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<Result<()>>>,
    spec: Arc<Spec>,
}

impl Speed {
    /// Opens the state (restoring the last checkpoint and replaying the log) and starts the learner thread.
    /// `live`, when given, receives a fresh snapshot within ~100 ms of each change, for a serving layer in the same
    /// process.
    pub fn start(spec: Spec, live: Option<Arc<Live>>) -> Result<Speed> {
        let spec = Arc::new(spec);
        let learner = Learner::open((*spec).clone())?;
        if let Some(live) = &live {
            live.store(Some(Arc::new(learner.snapshot())));
        }
        let (tx, rx) = crossbeam_channel::bounded(64);
        let interval = spec.checkpoint_interval;
        let thread = std::thread::Builder::new()
            .name("speed-learner".into())
            .spawn(move || run(learner, rx, interval, live))
            .map_err(|e| Error::State(format!("cannot start the learner thread: {e}")))?;
        Ok(Speed { tx: Some(tx), thread: Some(thread), spec })
    }

    /// The spec.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(cmd).ok())
            .ok_or_else(|| Error::State("the speed layer has stopped".into()))
    }

    /// Hands parsed events to the learner; answers once they are durable.
    pub async fn ingest(&self, items: Vec<Incoming>) -> Result<IngestReport> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Ingest(items, reply))?;
        rx.await.map_err(|_| Error::State("the speed layer has stopped".into()))?.map_err(Error::State)
    }

    /// [`Speed::ingest`] for callers outside an async runtime.
    pub fn ingest_blocking(&self, items: Vec<Incoming>) -> Result<IngestReport> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Ingest(items, reply))?;
        rx.blocking_recv().map_err(|_| Error::State("the speed layer has stopped".into()))?.map_err(Error::State)
    }

    /// Archives, checkpoints and publishes now.
    pub fn checkpoint_blocking(&self) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Checkpoint(reply))?;
        rx.blocking_recv().map_err(|_| Error::State("the speed layer has stopped".into()))?.map_err(Error::State)
    }

    /// Stops the learner after a last checkpoint.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        drop(self.tx.take());
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::State("the learner thread panicked".into()))?,
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

/// Most requests whose events share one sync of the log.
const GROUP_COMMIT: usize = 64;

fn run(mut learner: Learner, rx: Receiver<Command>, interval: Duration, live: Option<Arc<Live>>) -> Result<()> {
    let checkpoints = tick(interval);
    let publish = tick(Duration::from_millis(100));
    let mut dirty = false;
    let publish_now = |learner: &Learner| {
        if let Some(live) = &live {
            live.store(Some(Arc::new(learner.snapshot())));
        }
    };
    loop {
        select! {
            recv(rx) -> cmd => match cmd {
                Ok(Command::Ingest(items, reply)) => {
                    // Requests that queued up meanwhile share one sync of the log.
                    let mut group = vec![(items, reply)];
                    let mut deferred = None;
                    while group.len() < GROUP_COMMIT {
                        match rx.try_recv() {
                            Ok(Command::Ingest(items, reply)) => group.push((items, reply)),
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let (requests, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                    match learner.ingest_many(requests) {
                        Ok(reports) => {
                            dirty = true;
                            for (reply, report) in replies.into_iter().zip(reports) {
                                let _ = reply.send(Ok(report));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                    if let Some(Command::Checkpoint(reply)) = deferred {
                        let r = learner.checkpoint().map_err(|e| e.to_string());
                        publish_now(&learner);
                        let _ = reply.send(r);
                    }
                }
                Ok(Command::Checkpoint(reply)) => {
                    let r = learner.checkpoint().map_err(|e| e.to_string());
                    publish_now(&learner);
                    let _ = reply.send(r);
                }
                Err(_) => break,
            },
            recv(checkpoints) -> _ => {
                match learner.poll_batch() {
                    Ok(true) => dirty = true,
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "cannot adopt the new batch model"),
                }
                if learner.needs_checkpoint() {
                    if let Err(e) = learner.checkpoint() {
                        tracing::error!(error = %e, "checkpoint failed; retrying at the next tick");
                    }
                }
            },
            recv(publish) -> _ => {
                if dirty {
                    publish_now(&learner);
                    dirty = false;
                }
            },
        }
    }
    learner.checkpoint()?;
    if let Some(live) = &live {
        live.store(Some(Arc::new(learner.snapshot())));
    }
    tracing::info!(last_seq = learner.last_seq(), "speed layer stopped after a final checkpoint");
    Ok(())
}
