//! Scanning a working directory into a tree.
//!
//! Directory entries are scanned in parallel; files whose stat data match the
//! stat cache are not read; other files are read through a sliding 16 MiB
//! window, chunked, and their chunks hashed, compressed and stored in
//! parallel. Memory stays bounded by the window size times the number of
//! threads, whatever the volume size.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::cache::{Stat, StatCache};
use super::fsmeta::read_xattrs;
use super::{join_rel, read_err, Result, WorkspaceError};
use crate::chunker::Chunker;
use crate::id::{ChunkId, Id};
use crate::progress::Progress;
use crate::store::Kind;
use crate::tree::chunks::{ChunkTreeBuilder, ContentRef, Leaf};
use crate::tree::commit::Top;
use crate::tree::dir::{write_dir, Content, DirEntry, EntryKind};
use crate::tree::Objects;

/// Bytes of a file read at once. Larger than the maximum chunk, so every
/// window yields at least one final cut.
const WINDOW: u64 = 16 << 20;

pub struct Scanner<'a> {
    objects: &'a dyn Objects,
    chunker: Chunker,
    cache: &'a StatCache<'a>,
    /// Whether objects named by cache entries must be checked to exist (a
    /// commit must not refer to objects that gc has removed).
    check_cached: bool,
    progress: &'a dyn Progress,
    updates: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    bytes: AtomicU64,
}

/// What a scan produced.
pub struct Scanned {
    pub top: Top,
    /// Stat cache entries to record once the objects they name are durable.
    pub cache_updates: Vec<(Vec<u8>, Vec<u8>)>,
    pub bytes: u64,
}

