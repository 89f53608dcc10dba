//! The Unix calls std lacks, through rustix (and libc for mknod where rustix lacks it): xattrs,
//! symlink mtimes, device nodes, hole punching, syncing a filesystem. Each
//! returns io::Result.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Timespec, Timestamps, CWD, UTIME_OMIT};
use rustix::io::Errno;

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Extended attributes of `path` (not following symlinks), sorted by name.
/// Filesystems without xattr support yield none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(Errno::NOTSUP) | Err(Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(m) => {
                    value.truncate(m);
                    break;
                }
                Err(Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(Errno::NODATA) => {
                    value.clear();
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Makes `path`'s extended attributes exactly `xattrs`: extra ones are
/// removed, missing or different ones set. Attributes the filesystem or
/// the user cannot have (ENOTSUP, EPERM) are skipped.
pub fn write_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let current = read_xattrs(path)?;
    if current == xattrs {
        return Ok(());
    }
    for (name, _) in current
        .iter()
        .filter(|(n, _)| !xattrs.iter().any(|(w, _)| w == n))
    {
        match rustix::fs::lremovexattr(path, name.as_slice()) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) | Err(Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (name, value) in xattrs.iter().filter(|x| !current.contains(x)) {
        match rustix::fs::lsetxattr(
            path,
            name.as_slice(),
            value,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets the mtime of `path` itself (a symlink is not followed); atime is
/// left alone.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    };
    Ok(rustix::fs::utimensat(
        CWD,
        path,
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Flushes the filesystem holding `path` to stable storage: the durability
/// barrier before the stat cache may vouch for restored files.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    #[cfg(target_os = "linux")]
    rustix::fs::syncfs(&dir)?;
    #[cfg(not(target_os = "linux"))]
    {
        drop(dir);
        rustix::fs::sync();
    }
    Ok(())
}

/// Creates a fifo or device node of `kind` (a fifo, or a character or
/// block device).
pub fn mknod(path: &Path, kind: FileType, mode: u32, rdev: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::fs::mknodat(
            CWD,
            path,
            kind,
            rustix::fs::Mode::from_raw_mode((mode & 0o7777) as _),
            rdev as _,
        )?)
    }
    // rustix offers mknodat only where the system call exists.
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        let mode = kind.as_raw_mode() as libc::mode_t | (mode & 0o7777) as libc::mode_t;
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        if unsafe { libc::mknod(c.as_ptr(), mode, rdev as libc::dev_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Turns a byte range of a file into a hole, or writes zeros where the
/// filesystem cannot punch holes.
pub fn zero_range(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::FallocateFlags;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(file, flags, offset, len).is_ok() {
            return Ok(());
        }
    }
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}
