//! The mounts a daemon serves (docs/design.md 16): views of commits and
//! mounted dots' working states, mounted on request, recorded in the
//! store first, mounted again when the daemon starts, and unmounted only
//! when nothing uses them; and what commit, reset and checkout do on a
//! mounted dot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::chunker::Chunker;
use crate::mount::branches;
use crate::mount::overlay::Overlay;
use crate::mount::working::Working;
use crate::progress::Progress;
use crate::repo::{DotConfig, MountRecord, MountedDot, Repo, RepoError, Result};

/// Where the daemon logs what happens to mounts outside any request.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// The mounts of one daemon.
pub struct Mounts {
    #[cfg(target_os = "linux")]
    live: Mutex<BTreeMap<PathBuf, crate::fuse::Mounted>>,
    #[cfg(not(target_os = "linux"))]
    live: Mutex<BTreeMap<PathBuf, ()>>,
    /// Mounted dots' working states, by dot; their kernel mounts are in
    /// `live` under their mount points.
    dots: Mutex<BTreeMap<String, Arc<Working>>>,
    log: Log,
}

#[cfg(target_os = "linux")]
fn mount_failed(at: &Path, e: std::io::Error) -> RepoError {
    RepoError::io(
        format!(
            "cannot mount at {} (FUSE needs /dev/fuse, and fusermount3 unless the daemon runs as root)",
            at.display()
        ),
        e,
    )
}

fn linux_only() -> RepoError {
    RepoError::Refused("mounts need Linux's FUSE; on this system dots are plain directories".into())
}

impl Mounts {
    pub fn new(log: Log) -> Mounts {
        Mounts {
            live: Mutex::new(BTreeMap::new()),
            dots: Mutex::new(BTreeMap::new()),
            log,
        }
    }

    /// Mounts again every recorded view (after a restart, or a crash that
    /// left dead mounts behind); failures are logged and the record kept.
    pub fn restore(&self, repo: &Repo) {
        match repo.mounted_dots() {
            Ok(dots) => {
                for m in dots {
                    #[cfg(target_os = "linux")]
                    crate::fuse::detach_stale(&m.at);
                    let done = repo.dot(&m.dot).and_then(|cfg| {
                        self.attach_dot(repo, &cfg, &m.at, open_overlay(repo, &cfg)?)
                    });
                    match done {
                        Ok(()) => {
                            (self.log)(format!("mounted dot {} at {} again", m.dot, m.at.display()))
                        }
                        Err(e) => (self.log)(format!(
                            "cannot mount dot {} at {} again: {e}; dot unmount {} drops it",
                            m.dot,
                            m.at.display(),
                            m.dot
                        )),
                    }
                }
            }
            Err(e) => (self.log)(format!("cannot read the mount records: {e}")),
        }
        let records = match repo.mounts() {
            Ok(r) => r,
            Err(e) => return (self.log)(format!("cannot read the mount records: {e}")),
        };
        for r in records {
            #[cfg(target_os = "linux")]
            crate::fuse::detach_stale(&r.at);
            match self.attach(repo, &r) {
                Ok(()) => (self.log)(format!(
                    "mounted {}@{} ({}) at {} again",
                    r.dot,
                    r.rev,
                    r.commit.short(),
                    r.at.display()
                )),
                Err(e) => (self.log)(format!(
                    "cannot mount {}@{} at {} again: {e}; dot unmount {} drops it",
                    r.dot,
                    r.rev,
                    r.at.display(),
                    r.at.display()
                )),
            }
        }
    }

    /// `dot mount DOT@REF --at DIR`.
    pub fn mount(&self, repo: &Repo, spec: &str, at: &Path) -> Result<MountRecord> {
        if !cfg!(target_os = "linux") {
            return Err(linux_only());
        }
        let (_, record) = repo.plan_view(spec, at)?;
        repo.record_mount(&record)?;
        if let Err(e) = self.attach(repo, &record) {
            repo.drop_mount(at)?;
            return Err(e);
        }
        Ok(record)
    }