impl<'a> Scanner<'a> {
    pub fn new(
        objects: &'a dyn Objects,
        chunker: Chunker,
        cache: &'a StatCache<'a>,
        check_cached: bool,
        progress: &'a dyn Progress,
    ) -> Scanner<'a> {
        Scanner {
            objects,
            chunker,
            cache,
            check_cached,
            progress,
            updates: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
        }
    }

    /// Scans the directory `root` into a tree.
    pub fn scan(self, root: &Path) -> Result<Scanned> {
        super::pool().install(|| self.scan_here(root))
    }

    fn scan_here(self, root: &Path) -> Result<Scanned> {
        let md = fs::metadata(root).map_err(read_err(root))?;
        if !md.is_dir() {
            return Err(WorkspaceError::Read {
                path: root.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        let tree = self.scan_dir(root, b"", 0)?;
        Ok(Scanned {
            top: Top {
                tree,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: Stat::of(&md).mtime_ns,
            },
            cache_updates: self.updates.into_inner().expect("updates lock"),
            bytes: self.bytes.into_inner(),
        })
    }

    fn scan_dir(&self, abs: &Path, rel: &[u8], depth: usize) -> Result<crate::id::TreeId> {
        super::check_depth(depth, abs)?;
        if self.progress.cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(abs).map_err(read_err(abs))? {
            names.push(entry.map_err(read_err(abs))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let entries: Vec<Option<DirEntry>> = names
            .par_iter()
            .map(|name| {
                self.scan_entry(
                    &abs.join(name),
                    &join_rel(rel, name.as_bytes()),
                    name,
                    depth,
                )
            })
            .collect::<Result<_>>()?;
        let entries: Vec<DirEntry> = entries.into_iter().flatten().collect();
        Ok(write_dir(self.objects, &entries)?)
    }

    fn scan_entry(
        &self,
        path: &Path,
        rel: &[u8],
        name: &OsStr,
        depth: usize,
    ) -> Result<Option<DirEntry>> {
        let md = match fs::symlink_metadata(path) {
            Ok(md) => md,
            // Listed a moment ago, gone now: something is writing here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WorkspaceError::Changed {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(read_err(path)(e)),
        };
        let ft = md.file_type();
        let st = Stat::of(&md);
        let (kind, size, content) = if ft.is_dir() {
            (
                EntryKind::Dir,
                0,
                Content::Dir(self.scan_dir(path, rel, depth + 1)?),
            )
        } else if ft.is_file() {
            (
                EntryKind::File,
                md.size(),
                Content::File(self.file_content(path, rel, &st)?),
            )
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err(path))?;
            let target = target.as_os_str().as_bytes().to_vec();
            (
                EntryKind::Symlink,
                target.len() as u64,
                Content::Symlink(target),
            )
        } else if ft.is_fifo() {
            (EntryKind::Fifo, 0, Content::Fifo)
        } else if ft.is_char_device() {
            (EntryKind::CharDevice, 0, Content::Device(md.rdev()))
        } else if ft.is_block_device() {
            (EntryKind::BlockDevice, 0, Content::Device(md.rdev()))
        } else {
            // Sockets belong to a running process and cannot be restored.
            return Ok(None);
        };
        Ok(Some(DirEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: st.mtime_ns,
            size,
            content,
            xattrs: read_xattrs(path).map_err(read_err(path))?,
        }))
    }

    fn file_content(&self, path: &Path, rel: &[u8], st: &Stat) -> Result<ContentRef> {
        if self.progress.cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        self.bytes.fetch_add(st.size, Ordering::Relaxed);
        if let Some(content) = self.cache.lookup(rel, st)? {
            let present = match (self.check_cached, content.object()) {
                (true, Some(id)) => self.objects.has(&id)?,
                _ => true,
            };
            if present {
                self.progress.advance(st.size);
                return Ok(content);
            }
        }
        let file = File::open(path).map_err(read_err(path))?;
        let before = Stat::of(&file.metadata().map_err(read_err(path))?);
        if before != *st {
            return Err(WorkspaceError::Changed {
                path: path.to_path_buf(),
            });
        }
        let content = self.chunk_file(&file, path, st.size)?;
        let after = Stat::of(&file.metadata().map_err(read_err(path))?);
        if after != before {
            return Err(WorkspaceError::Changed {
                path: path.to_path_buf(),
            });
        }
        self.updates
            .lock()
            .expect("updates lock")
            .push((self.cache.key(rel), StatCache::entry(&after, &content)));
        Ok(content)
    }

    fn chunk_file(&self, file: &File, path: &Path, size: u64) -> Result<ContentRef> {
        let mut builder = ChunkTreeBuilder::new(self.objects);
        let mut window = Vec::new();
        let mut start = 0u64;
        while start < size {
            let len = WINDOW.min(size - start);
            let eof = start + len == size;
            // A private copy of the window: a writer racing the commit may
            // change the file between hashing and compressing, and the store
            // must never hold bytes that do not match their id. A file that
            // shrinks under the read is a change (the commit fails), never
            // a fault, as a truncated mapping would be.
            window.resize(len as usize, 0);
            file.read_exact_at(&mut window, start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    WorkspaceError::Changed {
                        path: path.to_path_buf(),
                    }
                } else {
                    read_err(path)(e)
                }
            })?;
            let cuts = self.chunker.cuts(&window, eof);
            let leaves: Vec<Leaf> = cuts
                .par_iter()
                .map(|&(off, n)| {
                    self.progress.advance(n as u64);
                    let data = &window[off..off + n];
                    if is_zero(data) {
                        return Ok(Leaf::Zero(n as u64));
                    }
                    let id = Id::of(data);
                    self.objects.put(Kind::Chunk, &id, data)?;
                    Ok(Leaf::Chunk(ChunkId(id), n as u32))
                })
                .collect::<crate::tree::Result<_>>()?;
            let consumed: u64 = leaves.iter().map(Leaf::len).sum();
            for leaf in leaves {
                builder.push(leaf)?;
            }
            start += consumed;
        }
        Ok(builder.finish()?)
    }
}

fn is_zero(data: &[u8]) -> bool {
    let (words, rest) = data.as_chunks::<16>();
    words.iter().all(|w| u128::from_ne_bytes(*w) == 0) && rest.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[3] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
