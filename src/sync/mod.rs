//! Remotes: push, pull and clone of objects and branch values through plain
//! blob storage (S3, HTTP/WebDAV, a directory). Knows the store and the
//! Merkle objects, not dots' configuration or the command line; the repo
//! layer decides what to move and the CLI draws progress.
//!
//! Only missing data travels. A push walks the DAG from the branch head and
//! stops at objects the remote holds (the remote's index files say which,
//! and what they name is always complete, see `push`); a fetch walks from
//! the remote head and reads only objects the local store lacks, in
//! coalesced ranged reads, checking every id before storing anything.

pub(crate) mod backend;
mod fetch;
pub(crate) mod known;
pub(crate) mod layout;
pub(crate) mod maintain;
mod push;

pub use backend::{Backend, BackendError, Credentials, Location, ObjectBackend};
pub(crate) use fetch::fetch;
pub use fetch::FetchStats;
pub use known::Known;
pub use layout::RemoteRef;
pub use maintain::{GcState, RemoteFsckReport, RemoteGcStats};
pub(crate) use push::push_objects;
pub use push::PushStats;

use crate::id::Id;
use crate::store::StoreError;
use crate::tree::TreeError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The user interrupted the transfer; no ref moved.
    #[error("cancelled; no branch or working directory was changed (what was sent or received stays, and the next run reuses it)")]
    Cancelled,
    #[error("remote {remote}: {error}")]
    Backend { remote: String, error: BackendError },
    #[error("{what} on remote {remote} is damaged ({why}); no branch or working directory was changed; push it again from a good copy")]
    Damaged {
        remote: String,
        what: String,
        why: String,
    },
    #[error("remote {remote} lacks object {id}, which the pushed commits need; push them to it again from a complete copy")]
    Incomplete { remote: String, id: Id },
    /// A push would send again exactly the one-object pack a pending gc
    /// marker of the remote dooms.
    #[error("a gc of remote {0} has marked for deletion exactly the data this push would send; push again after that gc's sweep (its next dot gc --remote run after gc.remoteGrace)")]
    GcPending(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

pub type Result<T> = std::result::Result<T, SyncError>;

/// Runs `f` on every item from up to `workers` threads (remote requests
/// wait on the network, not the CPU) and returns the results in item
/// order. After the first error no new item starts, and that error is
/// returned.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(items.len()));
    let failure = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..items.len().min(workers) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || failure.lock().expect("lock").is_some() {
                    return;
                }
                match f(&items[i]) {
                    Ok(r) => done.lock().expect("lock").push((i, r)),
                    Err(e) => {
                        failure.lock().expect("lock").get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    let mut done = done.into_inner().expect("lock");
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// A named remote and its storage.
pub struct Remote {
    pub name: String,
    pub backend: Box<dyn Backend>,
}

impl Remote {
    pub(crate) fn err(&self) -> impl Fn(BackendError) -> SyncError + '_ {
        move |error| SyncError::Backend {
            remote: self.name.clone(),
            error,
        }
    }

    /// The index files the remote lists.
    pub(crate) fn index_files(&self) -> Result<std::collections::HashSet<Id>> {
        Ok(self
            .backend
            .list("index/")
            .map_err(self.err())?
            .iter()
            .filter_map(|(p, _)| layout::named_id(p, "index", ".idx"))
            .collect())
    }

    /// The packs the remote lists, with their sizes.
    pub(crate) fn pack_files(&self) -> Result<std::collections::HashMap<Id, u64>> {
        Ok(self
            .backend
            .list("packs/")
            .map_err(self.err())?
            .into_iter()
            .filter_map(|(p, size)| Some((layout::named_id(&p, "packs", ".pack")?, size)))
            .collect())
    }

    /// The newest value of a branch on the remote, with its generation.
    pub(crate) fn read_ref(&self, dot: &str, branch: &str) -> Result<Option<(u64, RemoteRef)>> {
        // A reader can race a pusher pruning old generations: list again.
        for _ in 0..3 {
            let Some(generation) = self.generations(dot, branch)?.into_iter().max() else {
                return Ok(None);
            };
            let path = layout::ref_path(dot, branch, generation);
            let got = self
                .backend
                .get(&path, layout::MAX_REF_BYTES)
                .map_err(self.err())?;
            if let Some(bytes) = got {
                return match RemoteRef::decode(&bytes) {
                    Some(r) => Ok(Some((generation, r))),
                    None => Err(SyncError::Damaged {
                        remote: self.name.clone(),
                        what: format!("ref {path}"),
                        why: "not a dot ref".into(),
                    }),
                };
            }
        }
        Err(SyncError::Damaged {
            remote: self.name.clone(),
            what: format!("branch {branch} of dot {dot}"),
            why: "its newest ref keeps disappearing".into(),
        })
    }

    /// The generations a branch has on the remote.
    fn generations(&self, dot: &str, branch: &str) -> Result<Vec<u64>> {
        let dir = layout::ref_dir(dot, branch);
        Ok(self
            .backend
            .list(&dir)
            .map_err(self.err())?
            .into_iter()
            .filter_map(|(p, _)| layout::generation(p.strip_prefix(&dir)?))
            .collect())
    }

    /// Sets a branch to `value` if its newest generation is still
    /// `previous` (None: the branch does not exist): creates the next
    /// generation if absent, then checks that it holds `value` and that no
    /// newer generation exists (a pusher that read long ago can find an
    /// old, pruned generation free). Only then is the value the branch's.
    pub(crate) fn write_ref(
        &self,
        dot: &str,
        branch: &str,
        previous: Option<u64>,
        value: &RemoteRef,
    ) -> Result<RefWrite> {
        let generation = match previous {
            None => 1,
            Some(g) => g.checked_add(1).ok_or_else(|| SyncError::Damaged {
                remote: self.name.clone(),
                what: format!("branch {branch} of dot {dot}"),
                why: format!("its generation number {g} cannot grow"),
            })?,
        };
        let path = layout::ref_path(dot, branch, generation);
        let bytes = value.encode();
        if !self
            .backend
            .create(&path, bytes.clone())
            .map_err(self.err())?
        {
            return Ok(RefWrite::Lost);
        }
        let stored = self
            .backend
            .get(&path, layout::MAX_REF_BYTES)
            .map_err(self.err())?;
        if stored.as_ref().is_some_and(|s| *s != bytes) {
            return Ok(RefWrite::Replaced);
        }
        let newest = self.generations(dot, branch)?.into_iter().max();
        if stored.is_none() || newest.is_some_and(|n| n > generation) {
            let _ = self.backend.delete(&path);
            return Ok(RefWrite::Lost);
        }
        // Older generations are history nobody reads; keep one behind the
        // newest for readers that listed just before this push.
        if generation > 2 {
            let _ = self
                .backend
                .delete(&layout::ref_path(dot, branch, generation - 2));
        }
        Ok(RefWrite::Written)
    }

    /// Finds out whether the storage honours create-if-absent, which
    /// racing pushes rest on: creates a probe object, then creates it
    /// again with other bytes, which must be refused and leave the first
    /// bytes in place. The probe is removed.
    pub(crate) fn check_create(&self) -> Result<CreateCheck> {
        let path = format!("probe/{}", backend::random_hex());
        let (first, second) = (b"dot probe 1".to_vec(), b"dot probe 2".to_vec());
        let answer = (|| {
            if !self.backend.create(&path, first.clone())? {
                return Err(BackendError::Other(format!(
                    "the new probe object {path} already existed"
                )));
            }
            let again = self.backend.create(&path, second)?;
            let kept = self.backend.get(&path, 64)? == Some(first);
            Ok(if !again && kept {
                CreateCheck::Honoured
            } else {
                CreateCheck::Ignored
            })
        })();
        let _ = self.backend.delete(&path);
        answer.map_err(self.err())
    }
}

/// How a ref write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefWrite {
    /// The branch now has the value.
    Written,
    /// Another push got there first; nothing changed.
    Lost,
    /// The write went through, then another replaced it: the storage did
    /// not keep the create exclusive.
    Replaced,
}

/// Whether a remote's storage keeps a conditional create exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreateCheck {
    Honoured,
    Ignored,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A push with no gc of the remote going on, in 1 MiB packs.
    fn push(local: &Store, remote: &Remote, known: &Known, head: CommitId) -> Result<PushStats> {
        push_objects(
            local,
            remote,
            known,
            &GcState::default(),
            head,
            1 << 20,
            &Silent,
        )
    }
    use crate::chunker::ChunkParams;
    use crate::id::{ChunkId, CommitId};
    use crate::progress::Silent;
    use crate::store::{Kind, Store};
    use crate::tree::chunks::{ChunkTreeBuilder, Leaf};
    use crate::tree::commit::{write_root, Commit, Root, Top};
    use crate::tree::dir::{write_dir, Content, DirEntry, EntryKind};
    use crate::tree::Objects;

    /// The memory backend as a misbehaving server: every put after the
    /// first `puts_left` fails, and creates do what `create` does.
    struct Misbehaving {
        inner: ObjectBackend,
        puts_left: Arc<AtomicUsize>,
        create: fn(&ObjectBackend, &str, Vec<u8>) -> backend::Result<bool>,
    }

    impl Misbehaving {
        fn new(create: fn(&ObjectBackend, &str, Vec<u8>) -> backend::Result<bool>) -> Misbehaving {
            Misbehaving {
                inner: ObjectBackend::memory(),
                puts_left: Arc::new(AtomicUsize::new(usize::MAX)),
                create,
            }
        }
    }

    impl Backend for Misbehaving {
        fn get(&self, path: &str, max: u64) -> backend::Result<Option<Vec<u8>>> {
            self.inner.get(path, max)
        }
        fn get_range(&self, path: &str, range: Range<u64>) -> backend::Result<Vec<u8>> {
            self.inner.get_range(path, range)
        }
        fn put(&self, path: &str, bytes: Vec<u8>) -> backend::Result<()> {
            let left = self.puts_left.load(Ordering::SeqCst);
            if left == 0 {
                return Err(BackendError::Other("503 Service Unavailable".into()));
            }
            self.puts_left.store(left - 1, Ordering::SeqCst);
            self.inner.put(path, bytes)
        }
        fn create(&self, path: &str, bytes: Vec<u8>) -> backend::Result<bool> {
            (self.create)(&self.inner, path, bytes)
        }
        fn list(&self, prefix: &str) -> backend::Result<Vec<(String, u64)>> {
            self.inner.list(prefix)
        }
        fn delete(&self, path: &str) -> backend::Result<()> {
            self.inner.delete(path)
        }
    }

    /// Creates as a server that honours If-None-Match does.
    fn honest(b: &ObjectBackend, path: &str, bytes: Vec<u8>) -> backend::Result<bool> {
        b.create(path, bytes)
    }

    /// Creates as a plain put: a server that ignores If-None-Match.
    fn careless(b: &ObjectBackend, path: &str, bytes: Vec<u8>) -> backend::Result<bool> {
        b.put(path, bytes).map(|_| true)
    }

    /// Creates as a careless server where another pusher's create of the
    /// same name lands right after each of ours.
    fn raced(b: &ObjectBackend, path: &str, bytes: Vec<u8>) -> backend::Result<bool> {
        b.put(path, bytes)?;
        let other = RemoteRef::decode(&b.get(path, 4096)?.unwrap())
            .map(|mut r| {
                r.commit = CommitId(crate::id::Id::of(b"the other pusher"));
                r.encode()
            })
            .unwrap_or_else(|| b"other".to_vec());
        b.put(path, other).map(|_| true)
    }

    /// A commit of one file made of `n` distinct incompressible 40 KiB
    /// chunks; the same seed gives the same chunks.
    fn commit(store: &Store, n: u32, seed: u32, parent: Option<CommitId>) -> CommitId {
        let mut b = ChunkTreeBuilder::new(store);
        let mut size = 0;
        for i in 0..n {
            let mut data = vec![0u8; 40_000];
            blake3::Hasher::new()
                .update(format!("{seed}/{i}").as_bytes())
                .finalize_xof()
                .fill(&mut data);
            let id = crate::id::Id::of(&data);
            Objects::put(store, Kind::Chunk, &id, &data).unwrap();
            b.push(Leaf::Chunk(ChunkId(id), data.len() as u32)).unwrap();
            size += data.len() as u64;
        }
        let file = DirEntry {
            name: b"data".to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            size,
            content: Content::File(b.finish().unwrap()),
            xattrs: vec![],
        };
        let tree = write_dir(store, &[file]).unwrap();
        let mut root = Root::new();
        root.insert(
            "__default__".into(),
            Top {
                tree,
                mode: 0o700,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
            },
        );
        let c = Commit {
            root: write_root(store, &root).unwrap(),
            parents: parent.into_iter().collect(),
            author: "a".into(),
            email: "e".into(),
            time: 0,
            tz_minutes: 0,
            message: "m".into(),
            metadata: Default::default(),
        };
        let id = c.write(store).unwrap();
        store.flush().unwrap();
        id
    }

    fn value(commit: CommitId) -> RemoteRef {
        RemoteRef {
            commit,
            chunking: ChunkParams::default(),
        }
    }

    #[test]
    fn a_push_failing_midway_resumes_and_a_fetch_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(&dir.path().join("a"), "test").unwrap();
        let puts_left = Arc::new(AtomicUsize::new(3));
        let remote = Remote {
            name: "mem".into(),
            backend: Box::new(Misbehaving {
                puts_left: puts_left.clone(),
                ..Misbehaving::new(honest)
            }),
        };
        let head = commit(&local, 200, 1, None);
        let count = |head| {
            let fresh = Remote {
                name: "fresh".into(),
                backend: Box::new(ObjectBackend::memory()),
            };
            let known = Known::refresh(&local, &fresh).unwrap();
            push(&local, &fresh, &known, head).unwrap().objects_sent
        };
        let known = Known::refresh(&local, &remote).unwrap();
        let err = push(&local, &remote, &known, head).unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert!(remote.backend.list("index/").unwrap().is_empty());

        // The server recovers: the three packs that landed are reused.
        puts_left.store(usize::MAX, Ordering::SeqCst);
        let known = Known::refresh(&local, &remote).unwrap();
        let stats = push(&local, &remote, &known, head).unwrap();
        assert!(stats.objects_reused >= 3 * 20, "{stats:?}");
        assert_eq!(stats.objects_sent + stats.objects_reused, count(head));
        assert_eq!(
            remote
                .write_ref("app", "master", None, &value(head))
                .unwrap(),
            RefWrite::Written
        );

        // A second commit sharing half the chunks: only the rest travels.
        let next = commit(&local, 100, 1, Some(head));
        let known = Known::refresh(&local, &remote).unwrap();
        let stats = push(&local, &remote, &known, next).unwrap();
        assert!(stats.objects_sent < 10, "{stats:?}");
        assert!(stats.bytes_sent < 20_000, "{stats:?}");
        assert!(stats.bytes_skipped >= 100 * 40_000, "{stats:?}");

        // A fresh store fetches everything and can read it back.
        let other = Store::open(&dir.path().join("b"), "test").unwrap();
        let known = Known::refresh(&other, &remote).unwrap();
        let got = fetch(&other, &remote, &known, next, &HashSet::new(), &Silent).unwrap();
        assert_eq!(got.objects_received, count(next));
        let mut walker =
            crate::tree::links(&next.0, Kind::Meta, &other.get(&next.0).unwrap()).unwrap();
        while let Some(l) = walker.pop() {
            let raw = other.get(&l.id).unwrap();
            walker.extend(crate::tree::links(&l.id, l.kind, &raw).unwrap());
        }
        // Nothing left to fetch the second time.
        let again = fetch(&other, &remote, &known, next, &HashSet::new(), &Silent).unwrap();
        assert_eq!(again.objects_received, 0);
    }

    #[test]
    fn a_stale_ref_write_loses_and_changes_nothing() {
        let remote = Remote {
            name: "mem".into(),
            backend: Box::new(ObjectBackend::memory()),
        };
        let (a, b) = (
            CommitId(crate::id::Id::of(b"a")),
            CommitId(crate::id::Id::of(b"b")),
        );
        let write = |previous, v| remote.write_ref("app", "master", previous, &v).unwrap();
        assert_eq!(write(None, value(a)), RefWrite::Written);
        assert_eq!(write(None, value(b)), RefWrite::Lost);
        let (g, v) = remote.read_ref("app", "master").unwrap().unwrap();
        assert_eq!((g, v.commit), (1, a));
        for i in 0..5u8 {
            let c = CommitId(crate::id::Id::of(&[i]));
            assert_eq!(write(Some(g + u64::from(i)), value(c)), RefWrite::Written);
        }
        let (g, v) = remote.read_ref("app", "master").unwrap().unwrap();
        assert_eq!((g, v.commit), (6, CommitId(crate::id::Id::of(&[4]))));
        // Old generations are pruned, one is kept behind the newest.
        assert_eq!(remote.backend.list("refs/").unwrap().len(), 2);
        assert_eq!(write(Some(4), value(a)), RefWrite::Lost);
        // A pusher that read generation 2 long ago finds generation 3
        // pruned, free to create: the newer generations make it lose, and
        // its stale object is gone again.
        assert_eq!(write(Some(2), value(a)), RefWrite::Lost);
        let (g, v) = remote.read_ref("app", "master").unwrap().unwrap();
        assert_eq!((g, v.commit), (6, CommitId(crate::id::Id::of(&[4]))));
        assert_eq!(remote.backend.list("refs/").unwrap().len(), 2);
    }

    #[test]
    fn the_create_check_has_three_answers() {
        let remote = |backend: Box<dyn Backend>| Remote {
            name: "r".into(),
            backend,
        };
        let honest = remote(Box::new(ObjectBackend::memory()));
        assert_eq!(honest.check_create().unwrap(), CreateCheck::Honoured);
        assert!(
            honest.backend.list("").unwrap().is_empty(),
            "the probe is removed"
        );
        let careless = remote(Box::new(Misbehaving::new(careless)));
        assert_eq!(careless.check_create().unwrap(), CreateCheck::Ignored);
        assert!(careless.backend.list("").unwrap().is_empty());
        let failing = remote(Box::new(Misbehaving::new(|_, _, _| {
            Err(BackendError::Other("503 Service Unavailable".into()))
        })));
        let err = failing.check_create().unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }

    #[test]
    fn a_replaced_ref_is_not_reported_written() {
        let raced = Remote {
            name: "r".into(),
            backend: Box::new(Misbehaving::new(raced)),
        };
        let a = CommitId(crate::id::Id::of(b"a"));
        assert_eq!(
            raced.write_ref("app", "master", None, &value(a)).unwrap(),
            RefWrite::Replaced
        );
        assert_eq!(raced.check_create().unwrap(), CreateCheck::Ignored);
    }

    #[test]
    fn a_tampered_object_is_named_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(&dir.path().join("a"), "test").unwrap();
        let inner = ObjectBackend::memory();
        let head = commit(&local, 10, 2, None);
        let remote = Remote {
            name: "mem".into(),
            backend: Box::new(inner),
        };
        let known = Known::refresh(&local, &remote).unwrap();
        push(&local, &remote, &known, head).unwrap();
        // Flip a byte in the data pack's first record.
        let packs = remote.backend.list("packs/").unwrap();
        let (path, _) = packs.iter().max_by_key(|(_, size)| *size).unwrap().clone();
        let mut bytes = remote.backend.get(&path, u64::MAX).unwrap().unwrap();
        bytes[100] ^= 1;
        remote.backend.put(&path, bytes).unwrap();

        let other = Store::open(&dir.path().join("b"), "test").unwrap();
        let known = Known::refresh(&other, &remote).unwrap();
        let err = fetch(&other, &remote, &known, head, &HashSet::new(), &Silent).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("is damaged") && msg.contains(&path), "{msg}");
    }
}
