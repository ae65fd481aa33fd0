//! Versioned, checksummed formats for everything the layers keep on disk besides Parquet.
//!
//! A state file starts with a 4-byte magic and a little-endian `u32` format version, then holds frames:
//! `len: u32 LE | crc32: u32 LE | payload`. The checksum covers the payload, so a torn tail (a crash mid-write) is
//! told apart from corruption by the frame, not guessed from a parse error: a frame that runs past the end of the
//! file, or that fails its checksum with nothing but zeros after it, is a torn tail; a bad frame with data after it
//! is corruption. Payloads are postcard-encoded serde values.
//!
//! Whole documents (checkpoint manifests, realtime views, de-duplication runs) are written to a temporary name,
//! synced and renamed, so a reader sees a complete file or the previous one; logs append frames.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::durable::{sync_dir, sync_file};
use lambda_core::error::{Error, Result};

/// Bytes of a file header: magic and format version.
pub const HEADER_LEN: usize = 8;
/// Bytes in front of each frame's payload: length and checksum.
pub const FRAME_OVERHEAD: usize = 8;
/// Largest payload a frame may carry; a longer length field means corruption, not a big record.
pub const MAX_FRAME: usize = 1 << 30;

/// A state file kind: its magic and the format versions this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Four bytes at the start of the file.
    pub magic: [u8; 4],
    /// The version this build writes.
    pub version: u32,
    /// What the file is, for errors.
    pub name: &'static str,
}

/// The header bytes of a file of `kind`.
pub fn header(kind: Kind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&kind.magic);
    h[4..].copy_from_slice(&kind.version.to_le_bytes());
    h
}

/// Checks a header; returns the version found. A version newer than this build writes is an error that says so.
pub fn check_header(path: &Path, kind: Kind, bytes: &[u8]) -> Result<u32> {
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(path, format!("shorter than a {} header ({} bytes)", kind.name, bytes.len())));
    }
    if bytes[..4] != kind.magic {
        return Err(corrupt(
            path,
            format!("is not a {} (magic {:?})", kind.name, String::from_utf8_lossy(&bytes[..4])),
        ));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version == 0 || version > kind.version {
        return Err(corrupt(
            path,
            format!("{} format version {version} is not one this build reads (1..={})", kind.name, kind.version),
        ));
    }
    Ok(version)
}

fn corrupt(path: &Path, message: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), message: message.into() }
}

/// Appends one frame holding `payload` to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Encodes a value as a frame payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Encode { what: "state", source: e.into() })
}

/// Decodes a frame payload.
pub fn decode<T: DeserializeOwned>(path: &Path, payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(|e| corrupt(path, format!("undecodable record: {e}")))
}

/// Decodes a value from the start of a frame payload, and returns it with the bytes after it (what a later
/// build appended to the record).
pub fn decode_prefix<'a, T: DeserializeOwned>(path: &Path, payload: &'a [u8]) -> Result<(T, &'a [u8])> {
    postcard::take_from_bytes(payload).map_err(|e| corrupt(path, format!("undecodable record: {e}")))
}

/// What reading the next frame found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole, checked frame.
    Frame(Vec<u8>),
    /// The clean end of the file.
    End,
    /// A partial or unchecked frame at the very end: a write that a crash cut short. Its offset is given.
    Torn(u64),
}