    #[cfg(target_os = "linux")]
    fn attach(&self, repo: &Repo, r: &MountRecord) -> Result<()> {
        let view = crate::mount::View::new(repo.shared_store(), r.commit).map_err(|f| {
            RepoError::Damaged {
                what: format!("commit {} of dot {}", r.commit.short(), r.dot),
                why: format!("{f:?}"),
            }
        })?;
        let log = self.log.clone();
        let mounted =
            crate::fuse::mount(Arc::new(view), &r.at, &format!("{}@{}", r.dot, r.rev), log)
                .map_err(|e| mount_failed(&r.at, e))?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(r.at.clone(), mounted);
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn attach(&self, _repo: &Repo, _r: &MountRecord) -> Result<()> {
        Err(linux_only())
    }

    /// `dot unmount DIR`: refused while a process uses the view, naming
    /// it (not `client`, the process asking). A view a dead daemon left
    /// is detached and forgotten.
    pub fn unmount(&self, repo: &Repo, at: &Path, client: Option<u32>) -> Result<MountRecord> {
        let Some(record) = repo.mounts()?.into_iter().find(|m| m.at == at) else {
            return Err(RepoError::NotFound(format!(
                "{} is not a dot view; dot daemon status lists them",
                at.display()
            )));
        };
        self.detach(at, client)?;
        repo.drop_mount(at)?;
        Ok(record)
    }

    /// Unmounts what is mounted at `at`, unless something uses it; a
    /// dead mount (a killed daemon's) is detached.
    fn detach(&self, at: &Path, client: Option<u32>) -> Result<()> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(target_os = "linux")]
        {
            if live.contains_key(at) {
                busy_unmount(at, client)?;
            } else {
                crate::fuse::detach_stale(at);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = client;
        live.remove(at);
        Ok(())
    }

    /// Paths of the views mounted now.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The working state of mounted dot `dot`, if it is mounted here.
    pub fn working(&self, dot: &str) -> Option<Arc<Working>> {
        self.dots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dot)
            .cloned()
    }

