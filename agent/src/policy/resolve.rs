//! Turns process selectors into what the kernel compares: executables (by device and inode) for
//! `exe` globs, uids for user names, cgroup ids and depths for cgroup paths. Resolution reads the
//! host, so it sits behind a trait that tests replace.

use std::{
    ffi::CString,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::PathBuf,
};

/// An executable file that matched an `exe` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeFile {
    pub path: String,
    /// Kernel-internal dev_t (major << 20 | minor), as the programs read it from the superblock.
    pub dev: u32,
    pub ino: u64,
}

pub trait Resolver {
    /// Executable regular files matching `pattern` (symlinks followed to the file they name).
    fn exes(&self, pattern: &str) -> Vec<ExeFile>;
    fn user(&self, name: &str) -> Option<u32>;
    /// cgroup id (inode of its directory) and depth (the root is 0) of a cgroup path.
    fn cgroup(&self, path: &str) -> Option<(u64, u32)>;
}

/// Userspace `st_dev` as the kernel's internal dev_t.
pub fn user_dev_to_kernel(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

pub struct HostResolver {
    cgroup_mount: Option<PathBuf>,
}

impl HostResolver {
    pub fn new() -> Self {
        Self { cgroup_mount: crate::cgroup::cgroup2_mount().ok() }
    }
}

impl Resolver for HostResolver {
    fn exes(&self, pattern: &str) -> Vec<ExeFile> {
        let Ok(paths) = glob::glob(pattern) else { return Vec::new() };
        let mut out: Vec<ExeFile> = paths
            .flatten()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                (m.is_file() && m.permissions().mode() & 0o111 != 0).then(|| ExeFile {
                    path: p.display().to_string(),
                    dev: user_dev_to_kernel(m.dev()),
                    ino: m.ino(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn user(&self, name: &str) -> Option<u32> {
        let c = CString::new(name).ok()?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; getpwnam_r is the reentrant form and
        // consults NSS, so directory users resolve like they do for login.
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
    }

    fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
        let mount = self.cgroup_mount.as_ref()?;
        let rel = path.trim_start_matches('/');
        let dir = if rel.is_empty() { mount.clone() } else { mount.join(rel) };
        let m = std::fs::metadata(dir).ok()?;
        let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        m.is_dir().then_some((m.ino(), level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolver_reads_this_host() {
        let r = HostResolver::new();
        assert_eq!(r.user("root"), Some(0));
        assert_eq!(r.user("no-such-user-egress-agent"), None);
        let sh = r.exes("/bin/s[h]");
        assert_eq!(sh.len(), 1, "{sh:?}");
        let m = std::fs::metadata("/bin/sh").expect("/bin/sh");
        assert_eq!(sh[0].ino, m.ino());
        assert!(r.exes("/no/such/dir/*").is_empty());
        // The root cgroup is depth 0.
        assert!(r.cgroup("/").is_some_and(|(_, level)| level == 0));
        assert!(r.cgroup("/no-such-cgroup-egress-agent").is_none());
    }

    #[test]
    fn dev_encoding_round_trips() {
        assert_eq!(user_dev_to_kernel(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(crate::events::kernel_dev_to_user(user_dev_to_kernel(libc::makedev(259, 3))), libc::makedev(259, 3));
    }
}
