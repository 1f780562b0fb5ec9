//! Files that survive a crash whole: every state file driftwatch keeps
//! (checkpoints, reference profiles, silences, the run summary, history
//! files) is written through [`write_with`], so a crash or a kill at any
//! instant leaves either the old file or the new one, never a torn one.
//!
//! The steps: a temporary file with a name no other writer uses (process id
//! and a counter) in the same directory, the content, `fsync`, a rename over
//! the target, an `fsync` of the directory so the rename itself is on disk.
//! Two processes writing the same file at once each land a whole file; to
//! keep both one's and the other's changes, read-modify-write under
//! [`Lock`].

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `path` with what `fill` writes into a fresh file, atomically and
/// durably (see the module). Creates the directory when missing.
pub fn write_with<F>(path: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    stage_with(path, fill)?.commit()
}

/// A file written in full under a temporary name beside its target, not yet
/// in place: [`commit`](Self::commit) renames it over the target; dropped
/// uncommitted, it is removed. Lets one thread do the writing while another
/// chooses when readers see the file.
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// The first step of [`write_with`]: the content written and synced under a
/// temporary name, the target untouched.
pub fn stage_with<F>(path: &Path, fill: F) -> io::Result<StagedFile>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staged = StagedFile {
        tmp: dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )),
        target: path.to_owned(),
        committed: false,
    };
    // from here on, an error drops `staged`, which removes the temporary
    let mut file = File::create_new(&staged.tmp)?;
    fill(&mut file)?;
    file.flush()?;
    file.sync_all()?;
    Ok(staged)
}

impl StagedFile {
    /// Where the file goes.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the file over its target and makes the rename durable.
    pub fn commit(mut self) -> io::Result<()> {
        std::fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        sync_dir(parent(&self.target))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The name of the file that `name` was a temporary of, when `name` is one
/// [`write_with`] made (and a crash left behind).
pub fn temporary_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, counter) = rest.rsplit_once('.')?;
    let (target, pid) = rest.rsplit_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(counter) && !target.is_empty()).then_some(target)
}

/// [`write_with`] of `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// Makes the directory entries of `dir` (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An exclusive lock between processes on a state file, held until dropped:
/// `<file>.lock` beside it, locked with the operating system's file lock
/// (released when the process dies, so a killed holder never blocks others).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Waits for and takes the lock of `path`.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        std::fs::create_dir_all(parent(&lock_path))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok(Lock {
            _file: file,
            path: lock_path,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write(&path, b"old").expect("first write");
        let e = write_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .expect_err("fails");
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        write(&path, b"new").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn a_staged_file_is_in_place_only_once_committed_and_gone_if_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rows.parquet");
        let names = || -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let staged = stage_with(&path, |f| f.write_all(b"rows")).expect("stage");
        assert!(!path.exists());
        let listed = names();
        assert_eq!(listed.len(), 1);
        assert_eq!(temporary_target(&listed[0]), Some("rows.parquet"));
        staged.commit().expect("commit");
        assert_eq!(names(), ["rows.parquet"]);
        assert_eq!(std::fs::read(&path).expect("read"), b"rows");
        // staged and dropped: the temporary goes, the file stays as it was
        drop(stage_with(&path, |f| f.write_all(b"other")).expect("stage"));
        assert_eq!(names(), ["rows.parquet"]);
        assert_eq!(std::fs::read(&path).expect("read"), b"rows");
    }

    #[test]
    fn temporaries_name_their_target() {
        assert_eq!(
            temporary_target(".p0-000000000012.parquet.4711.3.tmp"),
            Some("p0-000000000012.parquet")
        );
        assert_eq!(temporary_target("p0-000000000012.parquet"), None);
        assert_eq!(temporary_target(".x.tmp"), None);
        assert_eq!(temporary_target(".x.a.1.tmp"), None);
    }

    #[test]
    fn writers_in_threads_each_land_a_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/state.bin");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || write(path, &[i; 4096]).expect("write"));
            }
        });
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|b| *b == bytes[0]), "torn");
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silences.json");
        let held = Lock::acquire(&path).expect("lock");
        assert!(held.path().ends_with("silences.json.lock"));
        let other = File::options().write(true).open(held.path()).expect("open");
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().expect("free once dropped");
    }
}
