//! Receiving the objects a remote commit needs (pull and clone).
//!
//! The walk starts at the remote commit and reads metadata level by level:
//! objects the local store has are read locally (the store may hold them
//! for another dot, or from an interrupted pull), the rest are fetched.
//! Chunks are fetched last, all at once, so the progress bar knows its
//! total. Reads are coalesced per pack into ranged GETs and run in
//! parallel; every object is decoded and checked against its id before it
//! is stored, and nothing moves a ref here.

use std::collections::{HashMap, HashSet};

use super::layout::{self, Located};
use super::{Known, Remote, Result, SyncError};
use crate::id::{CommitId, Id};
use crate::progress::Progress;
use crate::store::pack;
use crate::store::{Kind, Store};
use crate::tree::{links, Link, TreeError};

/// Ranged reads in flight at once.
const READERS: usize = 8;
/// Neighbouring objects closer than this are read in one request, the gap
/// included: a request costs more than this many bytes of transfer.
const MAX_GAP: u64 = 256 << 10;
/// The most one request reads.
const MAX_SPAN: u64 = 16 << 20;
/// Received chunks are made durable and indexed (a commit point) after
/// about this many bytes, so an interrupted pull keeps what it received.
const FLUSH_EVERY: u64 = 32 << 20;

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct FetchStats {
    pub objects_received: u64,
    /// Bytes read from the remote, pack gaps included.
    pub bytes_received: u64,
    pub requests: u64,
    /// Objects the walk found already in the local store.
    pub objects_local: u64,
    /// File bytes under those objects, where the references say.
    pub bytes_skipped: u64,
}

/// Makes the local store hold everything `want` needs. `complete` tells
/// which commits the store is known to hold in full (those reachable from
/// local branches); the walk does not enter them.
pub(crate) fn fetch(
    store: &Store,
    remote: &Remote,
    known: &Known,
    want: CommitId,
    complete: &HashSet<CommitId>,
    progress: &dyn Progress,
) -> Result<FetchStats> {
    let mut stats = FetchStats::default();
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    let mut level = vec![Link::meta(want.0, 0)];
    while !level.is_empty() {
        let mut next = Vec::new();
        let mut missing = Vec::new();
        for link in level {
            if !seen.insert(link.id) {
                continue;
            }
            if complete.contains(&CommitId(link.id)) {
                stats.objects_local += 1;
                continue;
            }
            if store.has(&link.id)? {
                stats.objects_local += 1;
                stats.bytes_skipped += link.size;
                if link.kind == Kind::Meta {
                    next.extend(links(&link.id, Kind::Meta, &store.get(&link.id)?)?);
                }
                continue;
            }
            let loc = known.get(&link.id)?.ok_or_else(|| SyncError::Incomplete {
                remote: remote.name.clone(),
                id: link.id,
            })?;
            if loc.kind != link.kind {
                return Err(SyncError::Damaged {
                    remote: remote.name.clone(),
                    what: format!("object {}", link.id.short()),
                    why: "its index entry and its references disagree on its kind".into(),
                });
            }
            match link.kind {
                Kind::Chunk => chunks.push((link.id, link.kind, loc)),
                Kind::Meta => missing.push((link.id, link.kind, loc)),
            }
        }
        for links in read(
            store,
            remote,
            &missing,
            true,
            &mut stats,
            &crate::progress::Silent,
        )? {
            next.extend(links);
        }
        level = next;
    }
    let total = chunks
        .iter()
        .map(|(_, _, l)| u64::from(l.slot.stored_len))
        .sum();
    // Refused before anything is received when it cannot fit: the packs
    // take the stored bytes and their record headers.
    let needed = total + chunks.len() as u64 * crate::store::pack::RECORD_HEADER_LEN;
    if let Some(room) = store.room().filter(|room| *room < needed) {
        return Err(SyncError::Store(crate::store::StoreError::Io {
            context: format!(
                "receiving {} needs more room than the {} free on the disk holding the store",
                crate::repo::human_bytes(needed),
                crate::repo::human_bytes(room)
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }));
    }
    progress.start("receiving", total);
    chunks.sort_by_key(|(_, _, l)| (l.pack, l.slot.offset));
    let mut rest = &chunks[..];
    while !rest.is_empty() {
        if progress.cancelled() {
            return Err(SyncError::Cancelled);
        }
        let n = batch_len(rest, FLUSH_EVERY);
        read(store, remote, &rest[..n], false, &mut stats, progress)?;
        // A commit point per batch: what arrived stays if the pull is
        // interrupted (other operations' packs are left open).
        store.flush()?;
        rest = &rest[n..];
    }
    progress.finish();
    store.flush()?;
    Ok(stats)
}

/// How many of `objects`, from the first, hold at most `limit` stored
/// bytes (at least one).
pub(crate) fn batch_len(objects: &[(Id, Kind, Located)], limit: u64) -> usize {
    let mut bytes = 0;
    objects
        .iter()
        .take_while(|(_, _, l)| {
            bytes += u64::from(l.slot.stored_len);
            bytes <= limit
        })
        .count()
        .max(1)
}

/// One ranged GET: a stretch of a pack and the objects in it.
struct Span<'a> {
    pack: Id,
    start: u64,
    end: u64,
    objects: Vec<&'a (Id, Kind, Located)>,
}

