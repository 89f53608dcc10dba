//! Sending the objects a commit needs to a remote.
//!
//! Protocol (docs/design.md, "Push"): walk the DAG from the commit, stop at
//! every object the remote's index files name, pack the rest into
//! content-named packs and upload them in parallel, then upload one index
//! file naming all of them. The caller moves the remote ref last. An index
//! file is written only after every pack it names has landed, so what the
//! remote's index files name is always complete down to the chunks: that is
//! what lets the walk stop at a named object without looking inside.
//!
//! Packs that landed before an interruption are named by no index file.
//! The next push reads their trailers and reuses the objects it needs from
//! them instead of sending those again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use super::layout::{self, Located};
use super::{Known, Remote, Result};
use crate::id::{CommitId, Id};
use crate::progress::Progress;
use crate::store::pack::{self, PackBuf, FOOTER_LEN, HEADER_LEN};
use crate::store::{Entry, Kind, Store, StoreError};
use crate::tree::{links, Link};

/// Parallel uploads; each holds one pack in memory.
const UPLOADERS: usize = 4;

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PushStats {
    pub objects_sent: u64,
    /// Pack bytes uploaded.
    pub bytes_sent: u64,
    pub packs_sent: u64,
    /// Objects found in packs an interrupted push left behind.
    pub objects_reused: u64,
    /// Objects the walk met that the remote already had.
    pub objects_skipped: u64,
    /// File bytes under those objects, where the references say (whole
    /// directories the remote already had are not counted).
    pub bytes_skipped: u64,
}

/// Makes the remote hold everything `head` needs. `pack_target` is the
/// size at which a pack is sealed and sent.
pub(crate) fn push_objects(
    store: &Store,
    remote: &Remote,
    known: &Known,
    gc: &super::GcState,
    head: CommitId,
    pack_target: usize,
    progress: &dyn Progress,
) -> Result<PushStats> {
    let mut stats = PushStats::default();
    // The packs there now: an index file can outlive a pack a gc swept
    // (written while the sweep ran), so a place counts only in a pack that
    // exists and that no pending gc marker dooms.
    let packs = remote.pack_files()?;
    let usable = |pack: &Id| packs.contains_key(pack) && !gc.doomed.contains(pack);
    let need = walk(store, known, &usable, head, &mut stats)?;
    if need.is_empty() {
        return Ok(stats);
    }
    let reusable = leftovers(remote, known, &packs, &usable)?;
    let mut located = HashMap::with_capacity(need.len());
    let mut send = Vec::new();
    for (id, entry) in &need {
        match reusable.get(id) {
            Some(loc) => {
                located.insert(*id, *loc);
                stats.objects_reused += 1;
            }
            None => send.push((*id, *entry)),
        }
    }
    let total: u64 = send
        .iter()
        .map(|(_, e)| u64::from(e.slot.stored_len) + pack::RECORD_HEADER_LEN)
        .sum();
    progress.start("sending", total);
    let sent = upload(store, remote, &send, &gc.doomed, pack_target, progress)?;
    progress.finish();
    stats.objects_sent = send.len() as u64;
    stats.packs_sent = sent.packs;
    stats.bytes_sent = sent.bytes;
    located.extend(sent.located);
    // Index files in walk order: each names only objects whose references
    // are in it, in an earlier one, or already on the remote, so what the
    // remote's index files name stays complete even if the push stops
    // between two of them.
    for part in need.chunks(layout::MAX_INDEX_OBJECTS) {
        let mut objects: Vec<(Id, Located)> =
            part.iter().map(|(id, _)| (*id, located[id])).collect();
        let index = layout::encode_index(&mut objects);
        let index_id = Id::of(&index);
        remote
            .backend
            .put(&layout::index_path(&index_id), index.clone())
            .map_err(remote.err())?;
        known.record(&index_id, &index)?;
    }
    Ok(stats)
}

/// Every object `head` reaches that the remote lacks, each after every
/// object it refers to (a post-order of the DAG), so that any prefix of
/// the list is closed under references. An object the remote holds only
/// in a pack that is not `usable` (gone, or doomed by a gc marker) counts
/// as lacking: it is sent again.
fn walk(
    store: &Store,
    known: &Known,
    usable: &dyn Fn(&Id) -> bool,
    head: CommitId,
    stats: &mut PushStats,
) -> Result<Vec<(Id, Entry)>> {
    let mut need = Vec::new();
    let mut seen = HashSet::new();
    // (link, the entry once its references are on the stack above it)
    let mut stack: Vec<(Link, Option<Entry>)> = vec![(Link::meta(head.0, 0), None)];
    while let Some((link, expanded)) = stack.pop() {
        if let Some(entry) = expanded {
            need.push((link.id, entry));
            continue;
        }
        if !seen.insert(link.id) {
            continue;
        }
        if known.get(&link.id)?.is_some_and(|loc| usable(&loc.pack)) {
            stats.objects_skipped += 1;
            stats.bytes_skipped += link.size;
            continue;
        }
        let entry = store.entry(&link.id)?.ok_or(StoreError::Missing(link.id))?;
        stack.push((link, Some(entry)));
        if entry.kind == Kind::Meta {
            let raw = store.read_entry(&link.id, &entry)?;
            stack.extend(
                links(&link.id, Kind::Meta, &raw)?
                    .into_iter()
                    .map(|l| (l, None)),
            );
        }
    }
    Ok(need)
}

