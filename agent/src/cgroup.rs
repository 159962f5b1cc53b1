//! cgroup v2: where the hierarchy is mounted, which cgroup to watch, and the paths of cgroup ids
//! (what a path says about its container is `container`'s).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error("no cgroup2 filesystem is mounted (see /proc/self/mountinfo); mount one or pass --cgroup")]
    NoCgroup2,
    #[error("--cgroup {path}: {reason}")]
    BadCgroup { path: String, reason: String },
}

/// The mount point of the cgroup v2 hierarchy, from a mountinfo text.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    cgroup2_mount_root_in(mountinfo).map(|(m, _)| m)
}

/// The mount point and the depth of the mounted directory in the hierarchy (0 unless only a
/// subtree is mounted). The kernel counts cgroup depth from the real root, so a path under the
/// mount point is `root depth + its own components` deep.
fn cgroup2_mount_root_in(mountinfo: &str) -> Option<(PathBuf, u32)> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ..."
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = pre.split_whitespace();
        let root = f.nth(3)?;
        let mount = PathBuf::from(unescape_mountinfo(f.next()?));
        let depth = root.split('/').filter(|c| !c.is_empty()).count() as u32;
        Some((mount, depth))
    })
}

/// Depth of the cgroup2 mount's root directory in the hierarchy.
pub fn cgroup2_root_depth() -> u32 {
    std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|t| cgroup2_mount_root_in(&t)).map_or(0, |(_, d)| d)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    cgroup2_mount_in(&text).ok_or(CgroupError::NoCgroup2)
}

/// Resolves `--cgroup`: an absolute directory on the cgroup2 mount, or a path relative to it;
/// none means the root of the hierarchy (the whole host).
pub fn resolve_watched(arg: Option<&Path>) -> Result<PathBuf, CgroupError> {
    let mount = cgroup2_mount()?;
    let path = match arg {
        None => mount.clone(),
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => mount.join(p),
    };
    let bad = |reason: String| CgroupError::BadCgroup { path: path.display().to_string(), reason };
    let canon = fs::canonicalize(&path).map_err(|e| bad(e.to_string()))?;
    if !canon.starts_with(&mount) {
        return Err(bad(format!("not under the cgroup2 mount {}", mount.display())));
    }
    if !canon.join("cgroup.procs").exists() {
        return Err(bad("not a cgroup2 directory (no cgroup.procs)".into()));
    }
    Ok(canon)
}

/// Maps cgroup ids (the inode number of the cgroup's directory) to paths relative to the
/// mount, for events whose process is gone before /proc could be read. Rescans the hierarchy on
/// a miss, at most once per `min_rescan`, so a flood of unknown ids cannot make it spin.
pub struct CgroupNames {
    mount: PathBuf,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

/// Upper bound on cgroups remembered (a host with more is unusual; beyond it lookups rescan).
const MAX_CGROUPS: usize = 65_536;

impl CgroupNames {
    pub fn new(mount: PathBuf) -> Self {
        Self { mount, by_id: HashMap::new(), last_scan: None, min_rescan: Duration::from_secs(1) }
    }

    pub fn fill(&self) -> crate::memory::CacheFill {
        crate::memory::CacheFill::new("cgroup_paths", self.by_id.len(), MAX_CGROUPS)
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub fn lookup(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < self.min_rescan) {
            return None;
        }
        self.rescan();
        self.by_id.get(&id).cloned()
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.by_id.clear();
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            if self.by_id.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else { continue };
            let rel = dir
                .strip_prefix(&self.mount)
                .map_or_else(|_| dir.display().to_string(), |r| format!("/{}", r.display()));
            self.by_id.insert(meta.ino(), rel);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            stack.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount_root_in(mi), Some((PathBuf::from("/sys/fs/cgroup/unified"), 0)));
        let sub = "50 1 0:38 /kubepods.slice/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_root_in(sub), Some((PathBuf::from("/sys/fs/cgroup"), 2)));
        assert_eq!(cgroup2_mount_in("1 2 0:1 / /x\\040y rw - cgroup2 none rw\n"), Some(PathBuf::from("/x y")));
        assert_eq!(cgroup2_mount_in(&mi[..mi.find("41").unwrap_or(0)]), None);
    }
}