    /// `dot mount [DOT]`: the dot's working state becomes a mount at the
    /// same path, uncommitted changes included; the plain directories'
    /// space is given back, as the mount serves the same content from the
    /// store and the overlay. Crash safety: the changes are carried into
    /// the overlay and made durable before the record says the dot is
    /// mounted; until then the plain directories are the working state.
    pub fn mount_dot(
        &self,
        repo: &Repo,
        cfg: &DotConfig,
        progress: &dyn Progress,
    ) -> Result<MountedDot> {
        if !cfg!(target_os = "linux") {
            return Err(linux_only());
        }
        if repo.mounted_dot(&cfg.name)?.is_some() {
            return Err(RepoError::Conflict(format!(
                "dot {} is mounted already; see dot status {}",
                cfg.name, cfg.name
            )));
        }
        let at = repo.mount_point(cfg)?;
        // An overlay a crash left before its record was written is no
        // one's: the plain directories hold the working state.
        let dir = repo.overlay_dir(&cfg.name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RepoError::io(format!("cannot clear {}", dir.display()), e))
            }
            _ => {}
        }
        let (_, base) = repo.working_base(cfg)?;
        let overlay = open_overlay(repo, cfg)?;
        progress.start("carrying uncommitted changes into the mount", 0);
        let carried = repo.with_working_trees(cfg, progress, |objects, _, now, _| {
            for (sub, top) in now {
                let plain = &cfg.subdots[sub].path;
                crate::mount::carry::carry_in(&overlay, objects, sub, plain, &base[sub], top)
                    .map_err(|e| {
                        RepoError::io(
                            format!(
                                "cannot carry the changes of {} into the mount",
                                plain.display()
                            ),
                            e,
                        )
                    })?;
            }
            Ok(())
        });
        progress.finish();
        carried?;
        // (Nothing carried, nothing to make durable: syncfs costs what the
        // whole file system has unwritten.)
        let upper = dir.join("upper");
        if std::fs::read_dir(&upper).is_ok_and(|mut d| d.next().is_some()) {
            sync_dir(&dir)?;
        }
        let record = MountedDot {
            dot: cfg.name.clone(),
            at: at.clone(),
        };
        repo.record_mounted_dot(&record)?;
        for sub in cfg.subdots.values() {
            empty_dir(&sub.path)
                .map_err(|e| RepoError::io(format!("cannot empty {}", sub.path.display()), e))?;
        }
        if let Err(e) = self.attach_dot(repo, cfg, &at, overlay) {
            // Not mounted: the plain directories come back, changes and all.
            self.write_back(repo, cfg, &open_overlay(repo, cfg)?, progress)?;
            return Err(e);
        }
        Ok(record)
    }

    #[cfg(target_os = "linux")]
    fn attach_dot(&self, repo: &Repo, cfg: &DotConfig, at: &Path, overlay: Overlay) -> Result<()> {
        let upper = repo.overlay_dir(&cfg.name).join("upper");
        let working = Arc::new(Working::new(overlay));
        std::fs::create_dir_all(at).map_err(|e| {
            RepoError::io(format!("cannot create the mount point {}", at.display()), e)
        })?;
        let mounted =
            crate::fuse::mount_working(working.clone(), &upper, at, &cfg.name, self.log.clone())
                .map_err(|e| mount_failed(at, e))?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(at.to_path_buf(), mounted);
        self.dots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cfg.name.clone(), working);
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn attach_dot(
        &self,
        _repo: &Repo,
        _cfg: &DotConfig,
        _at: &Path,
        _overlay: Overlay,
    ) -> Result<()> {
        Err(linux_only())
    }

    /// `dot unmount DOT`: back to plain directories with the same content,
    /// uncommitted changes included. Refused while the mount is in use.
    pub fn unmount_dot(
        &self,
        repo: &Repo,
        cfg: &DotConfig,
        client: Option<u32>,
        progress: &dyn Progress,
    ) -> Result<MountedDot> {
        let Some(record) = repo.mounted_dot(&cfg.name)? else {
            return Err(RepoError::NotFound(format!(
                "dot {} is not mounted; see dot status {}",
                cfg.name, cfg.name
            )));
        };
        let kept = branches::kept_branches(&repo.overlay_dir(&cfg.name))
            .map_err(|e| RepoError::io("cannot read the overlay", e))?;
        if !kept.is_empty() {
            return Err(RepoError::Conflict(format!(
                "branches {} of dot {} hold uncommitted changes on the mount; check each out and commit them (or drop them with dot reset --hard HEAD) before dot unmount",
                kept.join(", "),
                cfg.name
            )));
        }
        self.detach(&record.at, client)?;
        // The overlay this daemon served, or the one a dead daemon left.
        let served = self
            .dots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cfg.name);
        let opened;
        let overlay = match &served {
            Some(w) => &w.overlay,
            None => {
                opened = open_overlay(repo, cfg)?;
                &opened
            }
        };
        self.write_back(repo, cfg, overlay, progress)
            .inspect_err(|_| {
                if served.is_some() && repo.mounted_dot(&cfg.name).is_ok_and(|m| m.is_some()) {
                    // Nothing was written back: the mount serves again.
                    let again = open_overlay(repo, cfg)
                        .and_then(|o| self.attach_dot(repo, cfg, &record.at, o));
                    if let Err(e) = again {
                        (self.log)(format!("cannot mount dot {} again: {e}", cfg.name));
                    }
                }
            })?;
        let _ = std::fs::remove_dir_all(repo.overlay_dir(&cfg.name));
        Ok(record)
    }

    /// Makes the plain directories of mounted dot `cfg` hold what
    /// `overlay` shows: its trees are built (storing what changed, as a
    /// commit would), then one batch drops the mount record and records
    /// the journal that materializes them, which the next command
    /// finishes after a crash.
    fn write_back(
        &self,
        repo: &Repo,
        cfg: &DotConfig,
        overlay: &Overlay,
        progress: &dyn Progress,
    ) -> Result<()> {
        let root = shown_root(overlay, cfg, &Chunker::new(cfg.chunking))?;
        for s in cfg.subdots.values() {
            std::fs::create_dir_all(&s.path)
                .map_err(|e| RepoError::io(format!("cannot create {}", s.path.display()), e))?;
        }
        progress.start("writing the working state back", 0);
        let done = repo.unmount_to(cfg, &root, progress);
        progress.finish();
        done
    }
}

