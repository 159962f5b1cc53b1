//! Expands an `exe` glob by walking only the directories its components can match, within a
//! budget: selectors are resolved when a policy loads and every few seconds, so one glob must not
//! walk the filesystem (`/*/*/*/*/*/*` visited 300,000 files in 36 s). Pseudo-filesystems
//! (procfs, sysfs and the kernel's filesystems mounted under /sys) are never entered: they hold
//! no executables, procfs repeats the whole tree per process, and `/proc/self/exe` would be the
//! agent itself.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How much one glob may read.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Directory entries looked at (each name read from a directory, each literal component).
    pub entries: usize,
    pub time: Duration,
}

/// What a glob may cost when resolved (policy load, `check`, and every few seconds).
pub const BUDGET: Budget = Budget { entries: 100_000, time: Duration::from_millis(500) };

/// The walk of one glob, counting what it costs.
pub struct Walk {
    budget: Budget,
    started: Instant,
    visited: usize,
}

/// Filesystems a glob never enters (statfs f_type).
const PSEUDO_FS: [(i64, &str); 9] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
];

/// The pseudo-filesystem `dir` is on, if it is on one.
fn pseudo_fs(dir: &Path) -> Option<&'static str> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the struct it is given; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion, reason = "f_type's width differs between architectures")]
    let t = i64::from(st.f_type);
    PSEUDO_FS.iter().find(|(magic, _)| *magic == t).map(|(_, name)| *name)
}

fn is_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

impl Walk {
    pub fn new(budget: Budget) -> Self {
        Walk { budget, started: Instant::now(), visited: 0 }
    }

    /// Counts one more entry, read in `dir`; Err says why the walk must stop.
    pub fn visit(&mut self, dir: &Path) -> Result<(), String> {
        self.visited += 1;
        if self.visited > self.budget.entries {
            return Err(format!(
                "would look at more than {} directory entries (stopped in {})",
                self.budget.entries,
                dir.display()
            ));
        }
        // The clock is read every 64 entries: a readdir is cheaper than a clock read.
        if self.visited.is_multiple_of(64) {
            self.in_time(dir)?;
        }
        Ok(())
    }

    /// Err once the walk has taken longer than its budget.
    pub fn in_time(&self, at: &Path) -> Result<(), String> {
        if self.started.elapsed() > self.budget.time {
            return Err(format!(
                "took more than {} ms to expand (stopped at {})",
                self.budget.time.as_millis(),
                at.display()
            ));
        }
        Ok(())
    }

    /// The paths under `root` that `pattern` (absolute, `/`-separated; its components are
    /// globs) matches, sorted; directories are followed through symlinks, as `glob::glob` does,
    /// but never into a pseudo-filesystem, nor into `proc` or `sys` at the root.
    pub fn expand(&mut self, root: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let mut frontier = vec![root.to_path_buf()];
        for (i, comp) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            let mut next = Vec::new();
            for dir in &frontier {
                if pseudo_fs(dir).is_some() {
                    continue;
                }
                if !is_wildcard(comp) {
                    self.visit(dir)?;
                    let p = dir.join(comp);
                    if if last { p.exists() } else { p.is_dir() } {
                        next.push(p);
                    }
                    continue;
                }
                let glob = glob::Pattern::new(comp).map_err(|e| format!("is not a valid glob: {e}"))?;
                let Ok(entries) = fs::read_dir(dir) else { continue };
                for entry in entries.flatten() {
                    self.visit(dir)?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if !glob.matches(name) || (dir == root && (name == "proc" || name == "sys")) {
                        continue;
                    }
                    let p = entry.path();
                    // A symlink to a directory is followed (`/bin` → `usr/bin`).
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir() || (t.is_symlink() && p.is_dir()));
                    if last || is_dir {
                        next.push(p);
                    }
                }
            }
            next.sort();
            frontier = next;
        }
        Ok(frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, dirs: usize, files: usize) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ea-globwalk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in 0..dirs {
            let dir = root.join(format!("d{d}/bin"));
            fs::create_dir_all(&dir).expect("dir");
            for f in 0..files {
                fs::write(dir.join(format!("f{f}")), "").expect("file");
            }
        }
        root
    }

    #[test]
    fn matches_what_glob_matches_following_directory_links() {
        let root = tree("match", 3, 2);
        std::os::unix::fs::symlink(root.join("d1"), root.join("link")).expect("symlink");
        let p = format!("{}/*/bin/f[1]", root.display());
        let mut w = Walk::new(BUDGET);
        let got = w.expand(Path::new("/"), &p).expect("within budget");
        let want: Vec<PathBuf> = glob::glob(&p).expect("glob").flatten().collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 4, "{got:?}");
        // The same under a root, as `hostRoot` looks up.
        let under = Walk::new(BUDGET).expand(&root, "/d0/bin/*").expect("within budget");
        assert_eq!(under, [root.join("d0/bin/f0"), root.join("d0/bin/f1")]);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_walk_past_its_entries_or_its_time_stops_naming_where() {
        let root = tree("budget", 4, 30);
        let p = format!("{}/*/bin/*", root.display());
        let small = Budget { entries: 50, time: Duration::from_secs(10) };
        let e = Walk::new(small).expand(Path::new("/"), &p).expect_err("too many");
        assert!(
            e.starts_with("would look at more than 50 directory entries (stopped in ") && e.contains("/bin)"),
            "{e}"
        );
        let mut w = Walk::new(Budget { entries: 1000, time: Duration::ZERO });
        std::thread::sleep(Duration::from_millis(2));
        let e = w.expand(Path::new("/"), &p).expect_err("too slow");
        assert!(e.starts_with("took more than 0 ms to expand"), "{e}");
        assert_eq!(Walk::new(BUDGET).expand(Path::new("/"), &p).expect("fits").len(), 120);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn pseudo_filesystems_are_never_entered() {
        assert_eq!(pseudo_fs(Path::new("/proc/self")), Some("procfs"));
        assert_eq!(pseudo_fs(Path::new("/sys/kernel")), Some("sysfs"));
        assert_eq!(pseudo_fs(Path::new("/usr")), None);
        let mut w = Walk::new(BUDGET);
        assert!(w.expand(Path::new("/"), "/*/self/exe").expect("fits").is_empty());
        assert!(w.expand(Path::new("/"), "/usr/../proc/self/exe").expect("fits").is_empty());
        assert!(w.expand(Path::new("/"), "/*/*/self").expect("fits").is_empty());
    }
}
