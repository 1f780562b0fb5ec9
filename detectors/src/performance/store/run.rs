//! Sorted runs of records: in memory (a vector) and on disk (a file read a
//! block at a time through an in-memory index and a Bloom filter).
//!
//! A disk run's file is written once and never changed: the records sorted
//! by key, 40 bytes each, then the extras they point to (each a 4-byte
//! length and its postcard bytes). A checkpoint names the files it needs.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{Extra, Key, RECORD_BYTES, Record};

/// Where the keys of each range of top bits start in a run sorted by key:
/// about eight records a slot, so a lookup reads one slot and a few cache
/// lines of records instead of a binary search's scattered ones.
#[derive(Debug)]
pub(super) struct Directory {
    starts: Vec<u32>,
    shift: u32,
}

impl Directory {
    pub fn new(records: &[Record]) -> Directory {
        let bits = (records.len() / 8).max(1).ilog2().min(31);
        let slots = 1usize << bits;
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity(slots + 1);
        let mut at = 0;
        for slot in 0..slots {
            while at < records.len() && ((records[at].hi >> shift.min(63)) as usize) < slot {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(records.len() as u32);
        Directory { starts, shift }
    }

    /// The records that may hold `k`.
    pub fn range(&self, k: Key) -> std::ops::Range<usize> {
        let slot = if self.shift >= 64 {
            0
        } else {
            (k.hi >> self.shift) as usize
        };
        self.starts[slot] as usize..self.starts[slot + 1] as usize
    }

    pub fn bytes(&self) -> usize {
        self.starts.capacity() * 4
    }
}

/// A Bloom filter over a run's keys, about 10 bits and 7 probes in one
/// 512-bit block per key (under 2 % false positives).
#[derive(Debug)]
pub(super) struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    pub fn new(keys: usize) -> Bloom {
        Bloom {
            blocks: vec![[0; 8]; (keys * 10).div_ceil(512).max(1)],
        }
    }

    fn probes(&self, k: Key) -> (usize, impl Iterator<Item = (usize, u64)> + use<>) {
        let block = ((u128::from(k.hi) * self.blocks.len() as u128) >> 64) as usize;
        let h = (u64::from(k.lo) << 32) | (k.hi & 0xffff_ffff);
        let step = h.rotate_left(21) | 1;
        let bits = (0..7u64).map(move |i| {
            let bit = h.wrapping_add(i.wrapping_mul(step)) >> 55; // 0..512
            ((bit / 64) as usize, 1u64 << (bit % 64))
        });
        (block, bits)
    }

    pub fn insert(&mut self, k: Key) {
        let (b, bits) = self.probes(k);
        for (w, bit) in bits {
            self.blocks[b][w] |= bit;
        }
    }

    pub fn may_contain(&self, k: Key) -> bool {
        let (b, mut bits) = self.probes(k);
        bits.all(|(w, bit)| self.blocks[b][w] & bit != 0)
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// Records per block of a disk run: a lookup reads one block.
const BLOCK: usize = 32;

/// A run on disk.
#[derive(Debug)]
pub(super) struct DiskRun {
    pub seq: u64,
    path: PathBuf,
    file: File,
    /// the extras file, if any record has one
    extras: Option<File>,
    pub len: usize,
    /// whether its files reached the disk (not only the page cache)
    synced: bool,
    /// first key of each block
    fence: Vec<Key>,
    pub bloom: Bloom,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The file of run `seq` in `dir`.
pub(super) fn run_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("run-{seq:012}.dat"))
}

/// The run number of a file name written by [`run_path`].
pub(super) fn run_seq(name: &str) -> Option<u64> {
    name.strip_prefix("run-")?
        .strip_suffix(".dat")?
        .parse()
        .ok()
}

impl DiskRun {
    /// Writes `records` (sorted by key, each with its extra if it has one)
    /// as run `seq`. Its index is built by [`load_index`](Self::load_index),
    /// once the runs it replaces have let go of theirs.
    pub fn write(
        dir: &Path,
        seq: u64,
        records: impl Iterator<Item = Result<(Record, Option<Extra>), String>>,
    ) -> Result<DiskRun, String> {
        let path = run_path(dir, seq);
        let file = File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut out = BufWriter::with_capacity(1 << 16, &file);
        let mut extras: Option<(PathBuf, BufWriter<File>)> = None;
        let mut extras_len = 0u64;
        let mut run = DiskRun {
            seq,
            file: file.try_clone().map_err(|e| io_err(&path, e))?,
            extras: None,
            path: path.clone(),
            len: 0,
            synced: false,
            fence: Vec::new(),
            bloom: Bloom::new(0),
        };
        let mut buf = Vec::with_capacity(RECORD_BYTES);
        for item in records {
            let (mut r, extra) = item?;
            if let Some(extra) = extra {
                if extras.is_none() {
                    let p = path.with_extension("ext");
                    let f = File::create(&p).map_err(|e| io_err(&p, e))?;
                    extras = Some((p, BufWriter::with_capacity(1 << 16, f)));
                }
                if let Some((p, w)) = &mut extras {
                    let bytes = postcard::to_stdvec(&extra).map_err(|e| io_err(p, e))?;
                    r.x = extras_len;
                    w.write_all(&(bytes.len() as u32).to_le_bytes())
                        .and_then(|()| w.write_all(&bytes))
                        .map_err(|e| io_err(p, e))?;
                    extras_len += 4 + bytes.len() as u64;
                }
            }
            run.len += 1;
            buf.clear();
            r.write(&mut buf);
            out.write_all(&buf).map_err(|e| io_err(&path, e))?;
        }
        out.flush().map_err(|e| io_err(&path, e))?;
        drop(out);
        run.file = File::open(&path).map_err(|e| io_err(&path, e))?;
        if let Some((p, mut w)) = extras {
            w.flush().map_err(|e| io_err(&p, e))?;
            run.extras = Some(File::open(&p).map_err(|e| io_err(&p, e))?);
        }
        Ok(run)
    }

    /// Builds the index (block fence and Bloom filter) from the file.
    pub fn load_index(&mut self) -> Result<(), String> {
        let mut fence = Vec::with_capacity(self.len.div_ceil(BLOCK));
        let mut bloom = Bloom::new(self.len);
        for (i, r) in self.records()?.enumerate() {
            let r = r?;
            if i.is_multiple_of(BLOCK) {
                fence.push(r.key());
            }
            bloom.insert(r.key());
        }
        self.fence = fence;
        self.bloom = bloom;
        Ok(())
    }

    /// Opens run `seq` of `dir` with `len` records, rebuilding its index.
    pub fn open(dir: &Path, seq: u64, len: usize) -> Result<DiskRun, String> {
        let path = run_path(dir, seq);
        let file = File::open(&path).map_err(|e| io_err(&path, e))?;
        let ext = path.with_extension("ext");
        let extras = match File::open(&ext) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&ext, e)),
        };
        let mut run = DiskRun {
            seq,
            file,
            extras,
            path,
            synced: true,
            len,
            fence: Vec::new(),
            bloom: Bloom::new(0),
        };
        run.load_index()?;
        Ok(run)
    }

    /// Makes its files durable (a checkpoint is about to name them);
    /// whether they were not yet.
    pub fn sync(&mut self) -> Result<bool, String> {
        let fresh = !self.synced;
        if fresh {
            self.file.sync_all().map_err(|e| io_err(&self.path, e))?;
            if let Some(f) = &self.extras {
                f.sync_all().map_err(|e| io_err(&self.path, e))?;
            }
            self.synced = true;
        }
        Ok(fresh)
    }

    /// Bytes its index takes in memory.
    pub fn bytes(&self) -> usize {
        self.bloom.bytes() + self.fence.capacity() * std::mem::size_of::<Key>()
    }

    /// The record of `k`, if the run has one.
    pub fn get(&self, k: Key) -> Result<Option<Record>, String> {
        if !self.bloom.may_contain(k) {
            return Ok(None);
        }
        let block = self.fence.partition_point(|f| *f <= k);
        if block == 0 {
            return Ok(None);
        }
        let first = (block - 1) * BLOCK;
        let n = BLOCK.min(self.len - first);
        let mut buf = [0u8; BLOCK * RECORD_BYTES];
        let buf = &mut buf[..n * RECORD_BYTES];
        self.file
            .read_exact_at(buf, (first * RECORD_BYTES) as u64)
            .map_err(|e| io_err(&self.path, e))?;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = Record::read(&buf[mid * RECORD_BYTES..]);
            match r.key().cmp(&k) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(r)),
            }
        }
        Ok(None)
    }

    /// Its record number `i` (in key order).
    pub fn record_at(&self, i: u64) -> Result<Record, String> {
        let mut buf = [0u8; RECORD_BYTES];
        self.file
            .read_exact_at(&mut buf, i * RECORD_BYTES as u64)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(Record::read(&buf))
    }

    /// The extra a record of this run points to.
    pub fn extra(&self, r: &Record) -> Result<Extra, String> {
        let ext = self.path.with_extension("ext");
        let file = self
            .extras
            .as_ref()
            .ok_or_else(|| io_err(&ext, "missing: a record has an extra"))?;
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, r.x)
            .map_err(|e| io_err(&ext, e))?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        file.read_exact_at(&mut bytes, r.x + 4)
            .map_err(|e| io_err(&ext, e))?;
        postcard::from_bytes(&bytes).map_err(|e| io_err(&ext, e))
    }

    /// Every record, in key order, read sequentially.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<Record, String>> + use<>, String> {
        // a file of its own: its read offset is not shared
        let file = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let path = self.path.clone();
        let mut left = self.len;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut buf = [0u8; RECORD_BYTES];
            Some(
                reader
                    .read_exact(&mut buf)
                    .map(|()| Record::read(&buf))
                    .map_err(|e| io_err(&path, e)),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Record {
        let k = Key::of(&format!("id-{i}"));
        Record {
            hi: k.hi,
            lo: k.lo,
            time: i as i64,
            ..Record::default()
        }
    }

    #[test]
    fn the_directory_range_of_a_key_holds_its_record() {
        for n in [0usize, 1, 2, 3, 10, 1000, 4097, 70_000] {
            let mut rs: Vec<Record> = (0..n as u64).map(record).collect();
            rs.sort_unstable_by_key(Record::key);
            let dir = Directory::new(&rs);
            for (i, r) in rs.iter().enumerate() {
                assert!(dir.range(r.key()).contains(&i), "n {n} record {i}");
            }
            assert!(
                dir.bytes() <= 4 * (n / 4 + 2),
                "n {n}: {} bytes",
                dir.bytes()
            );
            // keys not in the run: a range within it
            for k in [
                Key::default(),
                Key {
                    hi: u64::MAX,
                    lo: u32::MAX,
                },
                record(n as u64 + 1).key(),
            ] {
                assert!(dir.range(k).end <= n);
            }
        }
    }

    #[test]
    fn a_disk_run_finds_every_record_and_its_extra() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut rs: Vec<Record> = (0..1000).map(|i| record(i * 2)).collect();
        rs[7].meta = 1 << 6; // has an extra
        rs.sort_unstable_by_key(Record::key);
        let with_extra = rs.iter().find(|r| r.has_extra()).copied();
        let extra = Extra::Label(super::super::WaitingLabel {
            model: "m".into(),
            label: super::super::StoredLabel::Value(2.5),
        });
        let mut run = DiskRun::write(
            dir.path(),
            1,
            rs.iter()
                .map(|r| Ok((*r, r.has_extra().then(|| extra.clone())))),
        )?;
        run.load_index()?;
        let reopened = DiskRun::open(dir.path(), 1, rs.len())?;
        for run in [&run, &reopened] {
            let mut false_positives = 0;
            for i in 0..2000 {
                let r = record(i);
                match run.get(r.key())? {
                    Some(found) => {
                        assert_eq!(i % 2, 0);
                        assert_eq!(found.time, r.time);
                    }
                    None if i % 2 == 0 => return Err(format!("{i} not found")),
                    None => false_positives += usize::from(run.bloom.may_contain(r.key())),
                }
            }
            assert!(false_positives < 40, "{false_positives}");
            let found = run
                .get(with_extra.map(|r| r.key()).unwrap_or_default())?
                .ok_or("record with extra")?;
            assert_eq!(run.extra(&found)?, extra);
            let all: Vec<Record> = run.records()?.collect::<Result<_, _>>()?;
            assert_eq!(all.len(), rs.len());
            assert!(all.iter().zip(&rs).all(|(a, b)| a.key() == b.key()));
        }
        Ok(())
    }
}