/// The overlay of mounted dot `cfg`, over its branch's commit.
fn open_overlay(repo: &Repo, cfg: &DotConfig) -> Result<Overlay> {
    let (_, root) = repo.working_base(cfg)?;
    let dir = repo.overlay_dir(&cfg.name);
    // A checkout a crash interrupted is finished first.
    branches::reconcile(&dir, &cfg.head)
        .map_err(|e| RepoError::io(format!("cannot set up the overlay {}", dir.display()), e))?;
    let upper = dir.join("upper");
    Overlay::open(repo.shared_store(), &upper, root)
        .map_err(|e| RepoError::io(format!("cannot open the overlay {}", upper.display()), e))
}

/// Makes what was written under `dir` durable (the whole file system's
/// dirty data, which is at most what a commit flushes).
fn sync_dir(dir: &Path) -> Result<()> {
    let synced = std::fs::File::open(dir).and_then(|f| {
        #[cfg(target_os = "linux")]
        rustix::fs::syncfs(&f)?;
        #[cfg(not(target_os = "linux"))]
        f.sync_all()?;
        Ok(())
    });
    synced.map_err(|e| RepoError::io(format!("cannot make {} durable", dir.display()), e))
}

/// Unmounts `at` unless something uses it, which is then named (not
/// `client`, the process asking).
#[cfg(target_os = "linux")]
fn busy_unmount(at: &Path, client: Option<u32>) -> Result<()> {
    match rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => Err(RepoError::Busy(format!(
            "{} is in use by {}; close what uses it and run dot unmount again",
            at.display(),
            crate::mount::users_of(at, client).join(", ")
        ))),
        Err(e) => Err(RepoError::io(
            format!("cannot unmount {}", at.display()),
            e.into(),
        )),
    }
}

/// Removes everything in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.symlink_metadata()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Gives the memory freed by a commit or a switch (re-chunking windows,
/// chunk lists) back to the system, on a thread of its own: the command
/// need not wait for it.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::spawn(|| {
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

/// Builds what changed in `w` while writes flow, in passes that each
/// re-chunk only what was written during the one before
/// (Overlay::build_top keeps what it built), so they shrink; once one is
/// quick, the build of what shows at the freeze has little left. Passes
/// go on while they keep shrinking: a database's checkpoint can write
/// pages faster than a few passes catch up with, and what the last one
/// leaves is what changes of names wait for. A racing write only leaves
/// chunks no tree names yet, and a pass that fails on one is simply
/// followed by the next.
fn build_while_writing(overlay: &Overlay, cfg: &DotConfig, chunker: &Chunker) {
    let mut last = None;
    for n in 0..MAX_PASSES {
        let pass = std::time::Instant::now();
        for sub in cfg.subdots.keys() {
            let _ = overlay.top(sub, chunker);
        }
        let took = pass.elapsed();
        if took < QUICK_PASS || (n + 1 >= FREE_PASSES && last.is_some_and(|l| took * 10 >= l * 9)) {
            break;
        }
        last = Some(took);
    }
}

/// The root of what `overlay` shows, built (during a freeze: what showed
/// at it).
fn shown_root(
    overlay: &Overlay,
    cfg: &DotConfig,
    chunker: &Chunker,
) -> Result<crate::tree::commit::Root> {
    let mut root = crate::tree::commit::Root::new();
    for sub in cfg.subdots.keys() {
        let top = overlay.top(sub, chunker).map_err(|e| {
            RepoError::io(
                format!("cannot read {}.{sub} from its overlay", cfg.name),
                e,
            )
        })?;
        root.insert(sub.clone(), top);
    }
    Ok(root)
}