/// Objects in packs that no index file names: uploads of an interrupted
/// push. A pack that cannot be read whole (cut off mid-upload), or that
/// a gc marker dooms, is skipped.
fn leftovers(
    remote: &Remote,
    known: &Known,
    packs: &HashMap<Id, u64>,
    usable: &dyn Fn(&Id) -> bool,
) -> Result<HashMap<Id, Located>> {
    let mut orphans = Vec::new();
    for (id, size) in packs {
        if usable(id) && !known.has_pack(id)? {
            orphans.push((*id, *size));
        }
    }
    let found = super::parallel(&orphans, 8, |(id, size)| read_trailer(remote, id, *size))?;
    Ok(found.into_iter().flatten().flatten().collect())
}

/// A remote pack's objects, from its header and trailer; None when the
/// pack is not whole.
fn read_trailer(remote: &Remote, id: &Id, size: u64) -> Result<Option<Vec<(Id, Located)>>> {
    if size < HEADER_LEN + FOOTER_LEN {
        return Ok(None);
    }
    let path = layout::pack_path(id);
    // A pack deleted since the listing (a gc of the remote swept it) is
    // not there to reuse.
    let get = |r: std::ops::Range<u64>| match remote.backend.get_range(&path, r) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(super::BackendError::NotFound(_)) => Ok(None),
        Err(e) => Err(remote.err()(e)),
    };
    let (Some(header), Some(footer)) = (get(0..HEADER_LEN)?, get(size - FOOTER_LEN..size)?) else {
        return Ok(None);
    };
    let Ok(trailer_at) = pack::footer_trailer_offset(&footer, size) else {
        return Ok(None);
    };
    let Ok(kind) = pack::decode_header(&header) else {
        return Ok(None);
    };
    let Some(trailer) = get(trailer_at..size - FOOTER_LEN)? else {
        return Ok(None);
    };
    let Ok(entries) = pack::decode_trailer(kind, &footer, &trailer, trailer_at) else {
        return Ok(None);
    };
    Ok(Some(Located::in_pack(*id, kind, entries).collect()))
}

struct Sent {
    located: Vec<(Id, Located)>,
    packs: u64,
    bytes: u64,
}

/// Packs `send` (data and metadata apart) and uploads the packs in
/// parallel as they fill. Each object is checked against its id on the way
/// out, so local damage never reaches the remote.
fn upload(
    store: &Store,
    remote: &Remote,
    send: &[(Id, Entry)],
    doomed: &HashSet<Id>,
    pack_target: usize,
    progress: &dyn Progress,
) -> Result<Sent> {
    // (pack id, pack bytes, record bytes: what the progress bar counts)
    let (tx, rx) = sync_channel::<(Id, Vec<u8>, u64)>(1);
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    let failure = Mutex::new(None);
    let mut sent = Sent {
        located: Vec::with_capacity(send.len()),
        packs: 0,
        bytes: 0,
    };
    std::thread::scope(|s| {
        for _ in 0..UPLOADERS {
            s.spawn(|| loop {
                let Ok((id, bytes, records)) = rx.lock().expect("lock").recv() else {
                    return;
                };
                if failed.load(Ordering::Relaxed) {
                    continue;
                }
                match remote.backend.put(&layout::pack_path(&id), bytes) {
                    Ok(()) => progress.advance(records),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        *failure.lock().expect("lock") = Some(remote.err()(e));
                    }
                }
            });
        }
        let produced = (|| -> Result<()> {
            let mut open: [Option<PackBuf>; 2] = [None, None];
            let seal = |buf: PackBuf, kind: Kind, sent: &mut Sent| -> Result<()> {
                let (mut bytes, mut entries) = buf.seal();
                let mut id = Id::of(&bytes);
                if doomed.contains(&id) {
                    // Packs are named by their content: sending again the
                    // very pack a gc marker dooms would hand the sweep a
                    // pack of this push to delete. The same records in
                    // the other order make a pack of another name.
                    (bytes, entries) = pack::reversed(kind as u8, &bytes, &entries)
                        .map_err(|e| StoreError::Io {
                            context: "cannot build a pack".into(),
                            source: e,
                        })?
                        .seal();
                    id = Id::of(&bytes);
                    if doomed.contains(&id) {
                        return Err(super::SyncError::GcPending(remote.name.clone()));
                    }
                }
                let records = entries
                    .iter()
                    .map(|(_, s)| u64::from(s.stored_len) + pack::RECORD_HEADER_LEN)
                    .sum();
                sent.located.extend(Located::in_pack(id, kind, entries));
                sent.packs += 1;
                sent.bytes += bytes.len() as u64;
                // A closed channel means every uploader has stopped.
                let _ = tx.send((id, bytes, records));
                Ok(())
            };
            for (id, entry) in send {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                if progress.cancelled() {
                    return Err(super::SyncError::Cancelled);
                }
                let stored = store.read_stored(entry.pack, &entry.slot)?;
                if let Err(e) = pack::decode_checked(id, &entry.slot, &stored) {
                    return Err(StoreError::Damaged {
                        id: *id,
                        pack: format!("{:016x}", entry.pack),
                        why: e.to_string(),
                    }
                    .into());
                }
                let k = entry.kind as usize;
                let buf = open[k].get_or_insert_with(|| PackBuf::new(entry.kind as u8));
                buf.append(id, entry.slot.codec, entry.slot.raw_len, &stored)
                    .map_err(|e| StoreError::Io {
                        context: "cannot build a pack".into(),
                        source: e,
                    })?;
                if buf.is_full(pack_target) {
                    let buf = open[k].take().expect("open pack");
                    seal(buf, entry.kind, &mut sent)?;
                }
            }
            for kind in [Kind::Chunk, Kind::Meta] {
                if let Some(buf) = open[kind as usize].take() {
                    seal(buf, kind, &mut sent)?;
                }
            }
            Ok(())
        })();
        drop(tx);
        if let Err(e) = produced {
            failed.store(true, Ordering::Relaxed);
            failure.lock().expect("lock").get_or_insert(e);
        }
    });
    match failure.into_inner().expect("lock") {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}
