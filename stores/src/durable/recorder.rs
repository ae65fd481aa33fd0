//! A disk that loses power when a test says so.
//!
//! Installed over a folder, a [`Recorder`] stands in for the disk for every sync under it: a file's sync records
//! its content as durable, a folder's sync records its entries (name and inode) as durable, and nothing else is.
//! [`Recorder::cut`] then does what a power loss does. Every folder goes back to its durable entries: what was
//! created or renamed in it since its last sync is undone, and a folder never synced since it was made is empty
//! (and gone, when its parent's entry for it was not synced either). A removal since the last sync is undone or
//! kept, at random for each entry removed (the file system may have written it out on its own): so a folder
//! removed with its content without a sync may come back with part of its content. Every file goes back to its durable
//! content, except that a file whose content only grew since keeps, at random, none of the growth, all of it, or
//! a prefix torn at a random byte, sometimes followed by zeros (the size reached the disk, the data did not).
//! Everything under the folder when the recorder is installed, and after each cut, counts as durable.
//!
//! Files and folders are known by inode, since a rename moves an inode from one name to another; an inode named
//! by several synced folders lives where the latest of those syncs put it. The recorder keeps every inode it
//! knows open, so that its number is not given to a new file meanwhile.
//!
//! A sync can also stand for a crash: [`Recorder::crash_after`] makes the n-th sync from then on (and
//! [`Recorder::crash_at`] a site's next one) panic with [`PowerCut`] instead of syncing, after which no sync
//! reaches the disk until the test has cut the power (the process is gone: what its unwinding writes is lost too).
//! [`Recorder::fail_once`] makes a site's next sync fail, before or after its data reached the disk. A skipped
//! site (`POWER_LOSS_SKIP=site,site` in the environment when the recorder is installed, or [`Recorder::skip`])
//! neither syncs nor records: this is how a test shows that removing that sync loses data. A site missing from
//! [`super::SITES`] fails its syncs, so that the list stays whole.
//!
//! Linux only: a file's sync finds the file's name and content through `/proc/self/fd`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Whether a recorder is installed: the only thing a sync looks at otherwise.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The installed recorder's disk.
static DISK: Mutex<Option<Disk>> = Mutex::new(None);
/// Held by the installed recorder: one at a time per process.
static SERIAL: Mutex<()> = Mutex::new(());

/// The panic payload of a crash the recorder caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerCut {
    /// The site whose sync did not happen.
    pub site: &'static str,
}

/// The [`PowerCut`] a caught panic carries, if it is one.
pub fn power_cut(payload: &(dyn std::any::Any + Send)) -> Option<&PowerCut> {
    payload.downcast_ref::<PowerCut>()
}

/// Keeps the crashes a recorder causes out of the test output; other panics are reported as before.
pub fn quiet_power_cuts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if power_cut(info.payload()).is_none() {
                previous(info);
            }
        }));
    });
}

/// The sites `POWER_LOSS_SKIP` names (comma-separated): a recorder skips them.
pub fn skipped_by_environment() -> Vec<String> {
    let names = std::env::var("POWER_LOSS_SKIP").unwrap_or_default();
    names.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The installed recorder; dropping it uninstalls it.
pub struct Recorder {
    _serial: MutexGuard<'static, ()>,
}

/// What an installed recorder knows of one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    ino: u64,
    dir: bool,
}

/// A folder's entries as its last sync left them, and when that was.
struct Listing {
    order: u64,
    entries: BTreeMap<OsString, Entry>,
}

/// What a power loss would leave of one thing.
enum Node {
    Dir(Vec<(OsString, Node)>),
    File(Vec<u8>),
}

