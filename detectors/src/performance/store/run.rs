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

/// Where `k` is in `records` (sorted by key) or would go. Keys are hashes,
/// spread evenly: the search starts where `k` would be in an even spread
/// and widens from there (a few probes instead of a binary search's ~20).
pub(super) fn search(records: &[Record], k: Key) -> Result<usize, usize> {
    let n = records.len();
    if n == 0 {
        return Err(0);
    }
    let g = ((u128::from(k.hi) * n as u128) >> 64) as usize;
    let (lo, hi) = if records[g].key() < k {
        // the place is in (g, n]
        let (mut lo, mut step) = (g + 1, 1);
        loop {
            let probe = g + step;
            if probe >= n {
                break (lo, n);
            }
            if records[probe].key() >= k {
                break (lo, probe + 1);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        // the place is in [0, g]
        let (mut hi, mut step) = (g + 1, 1);
        loop {
            if step > g {
                break (0, hi);
            }
            let probe = g - step;
            if records[probe].key() < k {
                break (probe + 1, hi);
            }
            hi = probe + 1;
            step *= 2;
        }
    };
    records[lo..hi]
        .binary_search_by(|r| r.key().cmp(&k))
        .map(|i| lo + i)
        .map_err(|i| lo + i)
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
    /// as run `seq`; `capacity` is at least their number.
    pub fn write(
        dir: &Path,
        seq: u64,
        capacity: usize,
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
            fence: Vec::new(),
            bloom: Bloom::new(capacity),
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
            run.index(run.len, &r);
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
        run.fence.shrink_to_fit();
        Ok(run)
    }

    fn index(&mut self, i: usize, r: &Record) {
        if i.is_multiple_of(BLOCK) {
            self.fence.push(r.key());
        }
        self.bloom.insert(r.key());
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
            len,
            fence: Vec::with_capacity(len.div_ceil(BLOCK)),
            bloom: Bloom::new(len),
        };
        let records: Vec<Record> = run.records()?.collect::<Result<_, _>>()?;
        for (i, r) in records.iter().enumerate() {
            run.index(i, r);
        }
        Ok(run)
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
    fn search_finds_what_a_binary_search_finds() {
        for n in [0usize, 1, 2, 3, 10, 1000, 4097] {
            let mut rs: Vec<Record> = (0..n as u64).map(|i| record(i * 2)).collect();
            rs.sort_unstable_by_key(Record::key);
            for i in 0..(2 * n as u64 + 2) {
                let k = record(i).key();
                assert_eq!(
                    search(&rs, k),
                    rs.binary_search_by(|r| r.key().cmp(&k)),
                    "n {n} i {i}"
                );
            }
            // extremes of the key space
            for k in [
                Key::default(),
                Key {
                    hi: u64::MAX,
                    lo: u32::MAX,
                },
            ] {
                assert_eq!(search(&rs, k), rs.binary_search_by(|r| r.key().cmp(&k)));
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
        let run = DiskRun::write(
            dir.path(),
            1,
            rs.len(),
            rs.iter()
                .map(|r| Ok((*r, r.has_extra().then(|| extra.clone())))),
        )?;
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
