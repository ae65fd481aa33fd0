//! The realtime view: one per-key view of the events after a batch watermark, shared between the speed layer's
//! learner (the only writer) and the serving layer's readers, in one process or rebuilt from checkpoint files in
//! another.
//!
//! Keys are spread over [`SHARDS`] shards, each a [`ViewTable`] behind its own lock, so a reader waits at most for
//! one event's update of one shard. Each shard records the sequence number of the last event applied to it, and the
//! table the sequence number through which every event is applied; a reader takes the larger of the two under the
//! shard's lock, which is a sequence number at which the key's view is exact (no event of that shard lies between).
//! Changed keys are marked, so a checkpoint writes only what changed since the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::views::{KeyView, PackedRow, ViewTable};
use lambda_core::schema::{RowSource, Target};

/// Number of shards of a realtime view.
pub const SHARDS: usize = 64;

#[derive(Debug)]
struct Shard {
    table: ViewTable,
    as_of: u64,
    dirty: Vec<u32>,
    marked: Vec<u64>,
}

impl Shard {
    fn mark(&mut self, slot: u32) {
        let (word, bit) = (slot as usize / 64, slot % 64);
        if self.marked.len() <= word {
            self.marked.resize(word + 1, 0);
        }
        if self.marked[word] & (1 << bit) == 0 {
            self.marked[word] |= 1 << bit;
            self.dirty.push(slot);
        }
    }

    fn clear_marks(&mut self) {
        self.dirty.clear();
        self.marked.iter_mut().for_each(|w| *w = 0);
    }
}

/// The changed (or all) keys of one shard, with the class list their label counts follow.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Class labels, in the order of each row's label counts.
    pub classes: Vec<String>,
    /// Key views.
    pub rows: Vec<PackedRow>,
}

/// A sharded, concurrently readable per-key view.
#[derive(Debug)]
pub struct Realtime {
    shards: Vec<RwLock<Shard>>,
    applied: AtomicU64,
    template: ViewTable,
}

/// The shard a key lives in.
pub fn shard_of(key: &str) -> usize {
    // Middle bits: the shard tables use the low bits for buckets and the top bits for their tags.
    ((xxhash_rust::xxh3::xxh3_64(key.as_bytes()) >> 32) as usize) % SHARDS
}