#[derive(Default)]
struct Disk {
    root: PathBuf,
    root_ino: u64,
    /// Every inode known, open.
    open: HashMap<u64, File>,
    /// Durable content of files.
    files: HashMap<u64, Vec<u8>>,
    /// Durable entries of folders.
    dirs: HashMap<u64, Listing>,
    /// Folder syncs so far: which of two listings is the later.
    order: u64,
    /// Syncs so far (skipped ones not counted).
    syncs: u64,
    /// Syncs per site, skipped ones too.
    seen: BTreeMap<&'static str, u64>,
    crash_in: Option<u64>,
    crash_at: Option<&'static str>,
    /// Sites whose next sync fails, and whether it wrote first.
    fail: Vec<(&'static str, bool)>,
    skip: Vec<String>,
    /// After a crash, until the cut.
    off: bool,
}

/// What a sync under the root does.
enum Step {
    /// Record, then fail when asked to.
    Record {
        fail: Option<bool>,
    },
    Nothing,
    Crash(PowerCut),
    /// A site missing from [`super::SITES`]: an error, so that the list stays whole.
    Unlisted,
}

/// What a failed sync answers.
const EIO: i32 = 5;

fn disk() -> MutexGuard<'static, Option<Disk>> {
    DISK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The whole content of a file, whatever its position.
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; file.metadata()?.len() as usize];
    let mut at = 0;
    while at < out.len() {
        match file.read_at(&mut out[at..], at as u64)? {
            0 => break,
            n => at += n,
        }
    }
    out.truncate(at);
    Ok(out)
}

/// SplitMix64: the cut's choices from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below.max(1)
    }
}

impl Disk {
    /// Everything under `root` as it is now, all durable.
    fn snapshot(root: &Path) -> io::Result<Disk> {
        let mut disk = Disk { root: root.to_path_buf(), ..Disk::default() };
        let top = disk.know(root)?;
        disk.root_ino = top.ino;
        disk.take(root, top)?;
        Ok(disk)
    }

    fn take(&mut self, path: &Path, entry: Entry) -> io::Result<()> {
        if entry.dir {
            let entries = self.list(path)?;
            for (name, child) in &entries {
                self.take(&path.join(name), *child)?;
            }
            self.dirs.insert(entry.ino, Listing { order: 0, entries });
        } else {
            let content = read_all(&self.open[&entry.ino])?;
            self.files.insert(entry.ino, content);
        }
        Ok(())
    }

