//! Housekeeping off the learner thread: writing archive files, compacting realtime view files and merging id runs.
//! Each reads only files that stay put until the learner has taken the result (log segments wait for the archive,
//! view files and id runs for the checkpoint that drops them), so ingest goes on while they run. One job of each kind
//! at a time.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use lambda_core::spec::Spec;
use lambda_stores::checkpoint::ViewFile;
use lambda_stores::views::ViewTable;

use super::archive::{self, Sealed};
use super::dedup::{MergePlan, Merged};
use super::log::LogView;
use crate::{Error, Result};

/// Work for the thread.
pub enum Job {
    /// Write the logged events `after+1 ..= through` as an archive file.
    Archive {
        /// The pipeline.
        spec: Arc<Spec>,
        /// The log as it stood.
        log: LogView,
        /// Last archived sequence number.
        after: u64,
        /// Last sequence number to archive.
        through: u64,
    },
    /// Merge a full view file and its deltas into one full file.
    Compact {
        /// The state folder.
        state: PathBuf,
        /// Realtime generation of the files.
        generation: u64,
        /// Features and class order.
        template: Box<ViewTable>,
        /// The full file, then the deltas after it.
        files: Vec<ViewFile>,
    },
    /// Merge two neighbouring id runs.
    Merge(MergePlan),
}

/// What the thread did.
pub enum Done {
    /// An archive job's outcome.
    Archived(Result<Option<Sealed>>, f64),
    /// A compaction's outcome, with the generation and files it merged.
    Compacted(Result<ViewFile>, u64, Vec<ViewFile>, f64),
    /// A merge of id runs.
    Merged(Result<Merged>, f64),
}

/// The housekeeping thread.
pub struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    waiting: VecDeque<Done>,
    archiving: bool,
    compacting: bool,
    merging: bool,
}

fn run(job: Job) -> Done {
    let started = std::time::Instant::now();
    match job {
        Job::Archive { spec, log, after, through } => {
            let r = archive::seal(&spec, &log, after, through);
            Done::Archived(r, started.elapsed().as_secs_f64())
        }
        Job::Compact { state, generation, template, files } => {
            let r = super::checkpoint_files::compact(&state, generation, &template, &files).map_err(Error::from);
            Done::Compacted(r, generation, files, started.elapsed().as_secs_f64())
        }
        Job::Merge(plan) => Done::Merged(plan.run(), started.elapsed().as_secs_f64()),
    }
}

impl Worker {
    /// Starts the thread.
    pub fn start() -> Result<Worker> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(2);
        let (tx, done) = crossbeam_channel::bounded(2);
        let thread = std::thread::Builder::new()
            .name("speed-worker".into())
            .spawn(move || {
                for job in rx {
                    if tx.send(run(job)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Spawn { name: "worker", source })?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            waiting: VecDeque::new(),
            archiving: false,
            compacting: false,
            merging: false,
        })
    }

    /// Whether an archive file is being written.
    pub fn archiving(&self) -> bool {
        self.archiving
    }

    /// Whether view files are being compacted.
    pub fn compacting(&self) -> bool {
        self.compacting
    }

    /// Whether id runs are being merged.
    pub fn merging(&self) -> bool {
        self.merging
    }

    /// Hands over a job (at most one of each kind at a time).
    pub fn submit(&mut self, job: Job) -> Result<()> {
        let flag = match &job {
            Job::Archive { .. } => &mut self.archiving,
            Job::Compact { .. } => &mut self.compacting,
            Job::Merge(_) => &mut self.merging,
        };
        *flag = true;
        let jobs = self.jobs.as_ref().ok_or(Error::Stopped("worker"))?;
        jobs.send(job).map_err(|_| Error::Stopped("worker"))
    }

    fn note(&mut self, d: &Done) {
        match d {
            Done::Archived(..) => self.archiving = false,
            Done::Compacted(..) => self.compacting = false,
            Done::Merged(..) => self.merging = false,
        }
    }

    /// Finished jobs, oldest first.
    pub fn finished(&mut self) -> Vec<Done> {
        let mut out: Vec<Done> = self.waiting.drain(..).collect();
        while let Ok(d) = self.done.try_recv() {
            self.note(&d);
            out.push(d);
        }
        out
    }

    /// Finished compactions and merges only; an archive result waits for [`Worker::finished`].
    pub fn finished_compactions(&mut self) -> Vec<Done> {
        while let Ok(d) = self.done.try_recv() {
            self.note(&d);
            self.waiting.push_back(d);
        }
        let (compacted, rest): (VecDeque<Done>, VecDeque<Done>) =
            self.waiting.drain(..).partition(|d| !matches!(d, Done::Archived(..)));
        self.waiting = rest;
        compacted.into_iter().collect()
    }

    /// Waits for the archive job in hand, keeping any other result for [`Worker::finished`].
    pub fn wait_archive(&mut self) -> Option<Done> {
        if let Some(i) = self.waiting.iter().position(|d| matches!(d, Done::Archived(..))) {
            return self.waiting.remove(i);
        }
        while self.archiving {
            let d = self.done.recv().ok()?;
            self.note(&d);
            if matches!(d, Done::Archived(..)) {
                return Some(d);
            }
            self.waiting.push_back(d);
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The job in hand is finished (a file is whole or absent), then the thread ends.
        drop(self.jobs.take());
        while self.done.recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
