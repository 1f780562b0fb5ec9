//! The pending store of the label join: `event_id` → what is waiting
//! (a prediction for its label, a label for its prediction, or a marker of
//! a labelled or expired prediction).
//!
//! An entry is a 40-byte record (see `record`): a 96-bit hash of the id,
//! the time, the outcome inline. The newest records sit in a hash table;
//! a full table becomes a sorted run, and runs of similar size merge.
//! Past the memory budget the oldest runs move to disk as files, read a
//! block at a time through an in-memory Bloom filter and index (see
//! `run`). Expiry is computed when a record is read, from the sweeps since
//! it was written, so a sweep costs nothing per entry; runs are dropped
//! once all their entries are gone and compacted when half are.
//!
//! ```text
//!  insert ─► table (≤ 128 Ki) ─full─► run ─merge─► run … ─budget─► disk run … (files)
//!  get ────► table, runs newest first, disk runs newest first (Bloom, one block read)
//! ```

mod record;
mod run;

use compact_str::CompactString;
use driftwatch_ingest::{EventTime, Label};
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::metrics::Outcome;
use crate::error::{Error, Result};
use crate::window::WindowSpec;
use record::{EXPIRED, Extra, Key, LABEL, LABELED, PREDICTION, RECORD_BYTES, Record, Strings};
use run::{Bloom, DiskRun};

/// Settings of the pending store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Bytes the store may take in memory: its entries and the index of
    /// those on disk. Past it the oldest entries spill to disk.
    pub memory_budget: u64,
    /// Directory of the on-disk runs; `None`: no spilling (the budget is
    /// then not enforced).
    pub spill_dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_budget: 256 << 20,
            spill_dir: None,
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
        /// What it said (boxed: the entry is passed around by value).
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
}

/// When entries change by themselves: at a sweep of the tracker's clock, a
/// prediction (labelled or not) whose last window is a label horizon old
/// expires, an expired one is forgotten a horizon later, and a label that
/// waited a horizon for its prediction is given up.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// The prediction windows.
    pub spec: WindowSpec,
    /// The label horizon, milliseconds.
    pub horizon: i64,
}

impl Expiry {
    fn expires(&self, t: EventTime) -> EventTime {
        self.spec.last_end(t).saturating_add(self.horizon)
    }

    fn forgotten(&self, t: EventTime) -> EventTime {
        self.spec
            .last_end(t)
            .saturating_add(self.horizon.saturating_mul(2))
    }

    fn label_expires(&self, t: EventTime) -> EventTime {
        t.saturating_add(self.horizon)
    }

    /// The clock from which a sweep leaves nothing of `r` (the sweep after
    /// it at the latest).
    fn gone_at(&self, r: &Record) -> EventTime {
        match r.kind() {
            LABEL => self.label_expires(r.time),
            _ => self.forgotten(r.time),
        }
    }
}

/// The clocks of the sweeps so far, from the oldest one a record's state
/// still depends on. A record is stamped with the number of sweeps done
/// when it was written; its state now is what those after its stamp made
/// of it — computed when it is read, so a sweep visits no entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sweeps {
    /// number of the first clock kept
    base: u32,
    times: Vec<EventTime>,
}

impl Sweeps {
    fn done(&self) -> u32 {
        self.base + self.times.len() as u32
    }

    /// The first sweep numbered `from` or later at `t` or later.
    fn first_at(&self, from: u32, t: EventTime) -> Option<u32> {
        let start = (from.max(self.base) - self.base) as usize;
        let times = self.times.get(start..)?;
        let i = times.partition_point(|&s| s < t);
        (i < times.len()).then(|| from.max(self.base) + i as u32)
    }

    /// The clock of sweep `i`.
    fn time(&self, i: u32) -> Option<EventTime> {
        self.times.get(i.checked_sub(self.base)? as usize).copied()
    }

    /// Forgets the clocks before sweep `keep`.
    fn trim(&mut self, keep: u32) {
        if keep > self.base {
            let n = ((keep - self.base) as usize).min(self.times.len());
            self.times.drain(..n);
            self.base += n as u32;
        }
    }
}

/// What a run's records are like, to know when it needs a visit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Info {
    /// earliest clock at which a waiting label of the run expires
    label_due: EventTime,
    /// clock past which about half of its live entries are gone
    half_gone: EventTime,
    /// clock past which all of them are
    all_gone: EventTime,
    min_stamp: u32,
    max_stamp: u32,
    /// entries that wait (predictions for labels, labels for predictions)
    waiting: usize,
    /// which runs on disk were older when the run was made (see
    /// [`PendingStore::older_runs`])
    older: u64,
}

/// Records that live in memory, sorted by key, with a Bloom filter of
/// their keys (most lookups miss most runs) and a directory by the keys'
/// top bits (a lookup reads one directory slot and about eight records).
#[derive(Debug)]
struct MemRun {
    records: Vec<Record>,
    bloom: Bloom,
    dir: run::Directory,
    info: Info,
    labels: Option<WaitingLabels>,
}

impl MemRun {
    fn find(&self, k: Key) -> Option<usize> {
        if !self.bloom.may_contain(k) {
            return None;
        }
        let range = self.dir.range(k);
        let start = range.start;
        self.records[range]
            .binary_search_by(|r| r.key().cmp(&k))
            .ok()
            .map(|i| start + i)
    }

    fn bytes(&self) -> usize {
        self.records.capacity() * RECORD_BYTES
            + self.bloom.bytes()
            + self.dir.bytes()
            + labels_bytes(&self.labels)
    }
}

#[derive(Debug)]
struct Disk {
    run: DiskRun,
    info: Info,
    labels: Option<WaitingLabels>,
}

/// The waiting labels of a run by when they expire, the latest first: (the
/// clock of its expiry, its place in the run). Listed at the first sweep
/// that visits the run (`None` before that, or after a label was written
/// into the run in place), so that later sweeps read only the labels due,
/// not every record of the run.
type WaitingLabels = Vec<(EventTime, u64)>;

fn labels_bytes(labels: &Option<WaitingLabels>) -> usize {
    labels.as_ref().map_or(0, |l| {
        l.capacity() * std::mem::size_of::<(EventTime, u64)>()
    })
}

/// Where a key's newest record is.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Hot,
    Mem(usize, usize),
    Disk(usize),
}

