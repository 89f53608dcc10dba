//! Remote maintenance (docs/design.md 18.4): `dot gc --remote`, which frees
//! what no branch on the remote reaches in two phases that a push running
//! at the same time survives, and `dot fsck --remote`, which verifies what
//! a remote holds.
//!
//! Mark: every object each branch's newest ref reaches is walked;
//! live objects in packs that also hold dead ones are copied to new packs;
//! merged index files naming every live object are written; then a marker
//! `gc/<time>-<random>.mark` lists the index files they supersede and the
//! packs no longer needed. Sweep, at a later gc once the marker is older
//! than `gc.remoteGrace`: the refs are walked again over the index files
//! the marker does not supersede; if anything live is found only through
//! superseded ones (a push relied on it), nothing is deleted; else older
//! ref generations go, then the superseded index files, then the doomed
//! packs no current index file names, and the marker becomes `.done`. Pushes read the markers: an
//! object in a doomed pack does not count as held, and a push that sees a
//! marker appear or be swept while it ran walks again before it writes
//! its ref (`repo::remote`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fetch::read_checked;
use super::layout::{self, Located, RemoteRef};
use super::{Remote, Result, SyncError};
use crate::id::{CommitId, Id};
use crate::progress::Progress;
use crate::store::pack::{self, PackBuf};
use crate::store::Kind;
use crate::tree::Link;

const MARKER_HEADER: &str = "dot gc 1";
/// A marker names at most this many index files and packs.
const MAX_MARKER_LINES: usize = 1 << 21;
const MAX_MARKER_BYTES: u64 = (MAX_MARKER_LINES * 72 + 16) as u64;
/// `.done` records are kept this long, so that a push that ran across a
/// sweep sees that one happened.
const DONE_KEPT: Duration = Duration::from_secs(30 * 86_400);
/// Packs the mark writes are sealed at this size.
const GC_PACK_BYTES: usize = 32 << 20;
/// Objects copied per batch (their stored bytes are held in memory).
const COPY_BATCH: u64 = 64 << 20;

/// What a marker says: the index files the merged ones supersede and the
/// packs that are no longer needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Marker {
    pub superseded: BTreeSet<Id>,
    pub doomed: BTreeSet<Id>,
}

impl Marker {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut s = format!("{MARKER_HEADER}\n");
        for id in &self.superseded {
            s.push_str(&format!("index {}\n", id.to_hex()));
        }
        for id in &self.doomed {
            s.push_str(&format!("pack {}\n", id.to_hex()));
        }
        s.into_bytes()
    }

    /// Accepts only what `encode` writes: the header, then `index` lines,
    /// then `pack` lines, each a 64-digit id, sorted and unique, at most
    /// `MAX_MARKER_LINES` in all.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != MARKER_HEADER {
            return None;
        }
        let mut m = Marker::default();
        for (n, line) in lines.enumerate() {
            if n >= MAX_MARKER_LINES {
                return None;
            }
            let (what, hex) = line.split_once(' ')?;
            let id = Id::from_hex(hex).filter(|_| hex.len() == 64)?;
            match what {
                "index" if m.doomed.is_empty() => m.superseded.insert(id),
                "pack" => m.doomed.insert(id),
                _ => return None,
            };
        }
        (m.encode() == bytes).then_some(m)
    }
}

/// A marker's name: `gc/<nanoseconds since the epoch, 20 digits>-<16 hex>`
/// and `.mark` (pending) or `.done` (swept).
fn marker_name(path: &str) -> Option<(u64, String, bool)> {
    let name = path.strip_prefix("gc/")?;
    let (stem, done) = match (name.strip_suffix(".mark"), name.strip_suffix(".done")) {
        (Some(stem), _) => (stem, false),
        (_, Some(stem)) => (stem, true),
        _ => return None,
    };
    let (time, rand) = stem.split_once('-')?;
    let ok = time.len() == 20
        && time.bytes().all(|b| b.is_ascii_digit())
        && rand.len() == 16
        && rand.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    Some((time.parse().ok().filter(|_| ok)?, stem.to_string(), done))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a push needs to know of the remote's gc: the names under `gc/`
/// (a change while it ran means a gc marked or swept meanwhile) and the
/// packs pending markers doom.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcState {
    names: BTreeSet<String>,
    pub(crate) doomed: HashSet<Id>,
}