    /// Opens what `path` names, once per inode.
    fn know(&mut self, path: &Path) -> io::Result<Entry> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let entry = Entry { ino: meta.ino(), dir: meta.is_dir() };
        self.open.entry(entry.ino).or_insert(file);
        Ok(entry)
    }

    fn list(&mut self, path: &Path) -> io::Result<BTreeMap<OsString, Entry>> {
        let mut entries = BTreeMap::new();
        for e in fs::read_dir(path)? {
            let name = e?.file_name();
            let entry = self.know(&path.join(&name))?;
            entries.insert(name, entry);
        }
        Ok(entries)
    }

    fn step(&mut self, site: &'static str) -> Step {
        // `test.` sites are this module's own tests'.
        if !super::SITES.contains(&site) && !site.starts_with("test.") {
            return Step::Unlisted;
        }
        if self.off {
            return Step::Nothing;
        }
        *self.seen.entry(site).or_default() += 1;
        if self.skip.iter().any(|s| s == site) {
            return Step::Nothing;
        }
        self.syncs += 1;
        let due = match self.crash_in {
            Some(n) => {
                self.crash_in = (n > 1).then(|| n - 1);
                n <= 1
            }
            None => false,
        };
        if due || self.crash_at == Some(site) {
            (self.crash_in, self.crash_at, self.off) = (None, None, true);
            return Step::Crash(PowerCut { site });
        }
        let fail = self.fail.iter().position(|(s, _)| *s == site).map(|i| self.fail.remove(i).1);
        Step::Record { fail }
    }

    /// Everything as it is now, durable; what was counted and asked for stays.
    fn settle(&mut self) -> io::Result<()> {
        let mut fresh = Disk::snapshot(&self.root)?;
        fresh.syncs = self.syncs;
        fresh.seen = std::mem::take(&mut self.seen);
        fresh.skip = std::mem::take(&mut self.skip);
        fresh.fail = std::mem::take(&mut self.fail);
        (fresh.crash_in, fresh.crash_at) = (self.crash_in, self.crash_at);
        *self = fresh;
        Ok(())
    }

    /// What the power loss leaves of the folder `dir`.
    fn after_cut(
        &self,
        dir: u64,
        home: &HashMap<u64, (u64, u64, &OsString)>,
        rng: &mut Rng,
        depth: usize,
    ) -> io::Result<Vec<(OsString, Node)>> {
        let mut out = Vec::new();
        let Some(listing) = self.dirs.get(&dir) else { return Ok(out) };
        if depth > 64 {
            return Err(io::Error::other("folders nested more than 64 deep: a cycle of renamed folders?"));
        }
        for (name, e) in &listing.entries {
            if home.get(&e.ino).is_none_or(|&(_, d, n)| d != dir || n != name) {
                continue;
            }
            if self.removed(dir, name, e.ino)? && rng.next(2) == 0 {
                continue;
            }
            let node = if e.dir {
                Node::Dir(self.after_cut(e.ino, home, rng, depth + 1)?)
            } else {
                Node::File(self.file_after_cut(e.ino, rng)?)
            };
            out.push((name.clone(), node));
        }
        Ok(out)
    }

    /// Whether `name` in the folder `dir` was removed: the name is gone and its inode is named nowhere. (A name
    /// renamed over is not a removal: the rename is undone as a whole.)
    fn removed(&self, dir: u64, name: &OsString, ino: u64) -> io::Result<bool> {
        let (Some(d), Some(f)) = (self.open.get(&dir), self.open.get(&ino)) else { return Ok(false) };
        let now = Path::new("/proc/self/fd").join(d.as_raw_fd().to_string()).join(name);
        Ok(f.metadata()?.nlink() == 0 && fs::symlink_metadata(now).is_err())
    }

    fn file_after_cut(&self, ino: u64, rng: &mut Rng) -> io::Result<Vec<u8>> {
        let mut durable = self.files.get(&ino).cloned().unwrap_or_default();
        let now = match self.open.get(&ino) {
            Some(f) => read_all(f)?,
            None => return Ok(durable),
        };
        if now.len() > durable.len() && now.starts_with(&durable) {
            let tail = (now.len() - durable.len()) as u64;
            let kept = match rng.next(3) {
                0 => 0,
                1 => tail,
                _ => rng.next(tail),
            };
            let end = durable.len() + kept as usize;
            durable.extend_from_slice(&now[durable.len()..end]);
            if kept < tail && rng.next(4) == 0 {
                durable.resize(end + 1 + rng.next(tail - kept) as usize, 0);
            }
        }
        Ok(durable)
    }

    fn write(path: &Path, nodes: Vec<(OsString, Node)>) -> io::Result<()> {
        for (name, node) in nodes {
            let p = path.join(name);
            match node {
                Node::Dir(children) => {
                    fs::create_dir(&p)?;
                    Disk::write(&p, children)?;
                }
                Node::File(bytes) => fs::write(&p, bytes)?,
            }
        }
        Ok(())
    }
}

/// Called by [`super::sync_file`]: `None` when no recorder is installed or the file is not under its folder.
pub(super) fn file_synced(file: &File, site: &'static str) -> Option<io::Result<()>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let mut guard = disk();
    let disk = guard.as_mut()?;
    // An unlinked file's name ends in " (deleted)"; still under the folder.
    if !fs::read_link(&fd).ok()?.starts_with(&disk.root) {
        return None;
    }
    step(guard, site, |disk| {
        let own = File::open(&fd)?;
        let ino = own.metadata()?.ino();
        let content = read_all(&own)?;
        disk.open.entry(ino).or_insert(own);
        disk.files.insert(ino, content);
        Ok(())
    })
}

/// Called by [`super::sync_dir`], as [`file_synced`].
pub(super) fn dir_synced(path: &Path, site: &'static str) -> Option<io::Result<()>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let path = fs::canonicalize(path).ok()?;
    let mut guard = disk();
    let disk = guard.as_mut()?;
    if !path.starts_with(&disk.root) {
        return None;
    }
    step(guard, site, |disk| {
        let dir = disk.know(&path)?;
        let entries = disk.list(&path)?;
        disk.order += 1;
        disk.dirs.insert(dir.ino, Listing { order: disk.order, entries });
        Ok(())
    })
}