/// Extras of the records in memory, by number.
#[derive(Debug, Default)]
struct Extras {
    slots: Vec<Option<Extra>>,
    free: Vec<u32>,
    bytes: usize,
}

impl Extras {
    fn put(&mut self, e: Extra) -> u64 {
        self.bytes += e.bytes();
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(e);
                u64::from(i)
            }
            None => {
                self.slots.push(Some(e));
                (self.slots.len() - 1) as u64
            }
        }
    }

    fn get(&self, i: u64) -> Option<&Extra> {
        self.slots.get(i as usize)?.as_ref()
    }

    fn take(&mut self, i: u64) -> Option<Extra> {
        let e = self.slots.get_mut(i as usize)?.take()?;
        self.bytes -= e.bytes();
        self.free.push(i as u32);
        Some(e)
    }

    /// Frees the extra of `r`, if it has one.
    fn release(&mut self, r: &Record) {
        if r.has_extra() {
            self.take(r.x);
        }
    }

    fn memory(&self) -> usize {
        self.bytes
            + self.slots.capacity() * std::mem::size_of::<Option<Extra>>()
            + self.free.capacity() * 4
    }
}

/// Bytes of a hash table bucket: a record and its control byte.
const BUCKET_BYTES: usize = RECORD_BYTES + 1;

/// The pending store: a small hash table of the newest records, sorted
/// runs of older ones in memory, and sorted runs on disk (past the budget,
/// or once few of a run's entries still wait) — a log-structured merge
/// tree whose levels are also its age order, so that expiry frees whole
/// runs.
///
/// A key has at most one record in memory (the table or one run: a write
/// to a key found in memory replaces it in place); a key found on disk is
/// written to the table and hides the disk record until a merge drops it.
pub struct PendingStore {
    expiry: Expiry,
    strings: Strings,
    extras: Extras,
    hot: HashTable<Record>,
    /// records the table holds before it becomes a run
    hot_cap: usize,
    /// sweeps done when the table was last emptied
    hot_since: u32,
    hot_label_due: EventTime,
    /// clock past which every entry of the table is gone, and the sweeps
    /// done at its last write
    hot_all_gone: EventTime,
    hot_last_stamp: u32,
    /// oldest first
    mem: Vec<MemRun>,
    /// oldest first, all older than every run in memory
    disk: Vec<Disk>,
    sweeps: Sweeps,
    budget: usize,
    /// largest run in memory, bytes (with a spill directory)
    run_cap: usize,
    dir: Option<PathBuf>,
    next_seq: u64,
    /// runs named by the last two checkpoints
    retained: Vec<Vec<u64>>,
    /// files no longer in use, removed once no retained checkpoint names them
    doomed: Vec<u64>,
    spilled: u64,
    /// the last key looked up and where it was
    last: Option<(Key, Option<Loc>)>,
    /// held locked while the store is open: one process per directory
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for PendingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStore")
            .field("hot", &self.hot.len())
            .field(
                "mem_runs",
                &self.mem.iter().map(|m| m.records.len()).collect::<Vec<_>>(),
            )
            .field(
                "disk_runs",
                &self.disk.iter().map(|d| d.run.len).collect::<Vec<_>>(),
            )
            .field("bytes", &self.memory_bytes())
            .finish()
    }
}

/// What a checkpoint of the store holds besides its records.
#[derive(Serialize, Deserialize)]
struct Header {
    strings: Vec<CompactString>,
    sweeps: Sweeps,
    hot: u64,
    mem: Vec<u64>,
    extras: Vec<(u64, Extra)>,
    disk: Vec<(u64, u64, Info)>,
    next_seq: u64,
}

/// Format of [`PendingStore::snapshot`].
const SNAPSHOT_FORMAT: u32 = 2;