/// The markers under `gc/`: every name, the pending ones (time, stem,
/// marker) oldest first, and the swept ones (time, stem).
struct Markers {
    names: BTreeSet<String>,
    pending: Vec<(u64, String, Marker)>,
    done: Vec<(u64, String)>,
}

fn read_markers(remote: &Remote) -> Result<Markers> {
    let mut names = BTreeSet::new();
    let mut pending = Vec::new();
    let mut done = Vec::new();
    for (path, _) in remote.backend.list("gc/").map_err(remote.err())? {
        let Some((time, stem, is_done)) = marker_name(&path) else {
            continue;
        };
        names.insert(path.clone());
        if is_done {
            done.push((time, stem));
            continue;
        }
        let Some(bytes) = remote
            .backend
            .get(&path, MAX_MARKER_BYTES)
            .map_err(remote.err())?
        else {
            continue; // Swept since the listing.
        };
        let marker = Marker::decode(&bytes).ok_or_else(|| SyncError::Damaged {
            remote: remote.name.clone(),
            what: path.clone(),
            why: "not a dot gc marker".into(),
        })?;
        pending.push((time, stem, marker));
    }
    pending.sort_by_key(|(t, s, _)| (*t, s.clone()));
    Ok(Markers {
        names,
        pending,
        done,
    })
}

/// The remote's gc state, for a push.
pub(crate) fn gc_state(remote: &Remote) -> Result<GcState> {
    let m = read_markers(remote)?;
    Ok(GcState {
        names: m.names,
        doomed: m
            .pending
            .into_iter()
            .flat_map(|(_, _, m)| m.doomed)
            .collect(),
    })
}

/// Everything a remote holds, as listed and read.
struct Holdings {
    /// Every ref object: (path, value).
    refs: Vec<(String, RemoteRef)>,
    /// Index files and what each names.
    indexes: HashMap<Id, Vec<(Id, Located)>>,
    /// Packs and their sizes.
    packs: HashMap<Id, u64>,
}

/// Lists and reads refs and index files. Problems (a ref or an index file
/// that does not parse) go to `problems`; `strict` makes them errors.
fn holdings(remote: &Remote, problems: &mut Vec<String>, strict: bool) -> Result<Holdings> {
    let damaged = |what: String, why: &str| SyncError::Damaged {
        remote: remote.name.clone(),
        what,
        why: why.into(),
    };
    let mut refs = Vec::new();
    let listed = remote.backend.list("refs/").map_err(remote.err())?;
    let got = super::parallel(&listed, 8, |(path, _)| {
        remote
            .backend
            .get(path, layout::MAX_REF_BYTES)
            .map_err(remote.err())
    })?;
    for ((path, _), bytes) in listed.iter().zip(got) {
        match bytes.as_deref().map(RemoteRef::decode) {
            None => {} // Pruned since the listing.
            Some(Some(r)) => refs.push((path.clone(), r)),
            Some(None) if strict => return Err(damaged(path.clone(), "not a dot ref")),
            Some(None) => problems.push(format!("{path}: not a dot ref")),
        }
    }
    let listed: Vec<Id> = remote.index_files()?.into_iter().collect();
    let got = super::parallel(&listed, 8, |id| {
        remote
            .backend
            .get(&layout::index_path(id), layout::MAX_INDEX_BYTES)
            .map_err(remote.err())
    })?;
    let mut indexes = HashMap::new();
    for (id, bytes) in listed.iter().zip(got) {
        let Some(bytes) = bytes else { continue };
        let path = layout::index_path(id);
        let decoded = if Id::of(&bytes) != *id {
            Err("its content does not match its name".to_string())
        } else {
            layout::decode_index(&bytes).map_err(|e| e.to_string())
        };
        match decoded {
            Ok((_, objects)) => {
                indexes.insert(*id, objects);
            }
            Err(why) if strict => return Err(damaged(path, &why)),
            Err(why) => problems.push(format!("{path}: {why}")),
        }
    }
    let packs = remote.pack_files()?;
    Ok(Holdings {
        refs,
        indexes,
        packs,
    })
}

