//! The upper directory as it was when a mounted commit froze it
//! (docs/design.md 16.6): the commit builds that state while programs
//! go on writing. A write keeps, before it lands, what the blocks it
//! changes showed at the freeze (and the file's attributes then); an
//! entry copied up after the freeze is marked as made since. Everything
//! else that changes names or attributes waits until the freeze ends.
//! Kept blocks go to a file of their own with no name, beside the upper
//! directory: however long the build, they take no memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Blocks kept, and the block size of partial files (16.4): their writes
/// are made whole blocks of it.
pub(super) const BLOCK: u64 = 4096;

pub(super) struct Freeze {
    inner: Mutex<Inner>,
}

/// A file, whatever its names: its device and inode in the upper
/// directory (a write through one of several hard links changes them all).
type FileKey = (u64, u64);

fn key(md: &fs::Metadata) -> FileKey {
    (md.dev(), md.ino())
}

struct Inner {
    files: HashMap<FileKey, Frozen>,
    /// Upper entries made since the freeze (copied up by a write).
    made: HashSet<PathBuf>,
    /// Where kept blocks are, one after another.
    kept: File,
    kept_len: u64,
}

/// A file written since the freeze.
struct Frozen {
    /// Its attributes at the freeze (size, times...).
    md: fs::Metadata,
    /// Where in `kept` what each block written since showed at the
    /// freeze is, by block number (its length: the block's, up to the size
    /// at the freeze).
    blocks: BTreeMap<u64, u64>,
    /// The names it was written through.
    names: HashSet<PathBuf>,
}