/// Reads frames one at a time from a stream, tracking the offset of the next frame.
pub struct FrameReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    /// A reader positioned after the header, at `offset`.
    pub fn new(inner: R, path: &Path, offset: u64) -> Self {
        FrameReader { inner, path: path.to_path_buf(), offset }
    }

    /// Offset of the next frame (after the last whole frame read).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next frame. A bad checksum followed by more data is corruption and an error naming the offset.
    pub fn next_frame(&mut self) -> Result<Next> {
        let mut head = [0u8; FRAME_OVERHEAD];
        let got = read_full(&mut self.inner, &mut head).map_err(|e| Error::io(&self.path, e))?;
        if got == 0 {
            return Ok(Next::End);
        }
        if got < FRAME_OVERHEAD {
            return Ok(Next::Torn(self.offset));
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        // No frame is empty, so a zero length is a zero-filled tail (a file extended but not written before a
        // power loss), or corruption when anything but zeros follows.
        if len > MAX_FRAME || len == 0 {
            // A garbage length: torn if nothing sensible follows, which is all we can tell.
            let mut rest = Vec::new();
            self.inner.read_to_end(&mut rest).map_err(|e| Error::io(&self.path, e))?;
            if head.iter().chain(&rest).all(|b| *b == 0) || len > MAX_FRAME && rest.iter().all(|b| *b == 0) {
                return Ok(Next::Torn(self.offset));
            }
            return Err(corrupt(&self.path, format!("frame at byte {} claims {len} bytes", self.offset)));
        }
        let mut payload = vec![0u8; len];
        let got = read_full(&mut self.inner, &mut payload).map_err(|e| Error::io(&self.path, e))?;
        if got < len {
            return Ok(Next::Torn(self.offset));
        }
        if crc32fast::hash(&payload) != crc {
            // Torn when nothing but zeros follows: the frame's end and the rest of the file's growth had not
            // reached the disk when the power went.
            let mut rest = Vec::new();
            self.inner.read_to_end(&mut rest).map_err(|e| Error::io(&self.path, e))?;
            if rest.iter().all(|b| *b == 0) {
                return Ok(Next::Torn(self.offset));
            }
            return Err(corrupt(&self.path, format!("frame at byte {} fails its checksum", self.offset)));
        }
        self.offset += (FRAME_OVERHEAD + len) as u64;
        Ok(Next::Frame(payload))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes `bytes` to `path` and syncs it to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    sync_file(&f, "state.write_synced").map_err(|e| Error::io(path, e))
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the folder).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_synced(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = temp_name(dir, &name);
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir, "state.replace_dir")
}

/// Creates `dir` and every missing parent, syncing each parent in which a folder was created, so that the new
/// folders survive a power loss.
pub fn create_dir_synced(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent, "state.new_dir"),
        None => Ok(()),
    }
}

/// Writes a whole document (header and frames) under a temporary name, syncs it, renames it to `path` and syncs
/// the folder. Returns the bytes written.
pub fn write_document(path: &Path, kind: Kind, frames: &[Vec<u8>]) -> Result<u64> {
    let mut w = DocumentWriter::create(path, kind)?;
    for f in frames {
        w.frame(f)?;
    }
    w.finish()
}

/// A file writer that syncs every [`SyncEvery::STEP`] bytes as it goes. A big file written in one go would
/// otherwise leave hundreds of megabytes dirty, and on ext4 a small file's fsync elsewhere (a checkpoint on the
/// learner thread) can wait for all of them.
pub struct SyncEvery {
    file: File,
    since: u64,
}

impl SyncEvery {
    /// Bytes between syncs.
    pub const STEP: u64 = 8 << 20;

    /// Wraps a file.
    pub fn new(file: File) -> SyncEvery {
        SyncEvery { file, since: 0 }
    }

    /// The file.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if self.since >= Self::STEP {
            crate::durable::write_back(&self.file)?;
            self.since = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A document written frame by frame under a temporary name; [`DocumentWriter::finish`] syncs and renames it into
/// place. Dropped unfinished, it removes its temporary file.
pub struct DocumentWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<io::BufWriter<SyncEvery>>,
    bytes: u64,
}

impl DocumentWriter {
    /// Starts a document of `kind` that will become `path`.
    pub fn create(path: &Path, kind: Kind) -> Result<DocumentWriter> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir_synced(dir)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = temp_name(dir, &name);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = Some(io::BufWriter::new(SyncEvery::new(file)));
        let mut w = DocumentWriter { path: path.to_path_buf(), tmp, out, bytes: 0 };
        w.raw(&header(kind))?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| Error::Internal("document already finished"))?;
        out.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Appends one frame.
    pub fn frame(&mut self, payload: &[u8]) -> Result<()> {
        let mut head = Vec::with_capacity(FRAME_OVERHEAD);
        head.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        head.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.raw(&head)?;
        self.raw(payload)
    }

    /// Syncs the file, renames it into place and syncs the folder. Returns the bytes written.
    pub fn finish(mut self) -> Result<u64> {
        let out = self.out.take().ok_or_else(|| Error::Internal("document already finished"))?;
        let file = out.into_inner().map_err(|e| Error::io(&self.tmp, e.into_error()))?.into_inner();
        sync_file(&file, "state.document_file").map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        fail::fail_point!("state::document_before_rename", |_| Err(injected(&self.tmp)));
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")), "state.document_dir")?;
        Ok(self.bytes)
    }
}