impl PendingStore {
    /// An empty store. With a spill directory (locked: one process at a
    /// time), files an earlier run left there are removed at the first
    /// write unless [`restore`](Self::restore) takes them back.
    pub fn open(config: StoreConfig, expiry: Expiry) -> Result<Self> {
        let budget = usize::try_from(config.memory_budget).unwrap_or(usize::MAX);
        // the hash table: an eighth of the budget, at most 128 Ki buckets
        let buckets = match &config.spill_dir {
            Some(_) => (budget / 8 / BUCKET_BYTES).clamp(1 << 10, 1 << 17),
            None => 1 << 17,
        };
        let buckets = if buckets.is_power_of_two() {
            buckets
        } else {
            buckets.next_power_of_two() / 2
        };
        let mut store = PendingStore {
            expiry,
            strings: Strings::default(),
            extras: Extras::default(),
            hot: HashTable::new(),
            hot_cap: buckets / 8 * 7,
            hot_since: 0,
            hot_label_due: EventTime::MAX,
            hot_all_gone: EventTime::MIN,
            hot_last_stamp: 0,
            mem: Vec::new(),
            disk: Vec::new(),
            sweeps: Sweeps::default(),
            budget,
            run_cap: (budget / 8).max(buckets * BUCKET_BYTES),
            dir: config.spill_dir.clone(),
            next_seq: 1,
            retained: Vec::new(),
            doomed: Vec::new(),
            spilled: 0,
            last: None,
            _lock: None,
        };
        if let Some(dir) = &config.spill_dir {
            std::fs::create_dir_all(dir).map_err(|e| store.err(e))?;
            let lock = std::fs::File::create(dir.join("lock")).map_err(|e| store.err(e))?;
            lock.try_lock().map_err(|e| {
                store.err(format!(
                    "another process uses this directory for its pending labels ({e})"
                ))
            })?;
            store._lock = Some(lock);
            let found = store.files()?;
            store.next_seq = found.iter().max().map_or(1, |s| s + 1);
            store.doomed = found;
        }
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.dir.clone().unwrap_or_default(),
            message: e.to_string(),
        }
    }

    /// Run files in the spill directory.
    fn files(&self) -> Result<Vec<u64>> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| self.err(e))? {
            let e = e.map_err(|e| self.err(e))?;
            if let Some(seq) = e.file_name().to_str().and_then(run::run_seq) {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }

    /// Entries held in memory (with markers of forgotten ones not yet
    /// dropped).
    pub fn len(&self) -> usize {
        self.hot.len() + self.mem.iter().map(|m| m.records.len()).sum::<usize>()
    }

    /// Entries on disk (an upper bound: some may be hidden by newer ones).
    pub fn on_disk(&self) -> u64 {
        self.disk.iter().map(|d| d.run.len as u64).sum()
    }

    /// Entries moved to disk so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.on_disk() == 0
    }

    /// Bytes the store takes in memory: the table, the runs, the extras,
    /// the names, the index of the runs on disk.
    pub fn memory_bytes(&self) -> usize {
        let table = if self.hot.capacity() == 0 {
            0
        } else {
            (self.hot.capacity() * 8 / 7).next_power_of_two() * BUCKET_BYTES
        };
        table
            + self.mem.iter().map(MemRun::bytes).sum::<usize>()
            + self.extras.memory()
            + self.strings.bytes()
            + self
                .disk
                .iter()
                .map(|d| d.run.bytes() + labels_bytes(&d.labels))
                .sum::<usize>()
            + self.sweeps.times.capacity() * 8
    }

    /// What `r` holds now: itself, its expired form, or nothing.
    fn current(&self, r: &Record) -> Option<Record> {
        if r.is_gone() {
            return None;
        }
        let (e, s) = (&self.expiry, &self.sweeps);
        match r.kind() {
            PREDICTION | LABELED => match s.first_at(r.stamp, e.expires(r.time)) {
                None => Some(*r),
                Some(j) => match s.first_at(j + 1, e.forgotten(r.time)) {
                    Some(_) => None,
                    None => Some(r.expired(r.kind() == LABELED)),
                },
            },
            EXPIRED => match s.first_at(r.stamp, e.forgotten(r.time)) {
                Some(_) => None,
                None => Some(*r),
            },
            _ => match s.first_at(r.stamp, e.label_expires(r.time)) {
                Some(_) => None,
                None => Some(*r),
            },
        }
    }

    /// The newest record of `k` and where it is.
    fn lookup(&self, k: Key) -> Result<Option<(Loc, Record)>> {
        if let Some(r) = self.hot.find(k.hi, |r| r.key() == k) {
            return Ok(Some((Loc::Hot, *r)));
        }
        // a key has one version in memory: the runs in any order, the
        // largest (oldest) first
        for (i, m) in self.mem.iter().enumerate() {
            if let Some(p) = m.find(k) {
                return Ok(Some((Loc::Mem(i, p), m.records[p])));
            }
        }
        for (i, d) in self.disk.iter().enumerate().rev() {
            if let Some(r) = d.run.get(k).map_err(|e| self.err(e))? {
                return Ok(Some((Loc::Disk(i), r)));
            }
        }
        Ok(None)
    }

    /// The entry a current record at `loc` holds.
    fn entry(&self, loc: Loc, r: &Record) -> Result<Entry> {
        let extra = match (r.has_extra(), loc) {
            (false, _) => None,
            (true, Loc::Disk(i)) => Some(self.disk[i].run.extra(r).map_err(|e| self.err(e))?),
            (true, _) => self.extras.get(r.x).cloned(),
        };
        record::decode(r, &self.strings, extra).map_err(|e| self.err(e))
    }

    /// The entry of `id`.
    pub fn get(&mut self, id: &str) -> Result<Option<Entry>> {
        let k = Key::of(id);
        let found = self.lookup(k)?;
        self.last = Some((k, found.map(|(loc, _)| loc)));
        match found {
            Some((loc, r)) => match self.current(&r) {
                Some(r) => self.entry(loc, &r).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Sets the entry of `id` (found by the [`get`](Self::get) just
    /// before, if it was of the same id); past the budget the oldest
    /// entries spill to disk.
    pub fn insert(&mut self, id: &str, entry: Entry) -> Result<()> {
        let k = Key::of(id);
        let loc = match self.last.take() {
            Some((last, loc)) if last == k => loc,
            _ => self.lookup(k)?.map(|(loc, _)| loc),
        };
        let (mut r, extra) = record::encode(k, self.sweeps.done(), entry, &mut self.strings);
        let added_extra = extra.is_some();
        if let Some(e) = extra {
            r.x = self.extras.put(e);
        }
        let label_due = (r.kind() == LABEL).then(|| self.expiry.label_expires(r.time));
        match loc {
            Some(Loc::Hot) => {
                if let Some(old) = self.hot.find_mut(k.hi, |x| x.key() == k) {
                    let before = std::mem::replace(old, r);
                    self.extras.release(&before);
                }
                self.note_hot(&r);
                if let Some(due) = label_due {
                    self.hot_label_due = self.hot_label_due.min(due);
                }
            }
            Some(Loc::Mem(i, p)) => {
                let waits =
                    |r: Option<Record>| r.is_some_and(|r| matches!(r.kind(), PREDICTION | LABEL));
                let (was, is) = (waits(self.current(&self.mem[i].records[p])), waits(Some(r)));
                let m = &mut self.mem[i];
                m.info.waiting =
                    (m.info.waiting + usize::from(is)).saturating_sub(usize::from(was));
                let before = std::mem::replace(&mut m.records[p], r);
                m.info.max_stamp = m.info.max_stamp.max(r.stamp);
                m.info.min_stamp = m.info.min_stamp.min(r.stamp);
                if let Some(due) = label_due {
                    m.info.label_due = m.info.label_due.min(due);
                    // listed again at the next sweep that visits the run
                    m.labels = None;
                }
                let gone = self.expiry.gone_at(&r);
                m.info.all_gone = m.info.all_gone.max(gone);
                self.extras.release(&before);
            }
            Some(Loc::Disk(_)) | None => {
                if self.hot.is_empty() {
                    self.hot_since = self.sweeps.done();
                }
                self.hot.insert_unique(k.hi, r, |x| x.hi);
                if let Some(due) = label_due {
                    self.hot_label_due = self.hot_label_due.min(due);
                }
                self.note_hot(&r);
                if self.hot.len() >= self.hot_cap {
                    self.freeze()?;
                    return Ok(());
                }
            }
        }
        if added_extra && self.dir.is_some() && self.memory_bytes() > self.spill_at() {
            self.spill()?;
        }
        Ok(())
    }

    /// Notes a record written to the table.
    fn note_hot(&mut self, r: &Record) {
        self.hot_all_gone = self.hot_all_gone.max(self.expiry.gone_at(r));
        self.hot_last_stamp = r.stamp;
    }

    /// A run in memory of `records`, sorted by key.
    fn mem_run(&self, records: Vec<Record>) -> MemRun {
        let mut bloom = Bloom::new(records.len());
        for r in &records {
            bloom.insert(r.key());
        }
        MemRun {
            info: self.info(&records),
            labels: None,
            dir: run::Directory::new(&records),
            bloom,
            records,
        }
    }

    /// What a run of `records` is like.
    fn info(&self, records: &[Record]) -> Info {
        let mut b = InfoBuilder::new(records.len());
        for r in records {
            b.add(self, r);
        }
        b.finish(self)
    }

    /// A fingerprint of which runs are on disk before run `n`.
    fn older_runs(&self, n: usize) -> u64 {
        self.disk[..n].iter().fold(n as u64, |h, d| {
            (h ^ d.run.seq).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
    }

    /// Whether a run on disk older than run `below` (all of them: `None`)
    /// may hold `k`.
    fn older_on_disk(&self, k: Key, below: Option<usize>) -> bool {
        let n = below.unwrap_or(self.disk.len());
        self.disk[..n].iter().any(|d| d.run.bloom.may_contain(k))
    }

    /// What a run rewritten now keeps of `r`: its current state stamped
    /// now, a marker of it being gone that hides an older version on disk
    /// (runs older than `below`), or nothing.
    fn keep(&self, r: &Record, below: Option<usize>) -> Option<Record> {
        let stamp = self.sweeps.done();
        match self.current(r) {
            Some(c) => Some(Record { stamp, ..c }),
            None => self
                .older_on_disk(r.key(), below)
                .then(|| Record { stamp, ..r.gone() }),
        }
    }

    /// [`keep`](Self::keep) for a record in memory: an extra it no longer
    /// needs is freed.
    fn keep_in_memory(&mut self, r: &Record) -> Option<Record> {
        let kept = self.keep(r, None);
        if r.has_extra() && !kept.is_some_and(|k| k.has_extra()) {
            self.extras.release(r);
        }
        kept
    }

    /// The table becomes the newest run in memory; runs of similar size
    /// merge.
    fn freeze(&mut self) -> Result<()> {
        self.freeze_table();
        loop {
            let n = self.mem.len();
            if n < 2 {
                break;
            }
            let (older, newer) = (self.mem[n - 2].records.len(), self.mem[n - 1].records.len());
            let merged = (older + newer) * RECORD_BYTES;
            if newer * 2 < older || (self.dir.is_some() && merged > self.run_cap) {
                break;
            }
            self.merge_mem(n - 2);
        }
        if self.dir.is_some() && self.memory_bytes() > self.spill_at() {
            self.spill()?;
        }
        Ok(())
    }

    /// The table as the newest run in memory.
    fn freeze_table(&mut self) {
        self.last = None;
        let mut records: Vec<Record> = Vec::with_capacity(self.hot.len());
        records.extend(self.hot.drain());
        records.sort_unstable_by_key(Record::key);
        self.hot_label_due = EventTime::MAX;
        self.hot_all_gone = EventTime::MIN;
        self.hot_since = self.sweeps.done();
        self.mem.push(self.mem_run(records));
    }

    /// Merges run `i` in memory with the next (newer) one, dropping what
    /// is gone. The keys of the two are distinct.
    fn merge_mem(&mut self, i: usize) {
        self.last = None;
        let newer = self.mem.remove(i + 1).records;
        let mut older = std::mem::take(&mut self.mem[i].records);
        // merged from the back into the older run's vector, grown in place
        let (mut a, mut b) = (older.len(), newer.len());
        older.resize(a + b, Record::default());
        let mut at = a + b;
        while b > 0 {
            at -= 1;
            if a > 0 && older[a - 1].key() > newer[b - 1].key() {
                older[at] = older[a - 1];
                a -= 1;
            } else {
                older[at] = newer[b - 1];
                b -= 1;
            }
        }
        drop(newer);
        let records = self.compact(older);
        self.mem[i] = self.mem_run(records);
    }

    /// Drops from a run in memory what is gone for good.
    fn compact(&mut self, mut records: Vec<Record>) -> Vec<Record> {
        let mut kept = 0;
        for j in 0..records.len() {
            if let Some(r) = self.keep_in_memory(&records[j]) {
                records[kept] = r;
                kept += 1;
            }
        }
        records.truncate(kept);
        records.shrink_to_fit();
        records
    }

    /// Memory past which runs spill: three quarters of the budget, the rest
    /// left for what a merge holds while it runs (the two runs and the one
    /// they become, the index of a disk run being rewritten).
    fn spill_at(&self) -> usize {
        self.budget / 4 * 3
    }

    /// Moves the oldest runs in memory to disk until the store is under
    /// half its budget.
    fn spill(&mut self) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        self.remove_doomed();
        while self.memory_bytes() > self.budget / 2 {
            if self.mem.is_empty() {
                if self.hot.is_empty() {
                    break;
                }
                self.freeze_table();
            }
            self.spill_run(0, &dir)?;
        }
        Ok(())
    }

    /// Moves run `i` in memory to disk.
    fn spill_run(&mut self, i: usize, dir: &std::path::Path) -> Result<()> {
        self.last = None;
        // what stays, in place; the extras it keeps aside (x: their index)
        let mut records = self.mem.remove(i).records;
        let mut extras = Vec::new();
        let mut kept = 0;
        for j in 0..records.len() {
            let r = records[j];
            let Some(mut k) = self.keep(&r, None) else {
                self.extras.release(&r);
                continue;
            };
            if k.has_extra() {
                extras.push(
                    self.extras
                        .take(r.x)
                        .ok_or_else(|| self.err("extra missing"))?,
                );
                k.x = (extras.len() - 1) as u64;
            } else {
                self.extras.release(&r);
            }
            records[kept] = k;
            kept += 1;
        }
        records.truncate(kept);
        self.spilled += kept as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut info = InfoBuilder::new(kept);
        let mut run = DiskRun::write(
            dir,
            seq,
            records.iter().map(|r| {
                info.add(self, r);
                let extra = r.has_extra().then(|| extras[r.x as usize].clone());
                Ok((*r, extra))
            }),
        )
        .map_err(|e| self.err(e))?;
        drop(records);
        run.load_index().map_err(|e| self.err(e))?;
        let info = info.finish(self);
        self.disk.push(Disk {
            run,
            info,
            labels: None,
        });
        loop {
            let n = self.disk.len();
            if n < 2 || self.disk[n - 1].run.len * 2 < self.disk[n - 2].run.len {
                break;
            }
            self.rewrite_disk(n - 2, true)?;
        }
        Ok(())
    }

    /// Whether memory holds a version of `k` (newer than any on disk).
    fn in_memory(&self, k: Key) -> bool {
        self.hot.find(k.hi, |r| r.key() == k).is_some()
            || self.mem.iter().any(|m| m.find(k).is_some())
    }

    /// Whether a version of `k` newer than those of disk run `i` exists.
    fn hidden(&self, k: Key, i: usize) -> Result<bool> {
        if self.in_memory(k) {
            return Ok(true);
        }
        for d in self.disk.iter().skip(i + 1) {
            if d.run.get(k).map_err(|e| self.err(e))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rewrites disk run `i` — merged with run `i + 1` when `pair` —
    /// keeping the newest current version of each key not hidden by one
    /// in memory.
    fn rewrite_disk(&mut self, i: usize, pair: bool) -> Result<()> {
        self.last = None;
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| self.err("no spill directory"))?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let runs = i..i + 1 + usize::from(pair);
        let capacity: usize = self.disk[runs.clone()].iter().map(|d| d.run.len).sum();
        let mut streams = Vec::new();
        for d in &self.disk[runs.clone()] {
            streams.push(d.run.records().map_err(|e| self.err(e))?.peekable());
        }
        let mut builder = InfoBuilder::new(capacity);
        let info = &mut builder;
        let this = &*self;
        // the next record by key; of equal keys the newer run's
        let mut next = move || -> Option<std::result::Result<(usize, Record), String>> {
            let mut best: Option<(usize, Key)> = None;
            for (s, stream) in streams.iter_mut().enumerate() {
                match stream.peek() {
                    Some(Ok(r)) if best.is_none_or(|(_, k)| r.key() <= k) => {
                        best = Some((s, r.key()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => return stream.next().map(|r| r.map(|r| (s, r))),
                    None => {}
                }
            }
            let (s, k) = best?;
            for stream in &mut streams[..s] {
                if stream
                    .peek()
                    .is_some_and(|r| r.as_ref().is_ok_and(|r| r.key() == k))
                {
                    stream.next();
                }
            }
            streams[s].next().map(|r| r.map(|r| (s, r)))
        };
        let records = std::iter::from_fn(move || {
            loop {
                let (s, r) = match next()? {
                    Ok(x) => x,
                    Err(e) => return Some(Err(e)),
                };
                // a version in memory hides it (one in a newer run on disk
                // is dropped when the two runs merge: a read per record
                // here would cost more than the space)
                if this.in_memory(r.key()) {
                    continue;
                }
                let Some(k) = this.keep(&r, Some(i)) else {
                    continue;
                };
                let extra = if k.has_extra() {
                    match this.disk[i + s].run.extra(&r) {
                        Ok(e) => Some(e),
                        Err(e) => return Some(Err(e)),
                    }
                } else {
                    None
                };
                info.add(this, &k);
                return Some(Ok((k, extra)));
            }
        });
        let mut run = DiskRun::write(&dir, seq, records).map_err(|e| self.err(e))?;
        let info = builder.finish(self);
        let replaced: Vec<Disk> = self.disk.drain(runs).collect();
        self.doomed.extend(replaced.iter().map(|d| d.run.seq));
        drop(replaced);
        run.load_index().map_err(|e| self.err(e))?;
        if run.len > 0 {
            let info = Info {
                older: self.older_runs(i),
                ..info
            };
            self.disk.insert(
                i,
                Disk {
                    run,
                    info,
                    labels: None,
                },
            );
        } else {
            self.doomed.push(seq);
        }
        self.remove_doomed();
        Ok(())
    }

    /// A sweep at clock `now`: from now on entries read as the [`Expiry`]
    /// rules made them (nothing is visited for that, see [`Sweeps`]).
    /// Returns the model of each waiting label given up at this sweep.
    /// Runs whose entries are all gone are dropped, and runs about half
    /// gone are compacted.
    pub fn expire(&mut self, now: EventTime) -> Result<Vec<CompactString>> {
        self.last = None;
        let k = self.sweeps.done();
        let previous = k.checked_sub(1).and_then(|p| self.sweeps.time(p));
        self.sweeps.times.push(now);
        let mut given_up: Vec<(Loc, Record)> = Vec::new();
        // a waiting label given up now: the first sweep since it was written
        // at or past its expiry
        let due_now = |s: &Self, r: &Record| {
            r.kind() == LABEL
                && !r.is_gone()
                && s.sweeps.first_at(r.stamp, s.expiry.label_expires(r.time)) == Some(k)
        };
        let still_due = |s: &Self, r: &Record| {
            let at = s.expiry.label_expires(r.time);
            (r.kind() == LABEL && !r.is_gone() && at > now).then_some(at)
        };
        if self.hot_label_due <= now {
            let mut next = EventTime::MAX;
            for r in self.hot.iter() {
                if due_now(self, r) {
                    given_up.push((Loc::Hot, *r));
                }
                next = next.min(still_due(self, r).unwrap_or(EventTime::MAX));
            }
            self.hot_label_due = next;
        }
        for i in 0..self.mem.len() {
            if self.mem[i].info.label_due > now {
                continue;
            }
            let m = &mut self.mem[i];
            let mut labels = match m.labels.take() {
                Some(labels) => labels,
                None => waiting_labels(&self.expiry, m.records.iter().map(|r| Ok(*r)))?,
            };
            while let Some(&(at, j)) = labels.last()
                && at <= now
            {
                labels.pop();
                let r = self.mem[i].records[j as usize];
                if due_now(self, &r) {
                    given_up.push((Loc::Mem(i, 0), r));
                }
            }
            let m = &mut self.mem[i];
            m.info.label_due = labels.last().map_or(EventTime::MAX, |l| l.0);
            m.labels = Some(labels);
        }
        for i in 0..self.disk.len() {
            if self.disk[i].info.label_due > now {
                continue;
            }
            let mut labels = match self.disk[i].labels.take() {
                Some(labels) => labels,
                None => {
                    let records = self.disk[i].run.records().map_err(|e| self.err(e))?;
                    waiting_labels(&self.expiry, records).map_err(|e| self.err(e))?
                }
            };
            while let Some(&(at, j)) = labels.last()
                && at <= now
            {
                labels.pop();
                let r = self.disk[i].run.record_at(j).map_err(|e| self.err(e))?;
                if due_now(self, &r) && !self.hidden(r.key(), i)? {
                    given_up.push((Loc::Disk(i), r));
                }
            }
            let d = &mut self.disk[i];
            d.info.label_due = labels.last().map_or(EventTime::MAX, |l| l.0);
            d.labels = Some(labels);
        }
        let mut models = Vec::with_capacity(given_up.len());
        for (loc, r) in given_up {
            if let Entry::Label { waiting, .. } = self.entry(loc, &r)? {
                models.push(waiting.model);
            }
        }
        self.collect(k, previous, now)?;
        let oldest = self
            .mem
            .iter()
            .map(|m| m.info.min_stamp)
            .chain(self.disk.iter().map(|d| d.info.min_stamp))
            .chain((!self.hot.is_empty()).then_some(self.hot_since))
            .min()
            .unwrap_or(self.sweeps.done());
        self.sweeps.trim(oldest);
        Ok(models)
    }

    /// After sweep `k` (at `now`; the one before at `previous`): drops the
    /// runs whose entries are all gone and compacts those about half gone.
    fn collect(&mut self, k: u32, previous: Option<EventTime>, now: EventTime) -> Result<()> {
        // every entry of a run is gone after sweep `k` when the sweep before
        // it was past their end and after they were written
        let all_gone =
            |info: &Info| previous.is_some_and(|p| info.all_gone <= p) && info.max_stamp < k;
        // a run of markers only (hiding older versions on disk) is looked at
        // again once the runs on disk older than it changed
        let due = |info: &Info, older: u64| {
            if info.all_gone == EventTime::MIN {
                info.older != older
            } else {
                all_gone(info) || info.half_gone <= now
            }
        };
        let mut i = 0;
        while i < self.disk.len() {
            let info = self.disk[i].info;
            if all_gone(&info) && i == 0 {
                let d = self.disk.remove(0);
                self.doomed.push(d.run.seq);
                continue;
            }
            let before = self.disk.len();
            if due(&info, self.older_runs(i)) {
                self.rewrite_disk(i, false)?;
            }
            if self.disk.len() == before {
                i += 1;
            }
        }
        if !self.hot.is_empty()
            && previous.is_some_and(|p| self.hot_all_gone <= p)
            && self.hot_last_stamp < k
        {
            // the table's entries are all gone: as a run, dropped or
            // compacted below
            self.freeze_table();
        }
        let mut i = 0;
        while i < self.mem.len() {
            let info = self.mem[i].info;
            if all_gone(&info) && self.disk.is_empty() {
                let run = self.mem.remove(i);
                for r in &run.records {
                    self.extras.release(r);
                }
                continue;
            }
            if due(&info, self.older_runs(self.disk.len())) {
                let records = std::mem::take(&mut self.mem[i].records);
                let records = self.compact(records);
                if records.is_empty() {
                    self.mem.remove(i);
                    continue;
                }
                self.mem[i] = self.mem_run(records);
            }
            i += 1;
        }
        // runs in memory where few entries still wait go to disk: the
        // markers they hold are rarely read, and would otherwise fill memory
        // for two label horizons
        if let Some(dir) = self.dir.clone() {
            let mut i = 0;
            while i < self.mem.len() {
                let m = &self.mem[i];
                if m.info.waiting * 4 < m.records.len() {
                    self.spill_run(i, &dir)?;
                } else {
                    i += 1;
                }
            }
        }
        self.remove_doomed();
        Ok(())
    }

    /// The entries in memory, and the names of the runs on disk, for a
    /// checkpoint. The files it names are kept until two later
    /// checkpoints are taken (the newest on disk may be the one before).
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut fresh = false;
        for d in &mut self.disk {
            let synced = d.run.sync();
            fresh |= synced.map_err(|e| Error::Store {
                path: self.dir.clone().unwrap_or_default(),
                message: e,
            })?;
        }
        if let Some(dir) = self.dir.as_ref().filter(|_| fresh) {
            // the new files' names
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.err(e))?;
        }
        let mut hot: Vec<Record> = self.hot.iter().copied().collect();
        hot.sort_unstable_by_key(Record::key);
        let header = Header {
            strings: self.strings.list().to_vec(),
            sweeps: self.sweeps.clone(),
            hot: hot.len() as u64,
            mem: self.mem.iter().map(|m| m.records.len() as u64).collect(),
            extras: self
                .extras
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.clone().map(|e| (i as u64, e)))
                .collect(),
            disk: self
                .disk
                .iter()
                .map(|d| (d.run.seq, d.run.len as u64, d.info))
                .collect(),
            next_seq: self.next_seq,
        };
        let head = postcard::to_stdvec(&header).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let mut out = Vec::with_capacity(12 + head.len() + self.len() * RECORD_BYTES);
        out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend_from_slice(&head);
        for r in hot.iter().chain(self.mem.iter().flat_map(|m| &m.records)) {
            r.write(&mut out);
        }
        self.retained
            .push(self.disk.iter().map(|d| d.run.seq).collect());
        if self.retained.len() > 2 {
            self.retained.remove(0);
        }
        self.remove_doomed();
        Ok(out)
    }

    /// Replaces the entries with a [`snapshot`](Self::snapshot)'s, and
    /// removes the run files it does not name.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |m: &str| Error::Checkpoint(format!("pending labels unreadable: {m}"));
        let format = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("too short"))?;
        if format != SNAPSHOT_FORMAT {
            return Err(bad(&format!(
                "format {format}, this build reads {SNAPSHOT_FORMAT}"
            )));
        }
        let head_len = bytes
            .get(4..12)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("too short"))?;
        let head = bytes
            .get(12..12 + head_len)
            .ok_or_else(|| bad("too short"))?;
        let header: Header = postcard::from_bytes(head).map_err(|e| bad(&e.to_string()))?;
        let mut records = bytes[12 + head_len..].chunks_exact(RECORD_BYTES);
        let expected = header.hot + header.mem.iter().sum::<u64>();
        if records.len() as u64 != expected || !records.remainder().is_empty() {
            return Err(bad("record count"));
        }
        if !header.disk.is_empty() && self.dir.is_none() {
            return Err(Error::Checkpoint(
                "the checkpoint's pending labels spilled to disk, and no spill directory is configured now"
                    .into(),
            ));
        }
        self.last = None;
        self.doomed.extend(self.disk.drain(..).map(|d| d.run.seq));
        self.strings = Strings::from_list(header.strings);
        self.sweeps = header.sweeps;
        self.extras = Extras::default();
        let slots = header.extras.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        self.extras.slots = vec![None; slots as usize];
        for (i, e) in header.extras {
            self.extras.bytes += e.bytes();
            self.extras.slots[i as usize] = Some(e);
        }
        self.extras.free = (0..slots as u32)
            .filter(|i| self.extras.slots[*i as usize].is_none())
            .collect();
        self.hot.clear();
        self.hot_since = self.sweeps.done();
        self.hot_label_due = EventTime::MAX;
        for b in records.by_ref().take(header.hot as usize) {
            let r = Record::read(b);
            self.hot_since = self.hot_since.min(r.stamp);
            if r.kind() == LABEL {
                self.hot_label_due = self.hot_label_due.min(self.expiry.label_expires(r.time));
            }
            self.hot.insert_unique(r.hi, r, |x| x.hi);
        }
        self.mem.clear();
        for n in header.mem {
            let run: Vec<Record> = records
                .by_ref()
                .take(n as usize)
                .map(Record::read)
                .collect();
            let run = self.mem_run(run);
            self.mem.push(run);
        }
        let mut named = Vec::new();
        if let Some(dir) = self.dir.clone() {
            for (seq, len, info) in header.disk {
                let run = DiskRun::open(&dir, seq, len as usize).map_err(|e| self.err(e))?;
                named.push(seq);
                self.disk.push(Disk {
                    run,
                    info,
                    labels: None,
                });
            }
            self.doomed = self
                .files()?
                .into_iter()
                .filter(|s| !named.contains(s))
                .collect();
            self.next_seq = self
                .next_seq
                .max(header.next_seq)
                .max(self.doomed.iter().max().map_or(0, |s| s + 1));
        }
        self.retained = vec![named];
        self.remove_doomed();
        Ok(())
    }

    /// Removes the files of runs no longer in use that no retained
    /// checkpoint names.
    fn remove_doomed(&mut self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let retained = &self.retained;
        self.doomed.retain(|seq| {
            if retained.iter().any(|r| r.contains(seq)) {
                return true;
            }
            let path = run::run_path(dir, *seq);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("ext"));
            false
        });
    }
}

/// The waiting labels among a run's `records` ([`WaitingLabels`]).
fn waiting_labels<E>(
    expiry: &Expiry,
    records: impl Iterator<Item = std::result::Result<Record, E>>,
) -> std::result::Result<WaitingLabels, E> {
    let mut labels = Vec::new();
    for (j, r) in records.enumerate() {
        let r = r?;
        if r.kind() == LABEL && !r.is_gone() {
            labels.push((expiry.label_expires(r.time), j as u64));
        }
    }
    labels.sort_unstable_by(|a, b| b.cmp(a));
    Ok(labels)
}

/// Builds a run's [`Info`] from its records one at a time.
struct InfoBuilder {
    info: Info,
    sample: Vec<EventTime>,
    stride: u32,
}

impl InfoBuilder {
    /// For a run of at most `capacity` records.
    fn new(capacity: usize) -> Self {
        InfoBuilder {
            info: Info {
                label_due: EventTime::MAX,
                half_gone: EventTime::MAX,
                all_gone: EventTime::MIN,
                min_stamp: u32::MAX,
                max_stamp: 0,
                waiting: 0,
                older: 0,
            },
            sample: Vec::new(),
            // about 512 records (keys are hashes: a fair sample)
            stride: u32::try_from(capacity / 512).unwrap_or(u32::MAX).max(1),
        }
    }

    fn add(&mut self, store: &PendingStore, r: &Record) {
        let info = &mut self.info;
        info.min_stamp = info.min_stamp.min(r.stamp);
        info.max_stamp = info.max_stamp.max(r.stamp);
        let Some(current) = store.current(r) else {
            return;
        };
        if matches!(current.kind(), PREDICTION | LABEL) {
            info.waiting += 1;
        }
        let gone = store.expiry.gone_at(r);
        info.all_gone = info.all_gone.max(gone);
        if r.kind() == LABEL {
            info.label_due = info.label_due.min(store.expiry.label_expires(r.time));
        }
        if r.lo.is_multiple_of(self.stride) {
            self.sample.push(gone);
        }
    }

    fn finish(mut self, store: &PendingStore) -> Info {
        // a run is made in memory or as the newest on disk; a rewrite of an
        // older disk run sets this again
        self.info.older = store.older_runs(store.disk.len());
        if !self.sample.is_empty() {
            let mid = self.sample.len() / 2;
            self.info.half_gone = *self.sample.select_nth_unstable(mid).1;
        }
        self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_pcg::Pcg64;
    use std::collections::HashMap;

    const EXPIRY: fn() -> Expiry = || Expiry {
        spec: WindowSpec::tumbling(1_000).unwrap_or_else(|e| panic!("{e}")),
        horizon: 5_000,
    };

    /// The store as it was before runs and lazy expiry: a map swept entry
    /// by entry.
    #[derive(Clone, Default)]
    struct Reference {
        map: HashMap<String, Entry>,
    }

    impl Reference {
        fn expire(&mut self, now: EventTime) -> Vec<CompactString> {
            let e = EXPIRY();
            let mut models = Vec::new();
            self.map.retain(|_, entry| match entry.clone() {
                Entry::Prediction { time, .. } | Entry::Labeled { time, .. } => {
                    if e.expires(time) <= now {
                        let labeled = matches!(entry, Entry::Labeled { .. });
                        *entry = Entry::Expired { time, labeled };
                    }
                    true
                }
                Entry::Expired { time, .. } => e.forgotten(time) > now,
                Entry::Label { time, waiting } => {
                    if e.label_expires(time) <= now {
                        models.push(waiting.model.clone());
                        false
                    } else {
                        true
                    }
                }
            });
            models.sort();
            models
        }
    }

    fn random_entry(rng: &mut Pcg64, time: EventTime) -> Entry {
        let names = ["0", "1", "cat", "dog", "a-class-name-longer-than-24-bytes"];
        let name = |rng: &mut Pcg64| CompactString::from(names[rng.random_range(0..names.len())]);
        match rng.random_range(0..10) {
            0..=4 => Entry::Prediction {
                series: rng.random_range(0..3),
                time,
                outcome: Box::new(match rng.random_range(0..5) {
                    0 => Outcome {
                        score: Some(rng.random()),
                        ..Outcome::default()
                    },
                    1 => Outcome {
                        class: Some(name(rng)),
                        score: Some(rng.random()),
                        ..Outcome::default()
                    },
                    2 => Outcome {
                        value: Some(rng.random()),
                        ..Outcome::default()
                    },
                    3 => Outcome {
                        class: Some(name(rng)),
                        ..Outcome::default()
                    },
                    _ => Outcome {
                        probabilities: vec![(name(rng), 0.25), (name(rng), 0.75)],
                        ..Outcome::default()
                    },
                }),
            },
            5 | 6 => Entry::Labeled {
                series: rng.random_range(0..3),
                time,
            },
            7 | 8 => Entry::Label {
                time,
                waiting: Box::new(WaitingLabel {
                    model: name(rng),
                    label: if rng.random() {
                        StoredLabel::Class(name(rng))
                    } else {
                        StoredLabel::Value(rng.random())
                    },
                }),
            },
            _ => Entry::Expired {
                time,
                labeled: rng.random(),
            },
        }
    }

    fn store(budget: Option<u64>, dir: &std::path::Path) -> PendingStore {
        PendingStore::open(
            StoreConfig {
                memory_budget: budget.unwrap_or(u64::MAX),
                spill_dir: budget.map(|_| dir.to_owned()),
            },
            EXPIRY(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Random writes, reads, sweeps, checkpoints and restores, the same on
    /// the store and on the reference map: every read and every given-up
    /// label agree.
    fn same_as_the_reference(budget: Option<u64>, seed: u64) -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Checkpoint(e.to_string()))?;
        let mut rng = Pcg64::seed_from_u64(seed);
        let mut s = store(budget, dir.path());
        let mut reference = Reference::default();
        let mut checkpoints: Vec<(Vec<u8>, Reference)> = Vec::new();
        let ids = 20_000;
        let mut clock: EventTime = 0;
        let mut spilled_at_some_point = false;
        for step in 0..60_000 {
            clock += rng.random_range(0..3);
            if rng.random_range(0..3_000) == 0 {
                // a jump of more than a horizon between two sweeps
                clock += rng.random_range(5_000..15_000);
            }
            let id = format!("event-{}", rng.random_range(0..ids));
            match rng.random_range(0..100) {
                0..=59 => {
                    // read then write, as the tracker does
                    let got = s.get(&id)?;
                    assert_eq!(got.as_ref(), reference.map.get(&id), "step {step} {id}");
                    let time = clock - rng.random_range(0..2_000);
                    let e = random_entry(&mut rng, time);
                    s.insert(&id, e.clone())?;
                    reference.map.insert(id, e);
                }
                60..=79 => {
                    let time = clock - rng.random_range(0..2_000);
                    let e = random_entry(&mut rng, time);
                    s.insert(&id, e.clone())?;
                    reference.map.insert(id, e);
                }
                80..=97 => {
                    assert_eq!(
                        s.get(&id)?.as_ref(),
                        reference.map.get(&id),
                        "step {step} {id}"
                    );
                }
                _ if rng.random_range(0..4) == 0 => {
                    if rng.random_range(0..3) == 0 && !checkpoints.is_empty() {
                        // a crash: back to the last checkpoint or the one before
                        let back = rng.random_range(0..checkpoints.len().min(2));
                        // (the one before when the crash came before the last
                        // one's file was written; after it, that one is the last)
                        let (bytes, r) = checkpoints[checkpoints.len() - 1 - back].clone();
                        checkpoints = vec![(bytes.clone(), r.clone())];
                        drop(s);
                        s = store(budget, dir.path());
                        s.restore(&bytes)?;
                        reference = r;
                    } else {
                        checkpoints.push((s.snapshot()?, reference.clone()));
                    }
                }
                _ => {
                    let mut models = s.expire(clock)?;
                    models.sort();
                    assert_eq!(models, reference.expire(clock), "step {step}");
                }
            }
            spilled_at_some_point |= s.on_disk() > 0;
        }
        for i in 0..ids {
            let id = format!("event-{i}");
            assert_eq!(s.get(&id)?.as_ref(), reference.map.get(&id), "{id}");
        }
        // sweeps at one clock settle: what is gone goes within three, and
        // then no run is rewritten again and again
        for _ in 0..3 {
            s.expire(clock)?;
        }
        let (seq, runs) = (s.next_seq, s.mem.len());
        for _ in 0..5 {
            s.expire(clock)?;
        }
        assert_eq!((s.next_seq, s.mem.len()), (seq, runs), "{s:?}");
        if budget.is_some() {
            assert!(spilled_at_some_point, "{s:?}");
        }
        Ok(())
    }

    #[test]
    fn reads_and_expiry_are_those_of_a_map_swept_entry_by_entry() -> Result<()> {
        same_as_the_reference(None, 1)
    }

    #[test]
    fn spilled_runs_read_like_the_map_across_crashes() -> Result<()> {
        same_as_the_reference(Some(128 << 10), 2)?;
        same_as_the_reference(Some(320 << 10), 3)
    }

    #[test]
    fn expired_runs_are_dropped_and_their_files_removed() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Checkpoint(e.to_string()))?;
        let mut s = store(Some(256 << 10), dir.path());
        for i in 0..50_000i64 {
            s.insert(
                &format!("id-{i}"),
                Entry::Labeled {
                    series: 0,
                    time: i / 10,
                },
            )?;
            if i % 1_000 == 0 {
                s.expire(i / 10)?;
            }
        }
        assert!(s.on_disk() > 10_000, "{s:?}");
        s.snapshot()?;
        // two sweeps past every entry's end: nothing is left
        s.expire(20_000)?;
        s.expire(20_001)?;
        assert!(s.is_empty(), "{s:?}");
        // the last checkpoint's files stay, until two more are taken
        s.snapshot()?;
        s.snapshot()?;
        assert_eq!(s.files()?, Vec::<u64>::new());
        Ok(())
    }
}