/// Freezes what `w` shows (docs/design.md 16.6): held for an instant,
/// writes then go on while it is built. The freeze ends when the result
/// is dropped, or with the commit's root by `Overlay::thaw` once it is
/// forgotten.
fn freeze(w: &Working) -> Result<Thaw<'_>> {
    let _writes = w.exclusive();
    w.overlay
        .freeze()
        .map_err(|e| RepoError::io("cannot freeze the overlay", e))?;
    Ok(Thaw(&w.overlay))
}

/// Ends a freeze whatever happens to what began it.
struct Thaw<'a>(&'a Overlay);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let _ = self.0.thaw(None);
    }
}

/// Whether a switch goes ahead while files on the mount are open
/// (`--force`), and the process that asked for it (not named among their
/// users: `mount::users_of`).
#[derive(Clone, Copy, Debug)]
pub struct OpenFiles {
    pub force: bool,
    pub client: Option<u32>,
}

/// Passes of a commit while writes flow stop after one that took less
/// than this...
const QUICK_PASS: std::time::Duration = std::time::Duration::from_millis(5);
/// ...or, from this many on, after one that was not a tenth shorter than
/// the one before...
const FREE_PASSES: usize = 6;
/// ...and at most this many run.
const MAX_PASSES: usize = 16;

impl Mounts {
    /// `dot commit` of a mounted dot: what shows is frozen for an
    /// instant, its tree built while writes go on (re-chunking only
    /// around written blocks) and recorded, then the overlay is emptied
    /// or settled over the new commit.
    /// Returns the commit, how long writes were held and how long changes
    /// of names and attributes waited.
    pub fn commit(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        message: &str,
        metadata: std::collections::BTreeMap<String, String>,
        env: &crate::env::ClientEnv,
    ) -> Result<(crate::id::CommitId, u64, u64)> {
        let chunker = Chunker::new(cfg.chunking);
        build_while_writing(&w.overlay, cfg, &chunker);
        // What they stored is made durable now, not under the barrier.
        repo.shared_store().flush()?;
        let held = std::time::Instant::now();
        let thaw = freeze(w)?;
        let mut pause = held.elapsed();
        // What showed at the freeze is built and committed while writes
        // go on; changes of names and attributes wait.
        let frozen = std::time::Instant::now();
        let built: Result<_> = (|| {
            env.test_pause("DOT_TEST_COMMIT_PAUSE_MS");
            let parent = repo.branch_commit(&cfg.name, &cfg.head)?;
            let root = shown_root(&w.overlay, cfg, &chunker)?;
            let id = repo.commit_root(
                cfg,
                parent,
                &root,
                Default::default(),
                message,
                metadata,
                env,
            )?;
            Ok((id, root))
        })();
        let held = std::time::Instant::now();
        let writes = w.exclusive();
        let (id, root) = built?;
        std::mem::forget(thaw);
        env.test_pause("DOT_TEST_REBASE_PAUSE_MS");
        w.overlay
            .thaw(Some(root))
            .map_err(|e| RepoError::io("cannot empty the overlay after the commit", e))?;
        pause += held.elapsed();
        let frozen_ms = frozen.elapsed().as_millis() as u64;
        drop(writes);
        trim_heap();
        Ok((id, pause.as_millis() as u64, frozen_ms))
    }

    /// Refuses a switch while files are open on the mount of `cfg`
    /// (unless forced), naming who has them.
    fn check_unused(&self, w: &Working, at: &Path, open: OpenFiles) -> Result<()> {
        if open.force || w.open_files() == 0 {
            return Ok(());
        }
        let users = crate::mount::users_of(at, open.client);
        Err(RepoError::Busy(format!(
            "files on {} are open{}; close them, or pass --force",
            at.display(),
            if users.is_empty() {
                String::new()
            } else {
                format!(" (by {})", users.join(", "))
            }
        )))
    }