impl Drop for DocumentWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Reads the frames of a document one at a time, checking the header first.
pub fn open_document(path: &Path, kind: Kind) -> Result<(u32, FrameReader<BufReader<File>>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; HEADER_LEN];
    let got = read_full(&mut reader, &mut head).map_err(|e| Error::io(path, e))?;
    let version = check_header(path, kind, &head[..got])?;
    Ok((version, FrameReader::new(reader, path, HEADER_LEN as u64)))
}

/// The next whole frame of a document, `None` at its end; a cut-short document is an error.
pub fn document_frame(frames: &mut FrameReader<BufReader<File>>, kind: Kind) -> Result<Option<Vec<u8>>> {
    match frames.next_frame()? {
        Next::Frame(f) => Ok(Some(f)),
        Next::End => Ok(None),
        Next::Torn(at) => Err(corrupt(&frames.path, format!("{} is cut short at byte {at}", kind.name))),
    }
}

/// A temporary name for `name` in `dir`, unique across processes and threads: two writers of the same final name
/// (the learner and a worker thread) never write into one file.
pub fn temp_name(dir: &Path, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes what writers that are no longer running left in `dir` (not below it): files and folders under a
/// [`temp_name`] (`.NAME.tmp-PID-N`) or a staging name (`NAME-PID` in a `.staging` folder) whose process has
/// ended. A crash between creating one and renaming it leaves it behind, and nothing else ever removes it. Returns
/// what was removed.
pub fn sweep_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let staging = dir.file_name().is_some_and(|n| n == ".staging");
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = if staging { staging_pid(&name) } else { temp_pid(&name) };
        if !pid.is_some_and(|p| p != std::process::id() && !process_alive(p)) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match gone {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    if !removed.is_empty() {
        // Not synced: what a power loss brings back, the next start removes again.
        tracing::info!(folder = %dir.display(), removed = removed.len(), "removed what crashed writers left");
    }
    Ok(removed)
}

/// The writer's process id in a [`temp_name`].
fn temp_pid(name: &str) -> Option<u32> {
    let rest = &name[name.rfind(".tmp-")? + 5..];
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// The writer's process id in a staging folder's name (`v000007-PID`).
fn staging_pid(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// Whether a process runs under `pid` (on Linux; elsewhere every process counts as running, so nothing is swept).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The error a fail point injects in tests: what a full disk answers.
pub fn injected(path: &Path) -> Error {
    Error::io(path, io::Error::new(io::ErrorKind::StorageFull, "injected fault: no space left on device"))
}

/// Reads a whole document written by [`write_document`]: its version and frames. Every frame must be whole.
pub fn read_document(path: &Path, kind: Kind) -> Result<(u32, Vec<Vec<u8>>)> {
    let (version, mut frames) = open_document(path, kind)?;
    let mut out = Vec::new();
    while let Some(f) = document_frame(&mut frames, kind)? {
        out.push(f);
    }
    Ok((version, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: Kind = Kind { magic: *b"TEST", version: 2, name: "test file" };

    #[test]
    fn documents_round_trip_and_reject_other_kinds_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/doc");
        let frames = vec![encode(&(1u64, "x")).unwrap(), encode(&vec![1.5f64, -0.0]).unwrap()];
        write_document(&path, KIND, &frames).unwrap();
        let (v, back) = read_document(&path, KIND).unwrap();
        assert_eq!(v, 2);
        assert_eq!(decode::<(u64, String)>(&path, &back[0]).unwrap(), (1, "x".to_string()));
        let other = Kind { magic: *b"ELSE", ..KIND };
        match read_document(&path, other) {
            Err(Error::Format { path: p, message }) => assert!(p == path && message.contains("is not a test file")),
            other => panic!("expected a format error, got {other:?}"),
        }
        let older_build = Kind { version: 1, ..KIND };
        match read_document(&path, older_build) {
            Err(Error::Format { path: p, message }) => assert!(p == path && message.contains("version 2"), "{message}"),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn torn_tail_is_told_apart_from_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = header(KIND).to_vec();
        put_frame(&mut bytes, b"first");
        put_frame(&mut bytes, b"second");
        let whole = bytes.len();
        let read_all = |bytes: &[u8]| -> Result<(Vec<Vec<u8>>, Next)> {
            let mut r = FrameReader::new(&bytes[HEADER_LEN..], &path, HEADER_LEN as u64);
            let mut out = Vec::new();
            loop {
                match r.next_frame()? {
                    Next::Frame(f) => out.push(f),
                    other => return Ok((out, other)),
                }
            }
        };
        assert_eq!(read_all(&bytes).unwrap(), (vec![b"first".to_vec(), b"second".to_vec()], Next::End));
        // Cut anywhere inside the second frame: the first survives, the rest is a torn tail at its offset.
        let second_at = (HEADER_LEN + FRAME_OVERHEAD + 5) as u64;
        for cut in second_at as usize + 1..whole {
            let (frames, next) = read_all(&bytes[..cut]).unwrap();
            assert_eq!((frames.len(), next), (1, Next::Torn(second_at)), "cut at {cut}");
        }
        // A flipped byte in the last frame is a torn tail; in the first frame (data follows) it is corruption.
        let mut last_bad = bytes.clone();
        last_bad[whole - 1] ^= 1;
        assert_eq!(read_all(&last_bad).unwrap().1, Next::Torn(second_at));
        let mut first_bad = bytes.clone();
        first_bad[HEADER_LEN + FRAME_OVERHEAD] ^= 1;
        match read_all(&first_bad) {
            Err(Error::Format { message, .. }) => assert_eq!(message, "frame at byte 8 fails its checksum"),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_zero_filled_tail_is_torn_not_a_record() {
        // Regression (review): eight zero bytes read as an empty frame with a valid checksum.
        let path = PathBuf::from("log");
        let mut bytes = Vec::new();
        put_frame(&mut bytes, b"first");
        let whole = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 40]);
        let mut r = FrameReader::new(&bytes[..], &path, 0);
        assert_eq!(r.next_frame().unwrap(), Next::Frame(b"first".to_vec()));
        assert_eq!(r.next_frame().unwrap(), Next::Torn(whole));
        // Zeros then data: corruption.
        bytes.extend_from_slice(b"data");
        let mut r = FrameReader::new(&bytes[..], &path, 0);
        r.next_frame().unwrap();
        assert!(r.next_frame().is_err());
    }

    #[test]
    fn a_frame_cut_short_by_zeros_is_torn_not_corruption() {
        // Regression (power-loss harness): a frame whose end had not reached the disk, with zeros where it and the
        // frames after it were to be, stopped the next start as corruption.
        let path = PathBuf::from("log");
        let mut bytes = Vec::new();
        put_frame(&mut bytes, b"first");
        let whole = bytes.len();
        put_frame(&mut bytes, b"second, longer than its cut");
        bytes.truncate(whole + FRAME_OVERHEAD + 3);
        bytes.extend_from_slice(&[0u8; 100]);
        let mut r = FrameReader::new(&bytes[..], &path, 0);
        assert_eq!(r.next_frame().unwrap(), Next::Frame(b"first".to_vec()));
        assert_eq!(r.next_frame().unwrap(), Next::Torn(whole as u64));
        // With anything else after the zeros it stays corruption.
        bytes.push(1);
        let mut r = FrameReader::new(&bytes[..], &path, 0);
        r.next_frame().unwrap();
        assert!(r.next_frame().unwrap_err().to_string().contains("fails its checksum"));
    }

    #[test]
    fn new_folders_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x/y/z");
        create_dir_synced(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_synced(&deep).unwrap();
    }
}
