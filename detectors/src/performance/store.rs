//! The pending store of the label join: `event_id` → what is waiting
//! (a prediction for its label, a label for its prediction, or a marker of
//! a labelled or expired prediction).
//!
//! Entries live in memory up to a budget of bytes; past it the oldest
//! predictions spill to an embedded on-disk store (redb) in the data
//! directory, and are read back from there when their label arrives.

use compact_str::CompactString;
use driftwatch_ingest::{EventTime, Label};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::metrics::Outcome;
use crate::error::{Error, Result};

/// Settings of the pending store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Bytes the store may take in memory: its entries and the page cache
    /// of the on-disk tier. Past it the oldest entries spill to disk.
    pub memory_budget: u64,
    /// File of the on-disk store; `None`: no spilling (the budget is then
    /// not enforced).
    pub spill_path: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_budget: 256 << 20,
            spill_path: None,
        }
    }
}

/// A label as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoredLabel {
    /// A class.
    Class(CompactString),
    /// A number.
    Value(f64),
}

impl From<&Label> for StoredLabel {
    fn from(l: &Label) -> Self {
        match l {
            Label::Class(c) => StoredLabel::Class(c.as_str().into()),
            Label::Value(v) => StoredLabel::Value(*v),
        }
    }
}

impl StoredLabel {
    /// Back to the event model's label.
    pub fn to_label(&self) -> Label {
        match self {
            StoredLabel::Class(c) => Label::Class(c.to_string()),
            StoredLabel::Value(v) => Label::Value(*v),
        }
    }
}

/// A label waiting for its prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingLabel {
    /// Model id.
    pub model: CompactString,
    /// The label.
    pub label: StoredLabel,
}

/// What the store holds for one `event_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// A prediction waiting for its label.
    Prediction {
        /// The tracker's (model, version) index.
        series: u32,
        /// The prediction's event time.
        time: EventTime,
        /// What it said (boxed: most entries are small markers, and the
        /// map's buckets are as large as its largest entry).
        outcome: Box<Outcome>,
    },
    /// A prediction whose label has joined (kept to count duplicates).
    Labeled {
        /// The tracker's (model, version) index.
        series: u32,
        /// The prediction's event time.
        time: EventTime,
    },
    /// A label waiting for its prediction.
    Label {
        /// The label's event time.
        time: EventTime,
        /// Its model and value.
        waiting: Box<WaitingLabel>,
    },
    /// A prediction whose window passed its label horizon.
    Expired {
        /// The prediction's event time.
        time: EventTime,
        /// Whether it had been labelled.
        labeled: bool,
    },
}

impl Entry {
    /// The event time the entry is about (the prediction's, or the label's).
    pub fn time(&self) -> EventTime {
        match self {
            Entry::Prediction { time, .. }
            | Entry::Labeled { time, .. }
            | Entry::Label { time, .. }
            | Entry::Expired { time, .. } => *time,
        }
    }

    /// Approximate bytes the entry takes on the heap beyond its own size.
    fn heap_bytes(&self) -> usize {
        let s = |c: &CompactString| {
            if c.is_heap_allocated() {
                c.capacity()
            } else {
                0
            }
        };
        // an allocation costs its size and about 16 bytes of the allocator's
        const ALLOCATION: usize = 16;
        match self {
            Entry::Prediction { outcome, .. } => {
                std::mem::size_of::<Outcome>()
                    + ALLOCATION
                    + outcome.class.as_ref().map_or(0, s)
                    + outcome.probabilities.capacity() * std::mem::size_of::<(CompactString, f64)>()
                    + outcome
                        .probabilities
                        .iter()
                        .map(|(c, _)| s(c))
                        .sum::<usize>()
            }
            Entry::Label { waiting, .. } => {
                std::mem::size_of::<WaitingLabel>()
                    + ALLOCATION
                    + s(&waiting.model)
                    + match &waiting.label {
                        StoredLabel::Class(c) => s(c),
                        StoredLabel::Value(_) => 0,
                    }
            }
            _ => 0,
        }
    }
}

/// Bytes one bucket of the map takes: key, entry and the control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<(CompactString, Entry)>() + 1;