    /// Shows `cfg`'s branch commit on its mount, with nothing changed
    /// over it, then lets writes go (`writes`) and has the kernel forget
    /// what it cached of what changed.
    fn show_branch(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        writes: std::sync::RwLockWriteGuard<'_, ()>,
    ) -> Result<()> {
        let (_, root) = repo.working_base(cfg)?;
        // Only what the switch changes is dropped from the kernel's caches
        // (each inode costs it a round trip).
        let changed = w
            .overlay
            .changes_to(&root)
            .map_err(|e| RepoError::io("cannot compare the overlay", e))?;
        w.overlay
            .rebase(root, false)
            .map_err(|e| RepoError::io("cannot empty the overlay", e))?;
        self.forget_changed(repo, w, cfg, writes, changed)
    }

    /// Lets writes go, then has the kernel forget what it cached of
    /// `changed`. Not under the barrier: the kernel's invalidation takes
    /// the locks of the inodes it drops, which a request waiting at the
    /// barrier may hold.
    fn forget_changed(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        writes: std::sync::RwLockWriteGuard<'_, ()>,
        changed: Option<std::collections::HashMap<String, crate::mount::overlay::Change>>,
    ) -> Result<()> {
        let mut known = w.known_in(changed.as_ref());
        w.renumber(&known);
        let dropping = w.drop_later(&mut known);
        drop(writes);
        let at = repo.mounted_dot(&cfg.name).ok().flatten().map(|m| m.at);
        #[cfg(target_os = "linux")]
        {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            match at.and_then(|at| live.get(&at)) {
                Some(l) => l.invalidate(known, dropping),
                None => dropping.done_all(&known),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = at;
            dropping.done_all(&known);
        }
        trim_heap();
        Ok(())
    }

    /// `dot reset --hard REF` of a mounted dot: no data is copied.
    pub fn reset(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        spec: &str,
        open: OpenFiles,
    ) -> Result<crate::id::CommitId> {
        let at = repo.mount_point(cfg)?;
        let writes = w.exclusive();
        self.check_unused(w, &at, open)?;
        let target = repo.move_branch(cfg, spec)?;
        self.show_branch(repo, w, cfg, writes)?;
        Ok(target)
    }

    /// `dot status` (and diff, list) of a mounted dot: its trees are built
    /// from the overlay, as a commit's passes build them (storing what
    /// changed, which the next commit reuses), and compared with the
    /// commit; nothing is read through the kernel, so a database writing
    /// meanwhile cannot make it fail. Its new bytes are what the overlay
    /// holds written since the commit.
    pub fn status(&self, repo: &Repo, w: &Working, cfg: &DotConfig) -> Result<crate::repo::Status> {
        let chunker = Chunker::new(cfg.chunking);
        let store = repo.shared_store();
        build_while_writing(&w.overlay, cfg, &chunker);
        let now = {
            let _thaw = freeze(w)?;
            shown_root(&w.overlay, cfg, &chunker)?
        };
        let mut size = 0u64;
        for top in now.values() {
            size = size.saturating_add(crate::tree::dir::tree_bytes(&*store, &top.tree)?);
        }
        let head = repo.head_tops(cfg)?;
        let written = w.overlay.written_bytes().map_err(|e| {
            RepoError::io(format!("cannot read the overlay of dot {}", cfg.name), e)
        })?;
        Ok(crate::repo::Status {
            changes: crate::repo::changes_between(cfg, &*store, &head, &now)?,
            new_bytes: written,
            size,
        })
    }

    /// `dot init DOT.SUB` of a mounted dot: the subdot is recorded and
    /// shows at once, empty. Refused when the dot is mounted as its one
    /// default subdot's directory: a second subdot changes the layout.
    pub fn add_subdot(&self, repo: &Repo, w: &Working, cfg: &DotConfig, sub: &str) -> Result<()> {
        if w.single() {
            return Err(RepoError::Refused(format!(
                "dot {} is mounted as one directory, and a second subdot would change that; stop what uses it, run dot unmount {}, add the subdot, and mount it again",
                cfg.name, cfg.name
            )));
        }
        let _writes = w.exclusive();
        let cfg = repo.add_mounted_subdot(cfg, sub)?;
        let (_, base) = repo.working_base(&cfg)?;
        w.overlay.add_subdot(sub, base[sub]);
        #[cfg(target_os = "linux")]
        if let Some(l) = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&repo.mount_point(&cfg)?)
        {
            l.forget_name(crate::mount::ROOT, sub.as_bytes());
        }
        Ok(())
    }

