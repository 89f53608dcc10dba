//! `dot fsck --repair`: a new index built from the packs and the state log
//! when the old one is lost or damaged.
//!
//! The new index is built in `index.repair/` and renamed to `index/` only
//! when whole, so a repair killed at any instant leaves either the old
//! state (no `index/`, or the damaged one: the repair is run again) or the
//! repaired one; never a partial index that gc could take for the truth.
//! A damaged index is kept beside it as `index.damaged-<unix seconds>/`
//! (`-<n>` added when a repair in the same second took that name).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::statelog::{self, StateLog};
use super::{
    db, io_err, lock_home, pack, pack_file, pack_seqs, sync_dir, Batch, Entry, Kind, Result,
};
use crate::id::Id;

/// What a repair found and did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct RepairReport {
    pub packs: u64,
    pub objects: u64,
    /// Packs that were never sealed (a killed process's), sealed now.
    pub packs_sealed: u64,
    /// Packs whose header cannot be read: left as they are, unindexed.
    pub packs_unreadable: Vec<String>,
    /// Changes replayed from the state log.
    pub records: u64,
    /// False when there was no readable state log: objects are back,
    /// branches and configuration are not.
    pub state_log: bool,
    /// Bytes at the end of the state log that were not a whole record.
    pub log_torn_bytes: u64,
    /// Why replaying the state log stopped before its last whole record.
    pub log_stopped: Option<String>,
    /// Where the old index was kept, when there was one.
    pub old_index: Option<PathBuf>,
}

/// Rebuilds `home`'s index: every object of every pack (sealing packs a
/// killed process left open), then the branches, reflog and configuration
/// replayed from the state log.
pub fn repair(home: &Path, who: &str) -> Result<RepairReport> {
    let _lock = lock_home(home, who)?;
    let mut report = RepairReport::default();
    let building = home.join("index.repair");
    if building.exists() {
        fs::remove_dir_all(&building)
            .map_err(io_err(format!("cannot remove {}", building.display())))?;
    }
    let db = db::Db::open(&building, None)?;
    for seq in pack_seqs(home)? {
        let path = pack_file(home, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        let (kind, slots) = match pack::read_trailer(&file) {
            Ok(found) => found,
            Err(_) => match unsealed(&file, &path) {
                Some(found) => {
                    report.packs_sealed += 1;
                    found
                }
                None => {
                    report.packs_unreadable.push(format!("{seq:016x}"));
                    continue;
                }
            },
        };
        let entries: Vec<(Id, Entry)> = slots
            .into_iter()
            .map(|(id, slot)| {
                (
                    id,
                    Entry {
                        pack: seq,
                        slot,
                        kind,
                    },
                )
            })
            .collect();
        report.packs += 1;
        report.objects += entries.len() as u64;
        db.put_objects(&entries, None)?;
    }
    let log = StateLog::in_home(home);
    let bytes = fs::read(&log).unwrap_or_default();
    if let Ok(records) = statelog::records(&bytes) {
        report.state_log = true;
        report.log_torn_bytes = records.len - records.end;
        let replayed = statelog::replay(&records.payloads);
        report.records = replayed.records;
        report.log_stopped = replayed.stopped;
        let mut b = Batch::default();
        for ((space, key), value) in replayed.state {
            b.put(space, key, value);
        }
        db.write(b)?;
    }
    drop(db);
    sync_dir(&home.join("packs"))?;
    let index = home.join("index");
    if index.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A repair in the same second as the last one gets a suffix.
        let kept = (0u32..)
            .map(|n| match n {
                0 => home.join(format!("index.damaged-{secs}")),
                n => home.join(format!("index.damaged-{secs}-{n}")),
            })
            .find(|p| !p.exists())
            .expect("a name not taken");
        fs::rename(&index, &kept)
            .map_err(io_err(format!("cannot move {} aside", index.display())))?;
        report.old_index = Some(kept);
    }
    fs::rename(&building, &index).map_err(io_err(format!(
        "cannot move the new index to {}",
        index.display()
    )))?;
    sync_dir(home)?;
    Ok(report)
}

/// Seals a pack a killed process left open, keeping each whole record
/// that decodes to its id (nothing in the lost index can vouch for one).
/// A pack that was sealed and is damaged is copied to `<seq>.pack.damaged`
/// first, since sealing it again drops what follows a damaged record.
fn unsealed(file: &File, path: &Path) -> Option<(Kind, Vec<(Id, pack::Slot)>)> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; pack::HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0).ok()?;
    let kind = pack::decode_header(&header).ok()?;
    let size = file.metadata().ok()?.len();
    let mut end = [0u8; 8];
    if size >= 8 && file.read_exact_at(&mut end, size - 8).is_ok() && &end == pack::END_MAGIC {
        fs::copy(path, path.with_extension("pack.damaged")).ok()?;
    }
    let slots = pack::recover(file, &|_, _| false, false).ok()?;
    Some((kind, slots))
}
