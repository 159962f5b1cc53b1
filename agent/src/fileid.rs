//! A file's identity as the kernel programs see it: the device number of its superblock
//! (`inode->i_sb->s_dev`, in the kernel's internal encoding) and its inode number.
//!
//! `stat()`'s `st_dev` is not always that device: btrfs reports a device per subvolume, and
//! overlay-style filesystems may too. The superblock's device is the `MAJ:MIN` that
//! /proc/self/mountinfo shows for the file's mount, so the mount is found with
//! `statx(STATX_MNT_ID)` and its `MAJ:MIN` read from mountinfo (cached, reread on a miss).

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::Path,
    sync::{Mutex, OnceLock},
};

/// Kernel dev_t (major << 20 | minor) and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u32,
    pub ino: u64,
}

/// The kernel's internal dev_t from a major and minor number.
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// Mount id → superblock device, from mountinfo text.
fn parse_mountinfo(text: &str) -> HashMap<u64, u32> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.parse().ok()?;
            let _parent = f.next()?;
            let (maj, min) = f.next()?.split_once(':')?;
            Some((id, kernel_dev(maj.parse().ok()?, min.parse().ok()?)))
        })
        .collect()
}

fn mount_devs() -> &'static Mutex<HashMap<u64, u32>> {
    static DEVS: OnceLock<Mutex<HashMap<u64, u32>>> = OnceLock::new();
    DEVS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn dev_of_mount(mnt_id: u64) -> Option<u32> {
    let mut devs = mount_devs().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = devs.get(&mnt_id) {
        return Some(*d);
    }
    // A mount we have not seen: mounts come and go, read the table again.
    *devs = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
    devs.get(&mnt_id).copied()
}

/// The identity of the file at `path` (symlinks followed, as exec does; `/proc/PID/exe` works
/// across mount namespaces).
pub fn file_id(path: &Path) -> io::Result<FileId> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: zeroed statx is a valid out-buffer; the path is NUL-terminated.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_INO | libc::STATX_MNT_ID;
    // SAFETY: valid pointers for the duration of the call.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, mask, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let from_stat = kernel_dev(stx.stx_dev_major, stx.stx_dev_minor);
    // Kernels before 5.8 have no mount id: fall back to st_dev (right on ext4, xfs, tmpfs …).
    let dev = if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        dev_of_mount(stx.stx_mnt_id).unwrap_or(from_stat)
    } else {
        from_stat
    };
    Ok(FileId { dev, ino: stx.stx_ino })
}

/// The inode generation of the file at `path` (`FS_IOC_GETVERSION`), which tells it from a later
/// file that reuses its inode number; None where the filesystem does not say (tmpfs, overlayfs …)
/// or the file cannot be opened.
pub fn generation(path: &Path) -> Option<u32> {
    use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
    // _IOR('v', 1, long)
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    // Non-blocking: a path that became a FIFO since it was checked must not hang the resolution.
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).ok()?;
    let mut gen: libc::c_long = 0;
    // SAFETY: the ioctl writes one long into `gen`, which outlives the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETVERSION, &mut gen) };
    (rc == 0).then_some(gen as u32)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn mountinfo_devices() {
        let m =
            parse_mountinfo("26 1 0:23 / / rw - btrfs /dev/vda rw\n27 26 259:3 / /boot rw - ext4 /dev/nvme0n1p3 rw\n");
        assert_eq!(m[&26], 23);
        assert_eq!(m[&27], (259 << 20) | 3);
    }

    /// On this machine's filesystems (ext4, tmpfs) the superblock device is st_dev.
    #[test]
    fn agrees_with_stat_where_they_coincide() {
        for p in ["/bin/sh", "/proc/self/exe", "/tmp"] {
            let id = file_id(Path::new(p)).expect("statx");
            let m = std::fs::metadata(p).expect("stat");
            assert_eq!(id.ino, m.ino(), "{p}");
            assert_eq!(id.dev, kernel_dev(libc::major(m.dev()), libc::minor(m.dev())), "{p}");
        }
        assert!(file_id(Path::new("/no/such/file")).is_err());
    }
}