/// Fetches, checks and stores objects; returns what each one refers to
/// when `keep` is set (metadata, which the walk follows next).
fn read(
    store: &Store,
    remote: &Remote,
    objects: &[(Id, Kind, Located)],
    keep: bool,
    stats: &mut FetchStats,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Link>>> {
    let spans = coalesce(objects);
    let kept = super::parallel(&spans, READERS, |span| {
        read_span(store, remote, span, keep, progress)
    })?;
    stats.objects_received += objects.len() as u64;
    stats.bytes_received += spans.iter().map(|s| s.end - s.start).sum::<u64>();
    stats.requests += spans.len() as u64;
    Ok(kept.into_iter().flatten().collect())
}

/// Groups objects into as few ranged reads as the gap and span limits allow.
fn coalesce(objects: &[(Id, Kind, Located)]) -> Vec<Span<'_>> {
    let mut by_pack: HashMap<Id, Vec<&(Id, Kind, Located)>> = HashMap::new();
    for o in objects {
        by_pack.entry(o.2.pack).or_default().push(o);
    }
    let mut spans = Vec::new();
    for (pack, mut objs) in by_pack {
        objs.sort_by_key(|o| o.2.slot.offset);
        let mut cur: Option<Span> = None;
        for o in objs {
            let (start, end) = (
                o.2.slot.offset,
                o.2.slot.offset + u64::from(o.2.slot.stored_len),
            );
            match &mut cur {
                Some(c) if start <= c.end + MAX_GAP && end - c.start <= MAX_SPAN => {
                    c.end = c.end.max(end);
                    c.objects.push(o);
                }
                _ => {
                    spans.extend(cur.take());
                    cur = Some(Span {
                        pack,
                        start,
                        end,
                        objects: vec![o],
                    });
                }
            }
        }
        spans.extend(cur);
    }
    spans
}

fn read_span(
    store: &Store,
    remote: &Remote,
    span: &Span,
    keep: bool,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Link>>> {
    let path = layout::pack_path(&span.pack);
    let bytes = remote
        .backend
        .get_range(&path, span.start..span.end)
        .map_err(remote.err())?;
    let mut kept = Vec::new();
    for (id, kind, loc) in &span.objects {
        let at = (loc.slot.offset - span.start) as usize;
        let stored = &bytes[at..at + loc.slot.stored_len as usize];
        // Decoding checks every rule of the object's own format: nothing
        // malformed is ever stored.
        let refs = check_object(id, *kind, loc, stored).map_err(|why| SyncError::Damaged {
            remote: remote.name.clone(),
            what: format!("object {} in {path}", id.short()),
            why,
        })?;
        store.put_verified(*kind, id, loc.slot.codec, loc.slot.raw_len, stored)?;
        progress.advance(u64::from(loc.slot.stored_len));
        if keep {
            kept.push(refs);
        }
    }
    Ok(kept)
}

/// Checks an object's stored bytes as read from a remote: they decode
/// within the slot's limits to bytes that hash to its id, and a metadata
/// object keeps its format's rules. Returns what it refers to.
fn check_object(
    id: &Id,
    kind: Kind,
    loc: &Located,
    stored: &[u8],
) -> std::result::Result<Vec<Link>, String> {
    let raw = pack::decode_checked(id, &loc.slot, stored).map_err(|e| e.to_string())?;
    links(id, kind, &raw).map_err(|e| match e {
        TreeError::Corrupt { what, .. } => what,
        e => e.to_string(),
    })
}

/// An object read from a remote without storing it: what it refers to, or
/// why it is damaged; and its stored bytes when asked for.
pub(crate) struct Checked {
    pub id: Id,
    pub links: std::result::Result<Vec<Link>, String>,
    pub stored: Option<Vec<u8>>,
}

/// Reads and checks objects (coalesced ranged GETs, in parallel) for
/// maintenance (`dot gc --remote`, `dot fsck --remote`). A damaged object
/// is reported in its `Checked`, not as an error; a pack that cannot be
/// read is an error.
pub(crate) fn read_checked(
    remote: &Remote,
    objects: &[(Id, Kind, Located)],
    keep_stored: bool,
) -> Result<Vec<Checked>> {
    let spans = coalesce(objects);
    let read = super::parallel(&spans, READERS, |span| {
        let bytes = remote
            .backend
            .get_range(&layout::pack_path(&span.pack), span.start..span.end)
            .map_err(remote.err())?;
        Ok(span
            .objects
            .iter()
            .map(|(id, kind, loc)| {
                let at = (loc.slot.offset - span.start) as usize;
                let stored = bytes.get(at..at + loc.slot.stored_len as usize);
                let links = match stored {
                    Some(stored) => check_object(id, *kind, loc, stored),
                    None => Err("the remote answered fewer bytes than asked".into()),
                };
                Checked {
                    id: *id,
                    links,
                    stored: stored.filter(|_| keep_stored).map(<[u8]>::to_vec),
                }
            })
            .collect::<Vec<_>>())
    })?;
    Ok(read.into_iter().flatten().collect())
}