/// Takes the step `site` is at: nothing, an error, the cut (a panic the harness catches), or `record` of what the
/// sync made durable, then its report (a failed sync may have reached the disk; its caller must not count on it).
fn step(
    mut guard: MutexGuard<'static, Option<Disk>>,
    site: &'static str,
    record: impl FnOnce(&mut Disk) -> io::Result<()>,
) -> Option<io::Result<()>> {
    let disk = guard.as_mut()?;
    let fail = match disk.step(site) {
        Step::Nothing => return Some(Ok(())),
        Step::Unlisted => return Some(Err(io::Error::other(format!("sync site {site:?} is not in durable::SITES")))),
        Step::Crash(cut) => {
            drop(guard);
            std::panic::panic_any(cut);
        }
        Step::Record { fail: Some(false) } => return Some(Err(io::Error::from_raw_os_error(EIO))),
        Step::Record { fail } => fail.is_some(),
    };
    Some(record(disk).and_then(|()| if fail { Err(io::Error::from_raw_os_error(EIO)) } else { Ok(()) }))
}

impl Recorder {
    /// Installs a recorder over `root` (an existing folder), waiting for any other one in the process to go.
    pub fn install(root: &Path) -> io::Result<Recorder> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let mut d = Disk::snapshot(&fs::canonicalize(root)?)?;
        d.skip = skipped_by_environment();
        *disk() = Some(d);
        ACTIVE.store(true, Ordering::Release);
        Ok(Recorder { _serial: serial })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> T {
        let mut guard = disk();
        match guard.as_mut() {
            Some(d) => f(d),
            None => unreachable!("a recorder's disk lives as long as the recorder"),
        }
    }

    /// The `n`-th sync from now on (1: the next) crashes instead.
    pub fn crash_after(&self, n: u64) {
        self.with(|d| d.crash_in = Some(n.max(1)));
    }

    /// The next sync at `site` crashes instead.
    pub fn crash_at(&self, site: &'static str) {
        self.with(|d| d.crash_at = Some(site));
    }

    /// The next sync at `site` fails (EIO); with `written`, after its data reached the disk, as a failed sync may
    /// have written some or all of it.
    pub fn fail_once(&self, site: &'static str, written: bool) {
        self.with(|d| d.fail.push((site, written)));
    }

    /// Syncs at `site` are neither done nor recorded from now on.
    pub fn skip(&self, site: &str) {
        self.with(|d| d.skip.push(site.to_string()));
    }

    /// Whether a crash has happened that the power was not yet cut for.
    pub fn crashed(&self) -> bool {
        self.with(|d| d.off)
    }

    /// Syncs under the folder so far (not the skipped ones).
    pub fn syncs(&self) -> u64 {
        self.with(|d| d.syncs)
    }