impl Realtime {
    /// An empty view shaped like `template` (features and classes), exact through `seq`.
    pub fn new(template: ViewTable, seq: u64) -> Realtime {
        let template = template.empty_like();
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(Shard { table: template.clone(), as_of: seq, dirty: Vec::new(), marked: Vec::new() }))
            .collect();
        Realtime { shards, applied: AtomicU64::new(seq), template }
    }

    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        // A writer that panicked leaves whole updates behind (each is one call), so the data stays usable.
        self.shards[i].read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the aggregated features.
    pub fn features(&self) -> &[String] {
        &self.template.features
    }

    /// Folds one event into the view (the learner calls this in sequence order).
    pub fn observe<R: RowSource + ?Sized>(&self, key: &str, time: i64, seq: u64, row: &R, target: Option<&Target>) {
        let mut shard = self.write(shard_of(key));
        let slot = shard.table.observe(key, time, seq, row, target);
        shard.mark(slot);
        shard.as_of = shard.as_of.max(seq);
    }

    /// Declares that every event up to `seq` is applied.
    pub fn set_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// The sequence number through which every event is applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// A key's view and a sequence number at which it is exact.
    pub fn get(&self, key: &str) -> (Option<KeyView>, u64) {
        let shard = self.read(shard_of(key));
        let seq = shard.as_of.max(self.applied.load(Ordering::Acquire));
        (shard.table.get(key), seq)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.read(i).table.len()).sum()
    }

    /// Whether no key has been seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let s = self.read(i);
                s.table.heap_bytes() + s.dirty.capacity() * 4 + s.marked.capacity() * 8
            })
            .sum()
    }

    /// Takes the keys changed since the last call, one chunk per shard that has any, and clears the marks.
    pub fn take_changed(&self) -> Vec<Chunk> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let mut shard = self.write(i);
            if shard.dirty.is_empty() {
                continue;
            }
            let mut slots = std::mem::take(&mut shard.dirty);
            slots.sort_unstable();
            let rows = slots.iter().map(|&s| shard.table.packed(s)).collect();
            out.push(Chunk { classes: shard.table.classes().to_vec(), rows });
            shard.clear_marks();
        }
        out
    }

    /// Calls `f` with every key of each shard in turn (one chunk per non-empty shard) and clears the marks: what
    /// a full checkpoint writes, one shard in memory at a time.
    pub fn for_each_chunk<E>(&self, mut f: impl FnMut(Chunk) -> Result<(), E>) -> Result<(), E> {
        for i in 0..SHARDS {
            let chunk = {
                let mut shard = self.write(i);
                shard.clear_marks();
                if shard.table.is_empty() {
                    continue;
                }
                let t = &shard.table;
                Chunk { classes: t.classes().to_vec(), rows: (0..t.len() as u32).map(|s| t.packed(s)).collect() }
            };
            f(chunk)?;
        }
        Ok(())
    }

    /// Replaces the views of the chunk's keys (a checkpoint read back), each shard becoming exact through `seq`.
    pub fn put_chunk(&self, chunk: &Chunk, seq: u64) {
        let mut by_shard: Vec<Vec<&PackedRow>> = vec![Vec::new(); SHARDS];
        for row in &chunk.rows {
            by_shard[shard_of(&row.key)].push(row);
        }
        for (i, rows) in by_shard.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let mut shard = self.write(i);
            for row in rows {
                shard.table.put_packed(row, &chunk.classes);
            }
            shard.as_of = shard.as_of.max(seq);
        }
    }

    /// All shards merged into one table (tests and tools; it copies every key).
    pub fn to_table(&self) -> ViewTable {
        let mut out = self.template.empty_like();
        for i in 0..SHARDS {
            out.merge(&self.read(i).table);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::schema::{Cell, Event};
    use lambda_core::spec::Spec;
    use std::path::Path;

    fn spec() -> Spec {
        Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn ev(i: u64) -> Event {
        Event {
            id: format!("e{i}"),
            key: format!("k{}", i % 97),
            time: i as i64,
            features: vec![Cell::Num(Some(i as f64)), Cell::Cat(None), Cell::Bool(Some(i.is_multiple_of(2)))],
            target: Some(Target::Class(["no", "yes", "maybe"][(i % 3) as usize].into())),
        }
    }

    #[test]
    fn changed_keys_rebuild_the_same_view_elsewhere() {
        let s = spec();
        let rt = Realtime::new(ViewTable::new(&s), 0);
        let copy = Realtime::new(ViewTable::new(&s), 0);
        let mut brute = ViewTable::new(&s);
        for i in 1..=1000u64 {
            let e = ev(i);
            rt.observe(&e.key, e.time, i, &e, e.target.as_ref());
            brute.observe(&e.key, e.time, i, &e, e.target.as_ref());
            rt.set_applied(i);
            if i % 137 == 0 {
                for c in rt.take_changed() {
                    copy.put_chunk(&c, i);
                }
                copy.set_applied(i);
                assert_eq!(copy.to_table(), rt.to_table(), "after {i}");
            }
        }
        for c in rt.take_changed() {
            copy.put_chunk(&c, 1000);
        }
        assert!(rt.take_changed().is_empty(), "marks are cleared");
        assert_eq!(copy.to_table(), brute);
        assert_eq!(rt.len(), 97);
        let (v, seq) = copy.get("k5");
        assert_eq!((v.unwrap(), seq), (brute.get("k5").unwrap(), 1000));
    }

    #[test]
    fn full_chunks_cover_every_key() {
        let s = spec();
        let rt = Realtime::new(ViewTable::new(&s), 0);
        for i in 1..=300u64 {
            let e = ev(i);
            rt.observe(&e.key, e.time, i, &e, e.target.as_ref());
        }
        let copy = Realtime::new(ViewTable::new(&s), 0);
        rt.for_each_chunk(|c| {
            copy.put_chunk(&c, 300);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(copy.to_table(), rt.to_table());
        assert!(rt.take_changed().is_empty());
    }
}