impl Freeze {
    /// A freeze keeping blocks in a file with no name in `dir`.
    pub fn new(dir: &Path) -> io::Result<Freeze> {
        let mut open = fs::OpenOptions::new();
        open.read(true).write(true);
        #[cfg(target_os = "linux")]
        let unnamed = open.clone().custom_flags(libc::O_TMPFILE).open(dir);
        #[cfg(not(target_os = "linux"))]
        let unnamed: io::Result<File> = Err(io::ErrorKind::Unsupported.into());
        let kept = match unnamed {
            Ok(f) => f,
            // A file system without O_TMPFILE: a name, removed at once.
            Err(_) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let path = dir.join(format!(".freeze.{}.{stamp}", std::process::id()));
                let f = open.create_new(true).open(&path)?;
                fs::remove_file(&path)?;
                f
            }
        };
        Ok(Freeze {
            inner: Mutex::new(Inner {
                files: HashMap::new(),
                made: HashSet::new(),
                kept,
                kept_len: 0,
            }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upper entry `up` was made since the freeze.
    pub fn made(&self, up: &Path) {
        self.inner().made.insert(up.to_path_buf());
    }

    pub fn is_made(&self, up: &Path) -> bool {
        self.inner().made.contains(up)
    }

    /// Whether anything changed since the freeze.
    pub fn touched(&self) -> bool {
        let i = self.inner();
        !i.files.is_empty() || !i.made.is_empty()
    }

    /// Before bytes `from..to` of upper file `up` (open as `f`) are
    /// written: keeps what the blocks they touch show now, read by
    /// `show`, unless kept already. Blocks past the file's size at the
    /// freeze showed nothing.
    pub fn keep(
        &self,
        up: &Path,
        f: &File,
        from: u64,
        to: u64,
        show: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut guard = self.inner();
        let i = &mut *guard;
        if i.made.contains(up) {
            return Ok(());
        }
        let now = f.metadata()?;
        let frozen = i.files.entry(key(&now)).or_insert_with(|| Frozen {
            md: now,
            blocks: BTreeMap::new(),
            names: HashSet::new(),
        });
        if !frozen.names.contains(up) {
            frozen.names.insert(up.to_path_buf());
        }
        let size = frozen.md.len();
        let mut block = from / BLOCK;
        while block * BLOCK < to.min(size) {
            let at = block * BLOCK;
            if let std::collections::btree_map::Entry::Vacant(e) = frozen.blocks.entry(block) {
                let mut buf = vec![0u8; (size - at).min(BLOCK) as usize];
                show(at, &mut buf)?;
                i.kept.write_all_at(&buf, i.kept_len)?;
                e.insert(i.kept_len);
                i.kept_len += buf.len() as u64;
            }
            block += 1;
        }
        Ok(())
    }

    /// The attributes at the freeze of the upper file that has `now`, if
    /// it was written since (else they are `now`: ask after reading them,
    /// so that a write starting meanwhile is seen).
    pub fn metadata(&self, now: &fs::Metadata) -> Option<fs::Metadata> {
        self.inner().files.get(&key(now)).map(|f| f.md.clone())
    }

    /// Puts back into `buf`, read at `at` of the upper file that has `md`
    /// (after the read), what blocks written since showed at the freeze.
    pub fn patch(&self, md: &fs::Metadata, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let i = self.inner();
        let Some(f) = i.files.get(&key(md)) else {
            return Ok(());
        };
        let end = at + buf.len() as u64;
        for (&block, &where_) in f.blocks.range(at / BLOCK..end.div_ceil(BLOCK)) {
            let start = block * BLOCK;
            let len = (f.md.len() - start).min(BLOCK);
            let (a, b) = (start.max(at), (start + len).min(end));
            if a < b {
                i.kept.read_exact_at(
                    &mut buf[(a - at) as usize..(b - at) as usize],
                    where_ + (a - start),
                )?;
            }
        }
        Ok(())
    }

    /// The names of the files written since, each with the byte ranges
    /// written (whole blocks; past the old size, everything from it on).
    pub fn written(&self) -> Vec<(PathBuf, Vec<(u64, u64)>)> {
        let mut out = Vec::new();
        for f in self.inner().files.values() {
            let mut ranges: Vec<(u64, u64)> = f
                .blocks
                .keys()
                .map(|b| (b * BLOCK, (b + 1) * BLOCK))
                .collect();
            ranges.push((f.md.len(), u64::MAX));
            out.extend(f.names.iter().map(|n| (n.clone(), ranges.clone())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_keeps_what_its_blocks_showed_and_a_read_gets_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let up = tmp.path().join("f");
        let old: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        fs::write(&up, &old).unwrap();
        let f = File::options().read(true).write(true).open(&up).unwrap();
        let z = Freeze::new(tmp.path()).unwrap();
        let mut show = |at: u64, buf: &mut [u8]| f.read_exact_at(buf, at);
        // A write across two blocks and past the end.
        z.keep(&up, &f, 4000, 12_000, &mut show).unwrap();
        f.write_all_at(&[7u8; 8000], 4000).unwrap();
        assert!(z.touched());
        let now = fs::metadata(&up).unwrap();
        assert_eq!(z.metadata(&now).unwrap().len(), 10_000);
        let mut buf = vec![0u8; 10_000];
        f.read_exact_at(&mut buf, 0).unwrap();
        z.patch(&now, 0, &mut buf).unwrap();
        assert_eq!(buf, old);
        // An unaligned read.
        let mut part = vec![0u8; 5000];
        f.read_exact_at(&mut part, 3001).unwrap();
        z.patch(&now, 3001, &mut part).unwrap();
        assert_eq!(part, old[3001..8001]);
        // A second write keeps nothing new over a kept block.
        z.keep(&up, &f, 4096, 4100, &mut show).unwrap();
        let w = z.written();
        assert_eq!(
            w[0].1,
            vec![(0, 4096), (4096, 8192), (8192, 12288), (10_000, u64::MAX)]
        );
        // Another name of the same file is the same file.
        let link = tmp.path().join("f2");
        fs::hard_link(&up, &link).unwrap();
        let mut again = vec![0u8; 10_000];
        f.read_exact_at(&mut again, 0).unwrap();
        z.patch(&fs::metadata(&link).unwrap(), 0, &mut again)
            .unwrap();
        assert_eq!(again, old);
        let made = tmp.path().join("g");
        fs::write(&made, b"new").unwrap();
        z.made(&made);
        let g = File::options().read(true).write(true).open(&made).unwrap();
        z.keep(&made, &g, 0, 10, &mut show).unwrap();
        assert!(z.is_made(&made) && z.metadata(&fs::metadata(&made).unwrap()).is_none());
    }
}
