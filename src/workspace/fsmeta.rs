//! Thin wrappers over the Unix calls std lacks: xattrs, symlink mtimes,
//! device nodes, hole punching. Each returns io::Result.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Extended attributes of `path` (not following symlinks), sorted by name.
/// Filesystems without xattr support yield none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: the buffer pointer and length describe `names`.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) | Some(libc::ENOSYS) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: the buffer pointer and length describe `value`.
            let m = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if m >= 0 {
                value.truncate(m as usize);
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                Some(libc::ENODATA) => {
                    value.clear();
                    break;
                }
                _ => return Err(e),
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Makes `path`'s extended attributes exactly `xattrs`: extra ones are
/// removed, missing or different ones set.
pub fn write_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let current = read_xattrs(path)?;
    if current == xattrs {
        return Ok(());
    }
    let c = cpath(path)?;
    for (name, _) in current
        .iter()
        .filter(|(n, _)| !xattrs.iter().any(|(w, _)| w == n))
    {
        let cname = CString::new(name.clone()).expect("listed names have no NUL");
        // SAFETY: both are valid C strings.
        if unsafe { libc::lremovexattr(c.as_ptr(), cname.as_ptr()) } != 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::ENODATA)
            ) {
                return Err(e);
            }
        }
    }
    for (name, value) in xattrs.iter().filter(|x| !current.contains(x)) {
        let cname = CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name contains NUL"))?;
        // SAFETY: pointers and lengths describe live buffers.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            // Unsupported here (filesystem or namespace): not restorable, not fatal.
            if !matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sets the mtime of `path` itself (a symlink is not followed); atime is
/// left alone.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
        },
    ];
    // SAFETY: `c` is a valid C string and `times` has two entries.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes the filesystem holding `path` to stable storage: the durability
/// barrier before the stat cache may vouch for restored files.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the call's duration.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(dir);
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    }
}

/// Creates a fifo or device node.
pub fn mknod(path: &Path, kind_bits: u32, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid C string.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            (kind_bits | (mode & 0o7777)) as libc::mode_t,
            rdev as libc::dev_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns a byte range of a file into a hole, or writes zeros where the
/// filesystem cannot punch holes.
pub fn zero_range(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for writing for the call's duration.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
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
