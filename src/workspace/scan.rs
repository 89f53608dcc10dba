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
use crate::progress::Progress;
use crate::tree::chunks::ContentRef;
use crate::tree::commit::Top;
use crate::tree::dir::{write_dir, Content, DirEntry, EntryKind};
use crate::tree::rechunk::{chunk_all, RechunkError};
use crate::tree::Objects;

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
        // Read into private windows: a writer racing the commit may change
        // the file between hashing and compressing, and the store must
        // never hold bytes that do not match their id. A file that shrinks
        // under the read is a change (the commit fails), never a fault, as
        // a truncated mapping would be.
        let read = |at: u64, buf: &mut [u8]| {
            file.read_exact_at(buf, at)?;
            self.progress.advance(buf.len() as u64);
            Ok(())
        };
        chunk_all(self.objects, &self.chunker, size, &read).map_err(|e| match e {
            RechunkError::Read(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                WorkspaceError::Changed {
                    path: path.to_path_buf(),
                }
            }
            RechunkError::Read(e) => read_err(path)(e),
            RechunkError::Tree(e) => e.into(),
        })
    }
}