    /// Syncs so far per site, skipped ones included.
    pub fn seen(&self) -> BTreeMap<&'static str, u64> {
        self.with(|d| d.seen.clone())
    }

    /// Cuts the power: the folder keeps only what is durable (and torn tails, drawn from `seed`), which is then
    /// all durable; crashes and failures asked for are forgotten. Nothing may hold a file under the folder open:
    /// the process that did is gone.
    pub fn cut(&self, seed: u64) -> io::Result<()> {
        let mut guard = disk();
        let Some(d) = guard.as_mut() else { unreachable!("a recorder's disk lives as long as the recorder") };
        // Each inode lives where the latest folder sync that names it put it.
        let mut home: HashMap<u64, (u64, u64, &OsString)> = HashMap::new();
        for (dir, listing) in &d.dirs {
            for (name, e) in &listing.entries {
                let here = (listing.order, *dir, name);
                if home.get(&e.ino).is_none_or(|h| (h.0, h.2) < (here.0, here.2)) {
                    home.insert(e.ino, here);
                }
            }
        }
        let tree = d.after_cut(d.root_ino, &home, &mut Rng(seed), 0)?;
        let root = d.root.clone();
        for e in fs::read_dir(&root)? {
            let p = e?.path();
            if p.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
        Disk::write(&root, tree)?;
        // What was asked of the process that lost power goes with it.
        (d.crash_in, d.crash_at) = (None, None);
        d.fail.clear();
        d.settle()
    }

    /// Counts everything under the folder as durable from now on, as at installation: what a test sets up before
    /// the part it tests.
    pub fn settle(&self) -> io::Result<()> {
        let mut guard = disk();
        let Some(d) = guard.as_mut() else { unreachable!("a recorder's disk lives as long as the recorder") };
        d.settle()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Release);
        *disk() = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::durable::{sync_dir, sync_file};
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) -> File {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// Whether `got` is what a power loss may leave of `written` when none of it was synced.
    fn torn_of(got: &[u8], written: &[u8]) -> bool {
        let kept = got.iter().take_while(|b| **b != 0).count();
        written.starts_with(&got[..kept]) && got[kept..].iter().all(|b| *b == 0) && got.len() <= written.len()
    }

    #[test]
    fn what_was_not_synced_is_lost_and_what_was_stays() {
        for seed in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            fs::write(root.join("old"), b"old").unwrap();
            let r = Recorder::install(root).unwrap();
            // Named when the folder is synced, content never synced; synced; grown and not synced since.
            fs::write(root.join("unsynced"), b"lost").unwrap();
            let f = append(&root.join("kept"), b"kept");
            sync_file(&f, "test.file").unwrap();
            drop(f);
            sync_dir(root, "test.dir").unwrap();
            drop(append(&root.join("old"), b" and more"));
            // Created after the folder's sync.
            fs::write(root.join("later"), b"x").unwrap();
            r.cut(seed).unwrap();
            assert_eq!(fs::read(root.join("kept")).unwrap(), b"kept");
            let unsynced = fs::read(root.join("unsynced")).unwrap();
            assert!(torn_of(&unsynced, b"lost"), "{unsynced:?}");
            let old = fs::read(root.join("old")).unwrap();
            assert!(old.starts_with(b"old") && torn_of(&old[3..], b" and more"), "{old:?}");
            assert!(!root.join("later").exists());
            // What the cut left is durable: a second cut keeps it as it is.
            r.cut(seed + 1).unwrap();
            assert_eq!(fs::read(root.join("unsynced")).unwrap(), unsynced);
            assert_eq!(fs::read(root.join("old")).unwrap(), old);
            assert_eq!(r.seen(), BTreeMap::from([("test.dir", 1), ("test.file", 1)]));
        }
    }

    #[test]
    fn a_torn_tail_is_a_prefix_of_what_was_written_sometimes_padded_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let r = Recorder::install(root).unwrap();
        let mut kinds = [0usize; 4];
        for seed in 0..200 {
            let f = append(&root.join("log"), b"synced;");
            sync_file(&f, "test.file").unwrap();
            sync_dir(root, "test.dir").unwrap();
            drop(append(&root.join("log"), b"0123456789"));
            r.cut(seed).unwrap();
            let got = fs::read(root.join("log")).unwrap();
            let (head, tail) = got.split_at(7);
            assert_eq!(head, b"synced;");
            let written = tail.iter().take_while(|b| **b != 0).count();
            assert_eq!(&tail[..written], &b"0123456789"[..written]);
            assert!(tail[written..].iter().all(|b| *b == 0) && tail.len() <= 10, "{got:?}");
            let kind = match (written, tail.len()) {
                (0, 0) => 0,
                (10, _) => 1,
                (w, t) if w == t => 2,
                _ => 3,
            };
            kinds[kind] += 1;
            fs::remove_file(root.join("log")).unwrap();
            sync_dir(root, "test.dir").unwrap();
        }
        // Lost, kept, torn, torn then zeros: each happens.
        assert!(kinds.iter().all(|k| *k > 10), "{kinds:?}");
    }

    #[test]
    fn a_rename_without_its_folder_sync_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("doc"), b"old").unwrap();
        let r = Recorder::install(root).unwrap();
        let f = append(&root.join(".doc.tmp"), b"new");
        sync_file(&f, "test.file").unwrap();
        drop(f);
        fs::rename(root.join(".doc.tmp"), root.join("doc")).unwrap();
        r.cut(1).unwrap();
        assert_eq!(fs::read(root.join("doc")).unwrap(), b"old");
        assert!(!root.join(".doc.tmp").exists(), "the temporary name was never synced");
        // With the folder synced after the rename, the new content stays; a removal is undone likewise.
        let f = append(&root.join(".doc.tmp"), b"new");
        sync_file(&f, "test.file").unwrap();
        drop(f);
        fs::rename(root.join(".doc.tmp"), root.join("doc")).unwrap();
        sync_dir(root, "test.dir").unwrap();
        r.settle().unwrap();
        // A removal without its folder sync is undone or kept, as the file system may have written it out.
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..20 {
            fs::remove_file(root.join("doc")).unwrap();
            r.cut(seed).unwrap();
            let got = fs::read(root.join("doc")).ok();
            assert!(got.is_none() || got.as_deref() == Some(b"new"), "{got:?}");
            outcomes.insert(got.is_some());
            if got.is_none() {
                fs::write(root.join("doc"), b"new").unwrap();
                sync_dir(root, "test.dir").unwrap();
                r.settle().unwrap();
            }
        }
        assert_eq!(outcomes.len(), 2, "both undone and kept");
    }

    #[test]
    fn a_folder_removed_with_its_content_unsynced_may_come_back_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..40 {
            fs::create_dir_all(root.join("v1")).unwrap();
            for f in ["a", "b", "c"] {
                fs::write(root.join("v1").join(f), f).unwrap();
            }
            let r = Recorder::install(root).unwrap();
            fs::remove_dir_all(root.join("v1")).unwrap();
            r.cut(seed).unwrap();
            let left = fs::read_dir(root.join("v1")).map(|d| d.count()).ok();
            seen.insert(left);
            drop(r);
            let _ = fs::remove_dir_all(root.join("v1"));
        }
        // Gone, whole, and in part.
        assert!(seen.contains(&None) && seen.contains(&Some(3)), "{seen:?}");
        assert!(seen.iter().any(|l| matches!(l, Some(1 | 2))), "{seen:?}");
    }

    #[test]
    fn a_synced_file_in_a_new_folder_is_lost_unless_the_parent_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let r = Recorder::install(root).unwrap();
        for parent_synced in [false, true] {
            fs::create_dir_all(root.join("a/b")).unwrap();
            let f = append(&root.join("a/b/file"), b"data");
            sync_file(&f, "test.file").unwrap();
            drop(f);
            sync_dir(&root.join("a/b"), "test.dir").unwrap();
            sync_dir(&root.join("a"), "test.dir").unwrap();
            if parent_synced {
                sync_dir(root, "test.dir").unwrap();
            }
            r.cut(7).unwrap();
            if parent_synced {
                assert_eq!(fs::read(root.join("a/b/file")).unwrap(), b"data");
            } else {
                assert!(!root.join("a").exists());
            }
        }
    }

    #[test]
    fn a_file_moved_to_another_folder_lives_where_the_latest_sync_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("from")).unwrap();
        fs::create_dir_all(root.join("to")).unwrap();
        fs::write(root.join("from/f"), b"f").unwrap();
        let r = Recorder::install(root).unwrap();
        fs::rename(root.join("from/f"), root.join("to/f")).unwrap();
        r.cut(0).unwrap();
        assert!(root.join("from/f").exists() && !root.join("to/f").exists());
        fs::rename(root.join("from/f"), root.join("to/f")).unwrap();
        sync_dir(&root.join("to"), "test.dir").unwrap();
        r.cut(0).unwrap();
        assert!(!root.join("from/f").exists() && root.join("to/f").exists());
    }

    #[test]
    fn a_crash_stops_every_sync_until_the_cut_and_a_skipped_site_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let r = Recorder::install(root).unwrap();
        r.skip("test.skipped");
        r.crash_after(2);
        quiet_power_cuts();
        let f = append(&root.join("a"), b"a");
        sync_file(&f, "test.skipped").unwrap();
        sync_file(&f, "test.file").unwrap();
        let crash = std::panic::catch_unwind(|| sync_dir(root, "test.dir")).unwrap_err();
        assert_eq!(power_cut(crash.as_ref()), Some(&PowerCut { site: "test.dir" }));
        assert!(r.crashed());
        // The power is off: this sync does nothing.
        sync_dir(root, "test.dir").unwrap();
        drop(f);
        r.cut(0).unwrap();
        assert!(!root.join("a").exists());
        assert_eq!(r.syncs(), 2);
        // A failed sync may still have written: here it did.
        r.fail_once("test.file", true);
        let f = append(&root.join("b"), b"b");
        assert!(sync_file(&f, "test.file").is_err());
        drop(f);
        sync_dir(root, "test.dir").unwrap();
        r.cut(0).unwrap();
        assert_eq!(fs::read(root.join("b")).unwrap(), b"b");
    }
}