/// Heap bytes of an entry and its key beyond the map's bucket.
fn entry_bytes(key: &CompactString, entry: &Entry) -> usize {
    let key_heap = if key.is_heap_allocated() {
        key.capacity()
    } else {
        0
    };
    key_heap + entry.heap_bytes()
}

/// Entries moved to disk per write transaction: bounds the memory a spill
/// holds in flight.
const SPILL_CHUNK: usize = 16_384;

/// Which ids may be on disk: a Bloom filter over the spilled keys, 10 bits
/// and 7 probes per key (about 1 % false positives), so that most ids that
/// are not on disk — every new prediction — cost no disk read. It doubles
/// (rebuilt from the keys on disk) as they outgrow it, up to `max_bytes`;
/// past that it only answers "maybe" more often.
struct KeyFilter {
    bits: Vec<u64>,
    /// keys it was sized for
    capacity: u64,
    max_bytes: usize,
    hasher: ahash::RandomState,
}

impl KeyFilter {
    fn new(capacity: u64, max_bytes: usize) -> Self {
        let words = (capacity.max(1024) * 10 / 64)
            .next_power_of_two()
            .min((max_bytes / 8).max(16) as u64);
        KeyFilter {
            bits: vec![0; words as usize],
            capacity: words * 64 / 10,
            max_bytes,
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }

    fn probes(&self, key: &str) -> impl Iterator<Item = (usize, u64)> + use<> {
        let h = self.hasher.hash_one(key);
        let step = h.rotate_left(32) | 1;
        let mask = self.bits.len() as u64 * 64 - 1;
        (0..7u64).map(move |i| {
            let bit = h.wrapping_add(i.wrapping_mul(step)) & mask;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn insert(&mut self, key: &str) {
        for (w, b) in self.probes(key) {
            self.bits[w] |= b;
        }
    }

    fn may_contain(&self, key: &str) -> bool {
        self.probes(key).all(|(w, b)| self.bits[w] & b != 0)
    }

    /// Whether `keys` keys are more than it was sized for, and it may grow.
    fn outgrown(&self, keys: u64) -> bool {
        keys > self.capacity && self.bits.len() * 8 * 2 <= self.max_bytes
    }
}

/// The on-disk tier: entries spilled out of memory, oldest first.
struct Spill {
    path: PathBuf,
    db: Database,
    /// entries on disk (some may be shadowed by newer ones in memory)
    len: u64,
    /// smallest event time among entries on disk
    min_time: EventTime,
    /// savepoints a checkpoint may refer to, oldest first
    savepoints: Vec<u64>,
    /// a reader of the last committed state, until the next write
    reader: Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>,
    filter: KeyFilter,
}

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");

impl Spill {
    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn open(path: &Path, cache_bytes: usize, filter_bytes: usize) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| Error::Store {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| err(&e))?;
        let spill = Spill {
            path: path.to_owned(),
            db,
            len: 0,
            min_time: EventTime::MAX,
            savepoints: Vec::new(),
            reader: None,
            filter: KeyFilter::new(0, filter_bytes),
        };
        // a fresh start: what an earlier run left is not ours (a restore brings
        // a checkpoint's entries back from its savepoint)
        let mut tx = spill.db.begin_write().map_err(|e| spill.err(e))?;
        tx.set_durability(Durability::None)
            .map_err(|e| spill.err(e))?;
        tx.delete_table(TABLE).map_err(|e| spill.err(e))?;
        tx.commit().map_err(|e| spill.err(e))?;
        Ok(spill)
    }

    fn get(&mut self, id: &str) -> Result<Option<Entry>> {
        if self.len == 0 || !self.filter.may_contain(id) {
            return Ok(None);
        }
        if self.reader.is_none() {
            let tx = self.db.begin_read().map_err(|e| self.err(e))?;
            match tx.open_table(TABLE) {
                Ok(t) => self.reader = Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.err(e)),
            }
        }
        let Some(table) = &self.reader else {
            return Ok(None);
        };
        match table.get(id).map_err(|e| self.err(e))? {
            Some(v) => postcard::from_bytes(v.value())
                .map(Some)
                .map_err(|e| self.err(format!("entry of {id}: {e}"))),
            None => Ok(None),
        }
    }

    fn write(&mut self, mut entries: Vec<(CompactString, Entry)>) -> Result<()> {
        self.reader = None;
        // in key order, the B-tree's pages are modified one after another
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::None)
            .map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
            let mut buf = Vec::new();
            for (k, e) in &entries {
                buf.clear();
                let bytes =
                    postcard::to_extend(e, std::mem::take(&mut buf)).map_err(|e| self.err(e))?;
                let old = table
                    .insert(k.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
                if old.is_none() {
                    self.len += 1;
                }
                self.filter.insert(k);
                self.min_time = self.min_time.min(e.time());
                buf = bytes;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        if self.filter.outgrown(self.len) {
            self.rebuild_filter()?;
        }
        Ok(())
    }

    /// A filter sized for twice the keys on disk, from those keys.
    fn rebuild_filter(&mut self) -> Result<()> {
        let mut filter = KeyFilter::new(self.len * 2, self.filter.max_bytes);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        match tx.open_table(TABLE) {
            Ok(table) => {
                for item in table.iter().map_err(|e| self.err(e))? {
                    let (k, _) = item.map_err(|e| self.err(e))?;
                    filter.insert(k.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.err(e)),
        }
        self.filter = filter;
        Ok(())
    }

    /// Applies `f` to every entry on disk not shadowed by `memory`; drops the
    /// shadowed ones.
    fn sweep(
        &mut self,
        memory: &HashMap<CompactString, Entry, ahash::RandomState>,
        f: &mut dyn FnMut(&Entry) -> Option<Option<Entry>>,
    ) -> Result<()> {
        self.reader = None;
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::None)
            .map_err(|e| self.err(e))?;
        let (mut len, mut min_time) = (0u64, EventTime::MAX);
        // the filter of the keys that stay, built in the same pass (sized
        // for twice the keys there were)
        let mut filter = KeyFilter::new(self.len * 2, self.filter.max_bytes);
        {
            let mut table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
            let mut replace: Vec<(String, Vec<u8>)> = Vec::new();
            let mut failure = None;
            table
                .retain(|k, v| {
                    if memory.contains_key(k) {
                        return false;
                    }
                    let entry: Entry = match postcard::from_bytes(v) {
                        Ok(e) => e,
                        Err(e) => {
                            failure = Some(format!("entry of {k}: {e}"));
                            filter.insert(k);
                            return true;
                        }
                    };
                    match f(&entry) {
                        None => {
                            len += 1;
                            min_time = min_time.min(entry.time());
                            filter.insert(k);
                            true
                        }
                        Some(None) => false,
                        Some(Some(e)) => {
                            len += 1;
                            min_time = min_time.min(e.time());
                            filter.insert(k);
                            match postcard::to_stdvec(&e) {
                                Ok(bytes) => replace.push((k.to_owned(), bytes)),
                                Err(e) => failure = Some(e.to_string()),
                            }
                            true
                        }
                    }
                })
                .map_err(|e| self.err(e))?;
            if let Some(f) = failure {
                return Err(self.err(f));
            }
            for (k, v) in replace {
                table
                    .insert(k.as_str(), v.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.len = len;
        self.min_time = min_time;
        self.filter = filter;
        Ok(())
    }

    /// Makes the current disk state durable and names it; keeps the
    /// previous savepoint too (the checkpoint on disk may still be the
    /// previous one until the new one is written).
    fn savepoint(&mut self) -> Result<u64> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = tx.persistent_savepoint().map_err(|e| self.err(e))?;
        // every other one goes, including any left by a run whose checkpoint
        // was not restored (they would keep the file from reusing pages)
        let previous = self.savepoints.last().copied();
        let stale: Vec<u64> = tx
            .list_persistent_savepoints()
            .map_err(|e| self.err(e))?
            .filter(|s| *s != id && Some(*s) != previous)
            .collect();
        for old in stale {
            tx.delete_persistent_savepoint(old)
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.savepoints = previous.into_iter().chain([id]).collect();
        Ok(id)
    }

    /// Goes back to the disk state of savepoint `id`; forgets every other one.
    fn restore(&mut self, id: u64, len: u64, min_time: EventTime) -> Result<()> {
        self.reader = None;
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let savepoint = tx
            .get_persistent_savepoint(id)
            .map_err(|e| self.err(format!("savepoint {id} of the checkpoint: {e}")))?;
        tx.restore_savepoint(&savepoint).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let others: Vec<u64> = tx
            .list_persistent_savepoints()
            .map_err(|e| self.err(e))?
            .filter(|s| *s != id)
            .collect();
        for s in others {
            tx.delete_persistent_savepoint(s).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.savepoints = vec![id];
        self.len = len;
        self.min_time = min_time;
        self.rebuild_filter()
    }
}

/// What a checkpoint of the store holds.
#[derive(Serialize, Deserialize)]
struct StoreSnapshot {
    memory: Vec<(CompactString, Entry)>,
    /// savepoint of the disk tier, its entry count and smallest time
    spill: Option<(u64, u64, EventTime)>,
}

/// The pending store.
pub struct PendingStore {
    memory: HashMap<CompactString, Entry, ahash::RandomState>,
    /// heap bytes of `memory`'s entries beyond their buckets
    bytes: usize,
    /// no entry in `memory` is older than this
    min_time: EventTime,
    /// with a spill file: the map's capacity at its largest size; past 45 %
    /// of it (or past `heap_budget`) the oldest entries spill
    capacity: usize,
    /// heap bytes allowed beyond the map's buckets
    heap_budget: usize,
    spill: Option<Spill>,
    spilled: u64,
}
impl std::fmt::Debug for PendingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStore")
            .field("entries", &self.memory.len())
            .field("bytes", &self.bytes)
            .field("on_disk", &self.spill.as_ref().map_or(0, |s| s.len))
            .finish()
    }
}

impl PendingStore {
    /// An empty store. With a spill path, the file is created (or an
    /// earlier run's emptied: [`restore`](Self::restore) brings a
    /// checkpoint's entries back).
    pub fn open(config: StoreConfig) -> Result<Self> {
        let budget = usize::try_from(config.memory_budget).unwrap_or(usize::MAX);
        let Some(path) = &config.spill_path else {
            return Ok(PendingStore {
                memory: HashMap::default(),
                bytes: 0,
                min_time: EventTime::MAX,
                capacity: usize::MAX,
                heap_budget: usize::MAX,
                spill: None,
                spilled: 0,
            });
        };
        // the budget: the disk tier's page cache, one spill chunk in flight,
        // the map's buckets (three quarters of the rest), and heap data of
        // entries (class names longer than 24 bytes, probabilities)
        let cache = (budget / 8).clamp(1 << 20, 64 << 20);
        let chunk = SPILL_CHUNK * BUCKET_BYTES * 2;
        let rest = budget.saturating_sub(cache + chunk);
        // the filter of keys on disk may take a sixteenth of the rest (10
        // bits a key: 16 MiB for 13 million keys)
        let filter = rest / 16;
        let entries = rest - filter;
        // up to half for the map's buckets: hashbrown holds `capacity`
        // entries in `capacity * 8 / 7` buckets (a power of two) and grows
        // by doubling, the last doubling holding the old table and the new
        // one, 1.5 times the largest; the rest for what entries hold on the
        // heap (a prediction's boxed outcome)
        let buckets = (entries / 2 / (BUCKET_BYTES * 3 / 2)).max(16);
        let buckets = if buckets.is_power_of_two() {
            buckets
        } else {
            buckets.next_power_of_two() / 2
        };
        let capacity = buckets / 8 * 7;
        let table = buckets * BUCKET_BYTES * 3 / 2;
        let spill = Spill::open(path, cache, filter)?;
        Ok(PendingStore {
            memory: HashMap::default(),
            bytes: 0,
            min_time: EventTime::MAX,
            capacity,
            heap_budget: entries.saturating_sub(table),
            spill: Some(spill),
            spilled: 0,
        })
    }

    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Entries on disk (an upper bound: some may be shadowed by newer ones
    /// in memory until the next sweep).
    pub fn on_disk(&self) -> u64 {
        self.spill.as_ref().map_or(0, |s| s.len)
    }

    /// Entries moved to disk so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.on_disk() == 0
    }

    /// Estimated bytes of the entries held in memory: the map's buckets and
    /// the entries' heap data.
    pub fn memory_bytes(&self) -> usize {
        (self.memory.capacity() / 7 * 8).next_power_of_two() * BUCKET_BYTES + self.bytes
    }

    /// The entry of `id`.
    pub fn get(&mut self, id: &str) -> Result<Option<Entry>> {
        if let Some(e) = self.memory.get(id) {
            return Ok(Some(e.clone()));
        }
        match &mut self.spill {
            Some(spill) => spill.get(id),
            None => Ok(None),
        }
    }

    /// Removes the entry of `id` from memory and returns it (an entry on
    /// disk is returned and stays there, shadowed by whatever is inserted
    /// for `id` next).
    pub fn take(&mut self, id: &str) -> Result<Option<Entry>> {
        if let Some(e) = self.memory.remove(id) {
            self.bytes -= entry_bytes(&CompactString::from(id), &e);
            return Ok(Some(e));
        }
        match &mut self.spill {
            Some(spill) => spill.get(id),
            None => Ok(None),
        }
    }

    /// Sets the entry of `id`; spills the oldest entries to disk when memory
    /// passes its budget.
    pub fn insert(&mut self, id: &str, entry: Entry) -> Result<()> {
        let key = CompactString::from(id);
        self.bytes += entry_bytes(&key, &entry);
        self.min_time = self.min_time.min(entry.time());
        if let Some(old) = self.memory.insert(key, entry) {
            self.bytes -= entry_bytes(&CompactString::from(id), &old);
        }
        // the map never holds more than 45 % of its largest capacity: at that
        // size, when its free buckets run out (removed entries leave
        // tombstones), it rehashes in place (allowed below half) instead of
        // doubling
        if self.memory.len() >= self.capacity / 20 * 9 || self.bytes > self.heap_budget {
            self.spill_oldest()?;
        }
        Ok(())
    }

    /// Moves the older entries to disk — those not newer than a quantile of
    /// a sample of entry times — until at most 30 % of the map's largest
    /// capacity is used and the entries' heap data is under 60 % of its share.
    fn spill_oldest(&mut self) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        let target_len = self.capacity / 10 * 3;
        let target_bytes = self.heap_budget / 10 * 6;
        while self.memory.len() > target_len || self.bytes > target_bytes {
            // the map's iteration order is the hash order: its first entries are a fair sample
            let mut sample: Vec<EventTime> =
                self.memory.values().take(4096).map(Entry::time).collect();
            sample.sort_unstable();
            let share = (1.0 - target_len as f64 / self.memory.len() as f64)
                .max(1.0 - target_bytes as f64 / self.bytes.max(1) as f64);
            let at = ((sample.len() as f64 * share) as usize).min(sample.len().saturating_sub(1));
            let cutoff = sample.get(at).copied().unwrap_or(EventTime::MAX);
            let mut chunk = Vec::with_capacity(SPILL_CHUNK);
            let mut freed = 0;
            let mut moved = 0;
            let mut min_time = EventTime::MAX;
            let extract = |_: &CompactString, e: &mut Entry| {
                let old = e.time() <= cutoff;
                if !old {
                    min_time = min_time.min(e.time());
                }
                old
            };
            for (k, e) in self.memory.extract_if(extract) {
                freed += entry_bytes(&k, &e);
                moved += 1;
                chunk.push((k, e));
                if chunk.len() == SPILL_CHUNK {
                    self.spilled += chunk.len() as u64;
                    spill.write(std::mem::take(&mut chunk))?;
                }
            }
            if !chunk.is_empty() {
                self.spilled += chunk.len() as u64;
                spill.write(chunk)?;
            }
            self.bytes -= freed;
            self.min_time = min_time;
            if moved == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Visits every entry: `f` returns `None` to keep it, `Some(None)` to
    /// remove it, `Some(Some(e))` to replace it with `e`. The entries of a
    /// tier are visited only when `due(its oldest entry's time)` says some
    /// of them may change.
    pub fn sweep(
        &mut self,
        mut f: impl FnMut(&Entry) -> Option<Option<Entry>>,
        due: impl Fn(EventTime) -> bool,
    ) -> Result<()> {
        if !self.memory.is_empty() && due(self.min_time) {
            let (mut bytes, mut min_time) = (0, EventTime::MAX);
            let mut keep = |key: &CompactString, entry: &Entry| {
                bytes += entry_bytes(key, entry);
                min_time = min_time.min(entry.time());
                true
            };
            self.memory.retain(|key, entry| match f(entry) {
                None => keep(key, entry),
                Some(None) => false,
                Some(Some(e)) => {
                    *entry = e;
                    keep(key, entry)
                }
            });
            self.bytes = bytes;
            self.min_time = min_time;
        }
        if let Some(spill) = &mut self.spill
            && spill.len > 0
            && due(spill.min_time)
        {
            spill.sweep(&self.memory, &mut f)?;
        }
        Ok(())
    }

    /// The entries in memory, and a savepoint of those on disk, serialised
    /// for a checkpoint.
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut memory: Vec<(CompactString, Entry)> = self
            .memory
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        memory.sort_by(|a, b| a.0.cmp(&b.0));
        let spill = match &mut self.spill {
            Some(s) => Some((s.savepoint()?, s.len, s.min_time)),
            None => None,
        };
        postcard::to_stdvec(&StoreSnapshot { memory, spill })
            .map_err(|e| Error::Checkpoint(e.to_string()))
    }

    /// Replaces the entries with a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snapshot: StoreSnapshot = postcard::from_bytes(bytes)
            .map_err(|e| Error::Checkpoint(format!("pending labels unreadable: {e}")))?;
        match (&mut self.spill, snapshot.spill) {
            (Some(spill), Some((id, len, min_time))) => spill.restore(id, len, min_time)?,
            (None, Some(_)) => {
                return Err(Error::Checkpoint(
                    "the checkpoint's pending labels spilled to disk, and no spill file is configured now"
                        .into(),
                ));
            }
            _ => {}
        }
        self.memory.clear();
        self.bytes = 0;
        self.min_time = EventTime::MAX;
        for (k, e) in snapshot.memory {
            self.bytes += entry_bytes(&k, &e);
            self.min_time = self.min_time.min(e.time());
            self.memory.insert(k, e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(i: i64) -> Entry {
        Entry::Prediction {
            series: 0,
            time: i,
            outcome: Box::new(Outcome {
                score: Some(0.5),
                ..Outcome::default()
            }),
        }
    }

    fn store(path: &Path) -> PendingStore {
        PendingStore::open(StoreConfig {
            memory_budget: 2 << 20,
            spill_path: Some(path.to_owned()),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn state(s: &mut PendingStore, n: i64) -> Vec<Option<Entry>> {
        (0..n)
            .map(|i| s.get(&format!("id-{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// A snapshot and the entries it saw.
    type Checkpoint = (Vec<u8>, Vec<Option<Entry>>);

    /// Two checkpoints with changes between and after them, then a crash.
    fn checkpoint_twice(path: &Path) -> Result<[Checkpoint; 2]> {
        let mut s = store(path);
        for i in 0..60_000 {
            s.insert(&format!("id-{i}"), prediction(i))?;
        }
        assert!(s.on_disk() > 30_000, "{s:?}");
        let first = s.snapshot()?;
        let at_first = state(&mut s, 70_000);
        // changes after the first checkpoint: joins of spilled entries, more predictions
        for i in (0..60_000).step_by(3) {
            s.insert(&format!("id-{i}"), Entry::Labeled { series: 0, time: i })?;
        }
        for i in 60_000..70_000 {
            s.insert(&format!("id-{i}"), prediction(i))?;
        }
        let second = s.snapshot()?;
        let at_second = state(&mut s, 70_000);
        assert_ne!(at_first, at_second);
        // and more after the second, lost in the crash
        s.sweep(|_| Some(None), |_| true)?;
        assert!(s.is_empty());
        Ok([(first, at_first), (second, at_second)])
    }

    #[test]
    fn a_checkpoint_brings_back_memory_and_disk_as_they_were() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Checkpoint(e.to_string()))?;
        // the last checkpoint, and the one before it (the crash came
        // before the last checkpoint's file was written)
        for last in [true, false] {
            let path = dir.path().join(format!("{last}.redb"));
            let [first, second] = checkpoint_twice(&path)?;
            let (bytes, expected) = if last { second } else { first };
            let mut s = store(&path);
            s.restore(&bytes)?;
            assert_eq!(state(&mut s, 70_000), expected);
        }
        Ok(())
    }
}