    /// `dot pull` into the current branch of a mounted dot: the branch
    /// moves (with `b`, written in the same batch) to `to`, fetched
    /// already, and the mount shows it. Refused while files are open or
    /// something is uncommitted.
    #[allow(clippy::too_many_arguments)]
    pub fn pull(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        b: crate::store::Batch,
        to: crate::id::CommitId,
        command: &str,
        open: OpenFiles,
    ) -> Result<()> {
        let at = repo.mount_point(cfg)?;
        let writes = w.exclusive();
        self.check_unused(w, &at, open)?;
        self.require_clean(w, cfg)?;
        repo.move_branch_with(cfg, b, to, command)?;
        self.show_branch(repo, w, cfg, writes)
    }

    /// Refuses while the overlay holds uncommitted changes (the caller
    /// holds writes back).
    fn require_clean(&self, w: &Working, cfg: &DotConfig) -> Result<()> {
        let clean = w
            .overlay
            .is_clean(&Chunker::new(cfg.chunking))
            .map_err(|e| RepoError::io("cannot read the overlay", e))?;
        if clean {
            return Ok(());
        }
        Err(RepoError::Conflict(format!(
            "dot {} has uncommitted changes; commit them or drop them (dot reset --hard HEAD {}) first",
            cfg.name, cfg.name
        )))
    }

    /// `dot checkout [-b] BRANCH` of a mounted dot. Each branch keeps its
    /// own uncommitted changes (mount::branches): switching puts the
    /// current branch's aside and brings the other's back, copying
    /// nothing; a new branch takes the current changes along.
    pub fn checkout(
        &self,
        repo: &Repo,
        w: &Working,
        cfg: &DotConfig,
        branch: &str,
        create: bool,
        open: OpenFiles,
    ) -> Result<()> {
        let at = repo.mount_point(cfg)?;
        let dir = repo.overlay_dir(&cfg.name);
        let disk = |e| RepoError::io(format!("cannot switch the overlay {}", dir.display()), e);
        let writes = w.exclusive();
        if create {
            // Whatever the head is when this is interrupted, the changes
            // are its.
            branches::mark(&dir, None).map_err(disk)?;
            let cfg = repo.switch_branch(cfg, branch, true)?;
            return branches::mark(&dir, Some(&cfg.head)).map_err(disk);
        }
        self.check_unused(w, &at, open)?;
        let mut target = cfg.clone();
        target.head = branch.to_string();
        let (_, root) = repo.working_base(&target)?;
        let compare = |e| RepoError::io("cannot compare the overlay", e);
        let before = w.overlay.changes_to(&root).map_err(compare)?;
        // The changes are moved aside as they are, as durable as they
        // were written (a rename keeps every file); the renames are
        // synced before the head moves.
        branches::stash(&dir, &cfg.head).map_err(disk)?;
        let cfg = match repo.switch_branch(cfg, branch, false) {
            Ok(cfg) => cfg,
            Err(e) => {
                // Not switched: the branch gets its changes back.
                branches::reconcile(&dir, &cfg.head).map_err(disk)?;
                w.overlay.reload(repo.working_base(cfg)?.1);
                return Err(e);
            }
        };
        branches::reconcile(&dir, &cfg.head).map_err(disk)?;
        w.overlay.reload(root.clone());
        let after = w.overlay.changes_to(&root).map_err(compare)?;
        let changed = crate::mount::overlay::either(before, after);
        self.forget_changed(repo, w, &cfg, writes, changed)
    }
}