/// Every location each object has in `indexes` (those `skip` lists left
/// out).
fn locations(
    indexes: &HashMap<Id, Vec<(Id, Located)>>,
    skip: &BTreeSet<Id>,
) -> HashMap<Id, Vec<Located>> {
    let mut locs: HashMap<Id, Vec<Located>> = HashMap::new();
    for (index, objects) in indexes {
        if skip.contains(index) {
            continue;
        }
        for (id, loc) in objects {
            let l = locs.entry(*id).or_default();
            if !l.contains(loc) {
                l.push(*loc);
            }
        }
    }
    locs
}

/// Walks from `roots` (a label and a commit) over `locs`: every object
/// reached, metadata read and checked. Objects missing from `locs` or
/// damaged go to `problems`, with the root that reached them.
fn walk(
    remote: &Remote,
    locs: &HashMap<Id, Vec<Located>>,
    roots: &[(String, CommitId)],
    problems: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<HashSet<Id>> {
    let mut live = HashSet::new();
    let mut level: Vec<(Link, usize)> = roots
        .iter()
        .enumerate()
        .map(|(i, (_, c))| (Link::meta(c.0, 0), i))
        .collect();
    while !level.is_empty() {
        if progress.cancelled() {
            return Err(SyncError::Cancelled);
        }
        let mut fetch = Vec::new();
        let mut root_of = HashMap::new();
        for (link, root) in level.drain(..) {
            if !live.insert(link.id) {
                continue;
            }
            let Some(loc) = locs.get(&link.id).and_then(|l| l.first()) else {
                problems.push(format!(
                    "{}: object {} is on no index file",
                    roots[root].0,
                    link.id.short()
                ));
                continue;
            };
            if loc.kind != link.kind {
                problems.push(format!(
                    "{}: object {} is indexed as another kind than its reference says",
                    roots[root].0,
                    link.id.short()
                ));
                continue;
            }
            if link.kind == Kind::Meta {
                fetch.push((link.id, link.kind, *loc));
                root_of.insert(link.id, root);
            }
        }
        for c in read_checked(remote, &fetch, false)? {
            let root = root_of[&c.id];
            match c.links {
                Ok(links) => level.extend(links.into_iter().map(|l| (l, root))),
                Err(why) => problems.push(format!(
                    "{}: object {} is damaged: {why}",
                    roots[root].0,
                    c.id.short()
                )),
            }
        }
    }
    Ok(live)
}

/// The newest generation of each branch of `refs`, as walk roots
/// labelled by their ref path, and the paths of the older generations
/// (which pushes leave for readers that listed just before them; a
/// reader that finds one gone lists again).
fn roots(refs: &[(String, RemoteRef)]) -> (Vec<(String, CommitId)>, Vec<String>) {
    let mut newest: HashMap<&str, (&str, CommitId)> = HashMap::new();
    for (path, r) in refs {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let e = newest.entry(dir).or_insert((path, r.commit));
        // Generations are 20 digits: their order is the names' order.
        if path.as_str() > e.0 {
            *e = (path, r.commit);
        }
    }
    let roots: Vec<(String, CommitId)> =
        newest.values().map(|(p, c)| (p.to_string(), *c)).collect();
    let older = refs
        .iter()
        .filter(|(p, _)| !roots.iter().any(|(r, _)| r == p))
        .map(|(p, _)| p.clone())
        .collect();
    (roots, older)
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemoteGcStats {
    /// Index files merged into new ones (deleted by a sweep).
    pub index_files_merged: u64,
    pub index_files_written: u64,
    /// Live objects copied out of packs that also held dead ones.
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    /// Markers swept now, and whether one was not (a push relied on what
    /// it would free).
    pub marks_swept: u64,
    pub sweep_refused: bool,
    /// When a marker is still waiting for `gc.remoteGrace`: the seconds
    /// left.
    pub pending_secs: Option<u64>,
    /// Whether this run wrote a marker.
    pub marked: bool,
}

/// `dot gc --remote`: sweeps the markers older than `grace`, then marks
/// unless a marker is still pending. With `grace` zero the new marker is
/// swept at once (safe only while nobody pushes).
pub(crate) fn gc(
    remote: &Remote,
    grace: Duration,
    progress: &dyn Progress,
) -> Result<RemoteGcStats> {
    let mut stats = RemoteGcStats::default();
    let Markers { pending, done, .. } = read_markers(remote)?;
    let now = now_ns();
    for (time, stem) in done {
        if now.saturating_sub(time) > DONE_KEPT.as_nanos() as u64 {
            delete(remote, &format!("gc/{stem}.done"))?;
        }
    }
    let mut waiting = None;
    for (time, stem, marker) in pending {
        let age = now.saturating_sub(time);
        if age >= grace.as_nanos() as u64 {
            sweep(remote, &stem, &marker, &mut stats, progress)?;
        } else {
            let left = (grace.as_nanos() as u64 - age).div_ceil(1_000_000_000);
            waiting = Some(waiting.map_or(left, |w: u64| w.max(left)));
        }
    }
    if let Some(left) = waiting {
        stats.pending_secs = Some(left);
        return Ok(stats);
    }
    if let Some((stem, marker)) = mark(remote, &mut stats, progress)? {
        if grace.is_zero() {
            sweep(remote, &stem, &marker, &mut stats, progress)?;
        } else {
            stats.pending_secs = Some(grace.as_secs());
        }
    }
    Ok(stats)
}

fn delete(remote: &Remote, path: &str) -> Result<()> {
    match remote.backend.delete(path) {
        Ok(()) | Err(super::BackendError::NotFound(_)) => Ok(()),
        Err(e) => Err(remote.err()(e)),
    }
}

/// The mark phase; returns the marker written (None: nothing to free).
fn mark(
    remote: &Remote,
    stats: &mut RemoteGcStats,
    progress: &dyn Progress,
) -> Result<Option<(String, Marker)>> {
    let mut problems = Vec::new();
    let h = holdings(remote, &mut problems, true)?;
    let locs = locations(&h.indexes, &BTreeSet::new());
    progress.start("walking the remote's branches", 0);
    let (roots, older) = roots(&h.refs);
    let live = walk(remote, &locs, &roots, &mut problems, progress)?;
    progress.finish();
    if let Some(first) = problems.first() {
        return Err(SyncError::Damaged {
            remote: remote.name.clone(),
            what: "what its branches reach".into(),
            why: format!(
                "{first} ({} problem(s)); nothing was deleted: run dot fsck --remote {}",
                problems.len(),
                remote.name
            ),
        });
    }
    // A pack is clean when every object an index file places in it is
    // live: it is kept as it is.
    let mut in_pack: HashMap<Id, Vec<Id>> = HashMap::new();
    for (id, l) in &locs {
        for loc in l {
            in_pack.entry(loc.pack).or_default().push(*id);
        }
    }
    let clean: HashSet<Id> = in_pack
        .iter()
        .filter(|(p, ids)| h.packs.contains_key(*p) && ids.iter().all(|id| live.contains(id)))
        .map(|(p, _)| *p)
        .collect();
    // Each live object keeps a place in a clean pack, or is copied.
    let mut placed: Vec<(Id, Located)> = Vec::with_capacity(live.len());
    let mut copy: Vec<(Id, Kind, Located)> = Vec::new();
    for id in &live {
        let there: Vec<&Located> = locs[id]
            .iter()
            .filter(|loc| h.packs.contains_key(&loc.pack))
            .collect();
        let Some(first) = there.first() else {
            return Err(SyncError::Damaged {
                remote: remote.name.clone(),
                what: format!("object {}", id.short()),
                why: format!(
                    "its pack is missing; nothing was deleted: run dot fsck --remote {}",
                    remote.name
                ),
            });
        };
        match there.iter().find(|loc| clean.contains(&loc.pack)) {
            Some(loc) => placed.push((*id, **loc)),
            None => copy.push((*id, first.kind, **first)),
        }
    }
    let doomed: BTreeSet<Id> = h
        .packs
        .keys()
        .filter(|p| !clean.contains(*p))
        .copied()
        .collect();
    let mut superseded: BTreeSet<Id> = h.indexes.keys().copied().collect();
    if doomed.is_empty() && superseded.len() <= 1 && older.is_empty() {
        return Ok(None); // Nothing dead, nothing to merge.
    }
    placed.extend(copy_objects(remote, &copy, stats, progress)?);
    for part in placed.chunks_mut(layout::MAX_INDEX_OBJECTS) {
        let index = layout::encode_index(part);
        let id = Id::of(&index);
        remote
            .backend
            .put(&layout::index_path(&id), index)
            .map_err(remote.err())?;
        stats.index_files_written += 1;
        // An index file equal to an old one is that file: not superseded.
        superseded.remove(&id);
    }
    let marker = Marker { superseded, doomed };
    let stem = format!("{:020}-{}", now_ns(), &super::backend::random_hex()[..16]);
    if !remote
        .backend
        .create(&format!("gc/{stem}.mark"), marker.encode())
        .map_err(remote.err())?
    {
        return Err(SyncError::Damaged {
            remote: remote.name.clone(),
            what: format!("gc/{stem}.mark"),
            why: "another gc wrote a marker of the same name".into(),
        });
    }
    stats.marked = true;
    Ok(Some((stem, marker)))
}

/// Copies live objects out of packs that also hold dead ones into new
/// packs (each object checked on the way), and returns their new places.
fn copy_objects(
    remote: &Remote,
    copy: &[(Id, Kind, Located)],
    stats: &mut RemoteGcStats,
    progress: &dyn Progress,
) -> Result<Vec<(Id, Located)>> {
    let mut placed = Vec::with_capacity(copy.len());
    let total = copy
        .iter()
        .map(|(_, _, l)| u64::from(l.slot.stored_len))
        .sum();
    progress.start("copying live objects", total);
    let mut open: [Option<PackBuf>; 2] = [None, None];
    let seal = |buf: PackBuf, kind: Kind, placed: &mut Vec<(Id, Located)>| -> Result<()> {
        let (bytes, entries) = buf.seal();
        let id = Id::of(&bytes);
        remote
            .backend
            .put(&layout::pack_path(&id), bytes)
            .map_err(remote.err())?;
        placed.extend(Located::in_pack(id, kind, entries));
        Ok(())
    };
    let mut rest = copy;
    while !rest.is_empty() {
        let n = super::fetch::batch_len(rest, COPY_BATCH);
        let by_id: HashMap<Id, &Located> = rest[..n].iter().map(|(id, _, l)| (*id, l)).collect();
        for c in read_checked(remote, &rest[..n], true)? {
            let loc = by_id[&c.id];
            if let Err(why) = c.links {
                return Err(SyncError::Damaged {
                    remote: remote.name.clone(),
                    what: format!(
                        "object {} in {}",
                        c.id.short(),
                        layout::pack_path(&loc.pack)
                    ),
                    why: format!("{why}; nothing was deleted"),
                });
            }
            let stored = c.stored.expect("stored bytes were asked for");
            let k = loc.kind as usize;
            let buf = open[k].get_or_insert_with(|| PackBuf::new(loc.kind as u8));
            buf.append(&c.id, loc.slot.codec, loc.slot.raw_len, &stored)
                .map_err(|e| {
                    SyncError::Store(crate::store::StoreError::Io {
                        context: "cannot build a pack".into(),
                        source: e,
                    })
                })?;
            stats.objects_copied += 1;
            stats.bytes_copied += stored.len() as u64;
            progress.advance(stored.len() as u64);
            if buf.is_full(GC_PACK_BYTES) {
                let buf = open[k].take().expect("open pack");
                seal(buf, loc.kind, &mut placed)?;
            }
        }
        rest = &rest[n..];
    }
    for kind in [Kind::Chunk, Kind::Meta] {
        if let Some(buf) = open[kind as usize].take() {
            seal(buf, kind, &mut placed)?;
        }
    }
    progress.finish();
    Ok(placed)
}

/// The sweep phase for one marker.
fn sweep(
    remote: &Remote,
    stem: &str,
    marker: &Marker,
    stats: &mut RemoteGcStats,
    progress: &dyn Progress,
) -> Result<()> {
    let mut problems = Vec::new();
    let h = holdings(remote, &mut problems, true)?;
    let current = locations(&h.indexes, &marker.superseded);
    progress.start("checking the remote's branches before deleting", 0);
    let (roots, older) = roots(&h.refs);
    walk(remote, &current, &roots, &mut problems, progress)?;
    progress.finish();
    let mark_path = format!("gc/{stem}.mark");
    if !problems.is_empty() {
        // Something live is reachable only through what the marker would
        // delete (a push that started before it relied on it): delete
        // nothing, drop the marker; the next gc marks afresh.
        stats.sweep_refused = true;
        return delete(remote, &mark_path);
    }
    let named: HashSet<Id> = h
        .indexes
        .iter()
        .filter(|(id, _)| !marker.superseded.contains(*id))
        .flat_map(|(_, objects)| objects.iter().map(|(_, l)| l.pack))
        .collect();
    // Older generations first: what only they name is about to go.
    for path in &older {
        delete(remote, path)?;
    }
    for id in &marker.superseded {
        if h.indexes.contains_key(id) {
            delete(remote, &layout::index_path(id))?;
            stats.index_files_merged += 1;
        }
    }
    for pack in &marker.doomed {
        if named.contains(pack) {
            continue; // A push since the marker uses it.
        }
        if let Some(size) = h.packs.get(pack) {
            delete(remote, &layout::pack_path(pack))?;
            stats.packs_deleted += 1;
            stats.bytes_freed += size;
        }
    }
    remote
        .backend
        .create(&format!("gc/{stem}.done"), Vec::new())
        .map_err(remote.err())?;
    delete(remote, &mark_path)?;
    stats.marks_swept += 1;
    Ok(())
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemoteFsckReport {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    /// Branches (the newest generation of each is checked).
    pub refs: u64,
    pub index_files: u64,
    pub packs: u64,
    pub objects_reachable: u64,
    /// Objects whose bytes were read and checked (--read-data).
    pub objects_read: u64,
}

/// `dot fsck --remote`: every ref and index file parses, every pack an
/// index file names is there and long enough, everything each branch's
/// newest generation reaches is indexed and its metadata whole; with
/// `read_data`, every indexed object is read and checked.
pub(crate) fn fsck(
    remote: &Remote,
    read_data: bool,
    progress: &dyn Progress,
) -> Result<RemoteFsckReport> {
    let mut r = RemoteFsckReport::default();
    let h = holdings(remote, &mut r.errors, false)?;
    r.index_files = h.indexes.len() as u64;
    r.packs = h.packs.len() as u64;
    let locs = locations(&h.indexes, &BTreeSet::new());
    let mut named: HashMap<Id, u64> = HashMap::new();
    for l in locs.values().flatten() {
        let end = named.entry(l.pack).or_default();
        *end = (*end).max(l.slot.end());
    }
    for (pack, end) in &named {
        match h.packs.get(pack) {
            None => r.errors.push(format!(
                "{}: missing, though index files name objects in it",
                layout::pack_path(pack)
            )),
            Some(size) if *size < end + pack::FOOTER_LEN => r.errors.push(format!(
                "{}: {size} bytes, too short for the objects index files place in it",
                layout::pack_path(pack)
            )),
            Some(_) => {}
        }
    }
    let debris = h.packs.keys().filter(|p| !named.contains_key(*p)).count();
    if debris > 0 {
        r.notes.push(format!(
            "{debris} pack(s) no index file names (an unfinished push's, or a gc's to delete): dot gc --remote {} removes them",
            remote.name
        ));
    }
    progress.start("walking the remote's branches", 0);
    let (roots, _) = roots(&h.refs);
    r.refs = roots.len() as u64;
    let live = walk(remote, &locs, &roots, &mut r.errors, progress)?;
    progress.finish();
    r.objects_reachable = live.len() as u64;
    let dead = locs.len() - locs.keys().filter(|id| live.contains(*id)).count();
    if dead > 0 {
        r.notes.push(format!(
            "{dead} indexed object(s) no branch reaches: dot gc --remote {} frees them",
            remote.name
        ));
    }
    let pending = read_markers(remote)?.pending;
    if !pending.is_empty() {
        r.notes.push(format!(
            "{} gc marker(s) wait for their sweep (dot gc --remote {})",
            pending.len(),
            remote.name
        ));
    }
    if read_data {
        let all: Vec<(Id, Kind, Located)> = locs
            .iter()
            .flat_map(|(id, l)| l.iter().map(move |loc| (*id, loc.kind, *loc)))
            .filter(|(_, _, loc)| h.packs.contains_key(&loc.pack))
            .collect();
        let total = all
            .iter()
            .map(|(_, _, l)| u64::from(l.slot.stored_len))
            .sum();
        progress.start("reading every object", total);
        for part in all.chunks(4096) {
            if progress.cancelled() {
                return Err(SyncError::Cancelled);
            }
            for c in read_checked(remote, part, false)? {
                r.objects_read += 1;
                if let Err(why) = c.links {
                    r.errors
                        .push(format!("object {} is damaged: {why}", c.id.short()));
                }
            }
            progress.advance(
                part.iter()
                    .map(|(_, _, l)| u64::from(l.slot.stored_len))
                    .sum(),
            );
        }
        progress.finish();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn marker_round_trips_and_golden() {
        let m = Marker {
            superseded: [Id::of(b"i")].into(),
            doomed: [Id::of(b"p"), Id::of(b"q")].into(),
        };
        let bytes = m.encode();
        assert!(bytes.starts_with(b"dot gc 1\nindex "));
        assert_eq!(Marker::decode(&bytes), Some(m));
        assert_eq!(Marker::decode(b"dot gc 1\n"), Some(Marker::default()));
        assert_eq!(Marker::decode(b"dot gc 2\n"), None);
        let (time, stem, done) =
            marker_name("gc/00000000000000000042-0123456789abcdef.mark").unwrap();
        assert_eq!((time, done), (42, false));
        assert_eq!(stem, "00000000000000000042-0123456789abcdef");
        assert!(marker_name("gc/42-0123456789abcdef.mark").is_none());
        assert!(marker_name("gc/00000000000000000042-0123456789ABCDEF.done").is_none());
    }

    proptest! {
        #[test]
        fn any_marker_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(m) = Marker::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        #[test]
        fn any_marker_name_parses_or_fails_cleanly(name in "gc/[0-9a-f.-]{0,50}(mark|done)?") {
            let _ = marker_name(&name);
        }
    }
}
