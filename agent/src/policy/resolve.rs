//! Turns process selectors into what the kernel compares: executables (by device and inode) for
//! `exe` globs, uids for user names, cgroup ids and depths for cgroup paths. Resolution reads the
//! host, so it sits behind a trait that tests replace.

use std::{
    ffi::CString,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::PathBuf,
};

use super::globwalk::{Walk, BUDGET};

/// An executable file that matched an `exe` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeFile {
    pub path: String,
    /// Kernel-internal dev_t (major << 20 | minor), as the programs read it from the superblock.
    pub dev: u32,
    pub ino: u64,
    /// Inode generation, where the filesystem says (see [`crate::fileid::generation`]).
    pub gen: Option<u32>,
    /// Starts with `#!`: never the executable the kernel sees.
    pub script: bool,
}

pub trait Resolver {
    /// Executable regular files matching `pattern` (symlinks followed to the file they name);
    /// Err says why the glob was not expanded (it would cost more than a glob may).
    fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String>;
    fn user(&self, name: &str) -> Option<u32>;
    /// cgroup id (inode of its directory) and depth (the root is 0) of a cgroup path.
    fn cgroup(&self, path: &str) -> Option<(u64, u32)>;
    /// Pod and container cgroups on this host, depths counted from the root of the hierarchy,
    /// for `pod_uid` and `container` selectors.
    fn containers(&self) -> Vec<crate::container::Found> {
        Vec::new()
    }
    /// The metadata of the pod with this UID (None: this node's pod list lacks it), for
    /// `pod_namespace`, `pod_name` and `pod_labels`; Err says why no pod list can be consulted.
    fn pod(&self, _uid: &str) -> Result<Option<std::sync::Arc<crate::kube::PodMeta>>, String> {
        Err(NO_POD_LIST.into())
    }
}

/// Why selectors by pod metadata match nothing when the agent has no pod list.
pub const NO_POD_LIST: &str =
    "no pod list: set `kubernetes: {pods: api}` (or `kubelet`) in the agent's configuration to match pods by namespace, name or labels";

/// Executables of running processes that were deleted or replaced since the process started and
/// whose former path matches `glob` (`/proc/PID/exe` reads `<path> (deleted)` for them; the link
/// itself still leads to the file the process runs).
fn running_replaced(glob: &glob::Pattern) -> Vec<ExeFile> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| {
            let link = e.path().join("exe");
            let target = std::fs::read_link(&link).ok()?;
            let former = target.to_str()?.strip_suffix(" (deleted)")?;
            if !glob.matches(former) {
                return None;
            }
            let id = crate::fileid::file_id(&link).ok()?;
            Some(ExeFile {
                path: format!("{former} (replaced; still run by pid {})", e.file_name().to_string_lossy()),
                dev: id.dev,
                ino: id.ino,
                gen: crate::fileid::generation(&link),
                script: false,
            })
        })
        .collect()
}

/// A `#!` script: the kernel runs its interpreter, so its own identity never reaches a hook.
fn is_script(p: &std::path::Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 2];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"#!"
}

pub struct HostResolver {
    cgroup_mount: Option<PathBuf>,
    cgroup_root_depth: u32,
    /// Last successful user lookups: a transient NSS failure (directory server down) keeps the
    /// last known uid instead of turning the selector into match-nothing.
    users: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The last walk of the hierarchy: every selector of one resolution uses the same walk.
    walked: std::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<Vec<crate::container::Found>>)>>,
    /// Where the host's files are when the agent runs in a container (`hostRoot:`, e.g. `/host`
    /// in the DaemonSet): `exe` globs are looked up there. A bind mount keeps the files' device
    /// and inode, so the identity found is the one the kernel sees.
    host_root: Option<PathBuf>,
    /// This node's pod list (config `kubernetes.pods`).
    pods: Option<crate::kube::Pods>,
}

/// How long one walk of the cgroup hierarchy serves: a resolution (fingerprint, then compile)
/// reads it several times within milliseconds; the next one, seconds later, walks again.
const WALK_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

impl HostResolver {
    pub fn new() -> Self {
        Self {
            cgroup_mount: crate::cgroup::cgroup2_mount().ok(),
            cgroup_root_depth: crate::cgroup::cgroup2_root_depth(),
            users: std::sync::Mutex::default(),
            walked: std::sync::Mutex::default(),
            host_root: None,
            pods: None,
        }
    }

    /// Looks `exe` globs up under `root` (the host's root mounted in the agent's container).
    pub fn with_host_root(mut self, root: Option<PathBuf>) -> Self {
        self.host_root = root.filter(|r| r != std::path::Path::new("/"));
        self
    }

    /// Resolves `pod_namespace`, `pod_name` and `pod_labels` through this node's pod list.
    pub fn with_pods(mut self, pods: Option<crate::kube::Pods>) -> Self {
        self.pods = pods;
        self
    }
}

impl Resolver for HostResolver {
    fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String> {
        let root = self.host_root.as_deref().unwrap_or(std::path::Path::new("/"));
        let mut walk = Walk::new(BUDGET);
        let refused = |why: String| format!("exe `{pattern}` {why}: name the directory");
        let mut out = Vec::new();
        for p in walk.expand(root, pattern).map_err(refused)? {
            // Each match is opened (is it a script?): that counts against the time too.
            walk.in_time(&p).map_err(refused)?;
            let Ok(m) = std::fs::metadata(&p) else { continue };
            if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
                continue;
            }
            let Ok(id) = crate::fileid::file_id(&p) else { continue };
            // Shown as the host names it.
            let shown = match &self.host_root {
                Some(root) => {
                    p.strip_prefix(root).map_or_else(|_| p.display().to_string(), |r| format!("/{}", r.display()))
                }
                None => p.display().to_string(),
            };
            let gen = crate::fileid::generation(&p);
            out.push(ExeFile { path: shown, dev: id.dev, ino: id.ino, gen, script: is_script(&p) });
        }
        // A process started before its executable was replaced (a package upgrade without a
        // restart) still runs the old file: it keeps its rights until it exits.
        if let Ok(glob) = glob::Pattern::new(pattern) {
            for f in running_replaced(&glob) {
                if !out.iter().any(|o| o.dev == f.dev && o.ino == f.ino) {
                    out.push(f);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn user(&self, name: &str) -> Option<u32> {
        // In a container the image's users are not the host's: read the host's passwd file
        // (directory users, through the host's NSS, are out of reach from here).
        if let Some(root) = &self.host_root {
            let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            return match std::fs::read_to_string(root.join("etc/passwd")) {
                Ok(text) => {
                    let uid = passwd_uid(&text, name);
                    match uid {
                        Some(u) => users.insert(name.to_owned(), u),
                        None => users.remove(name),
                    };
                    uid
                }
                // A read error says nothing about the user: keep what we knew.
                Err(_) => users.get(name).copied(),
            };
        }
        let c = CString::new(name).ok()?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; getpwnam_r is the reentrant form and
        // consults NSS, so directory users resolve like they do for login.
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (rc, result.is_null()) {
            (0, false) => {
                users.insert(name.to_owned(), pwd.pw_uid);
                Some(pwd.pw_uid)
            }
            // rc 0 with no entry: the user does not exist.
            (0, true) => {
                users.remove(name);
                None
            }
            // A lookup error says nothing about the user: keep what we knew.
            _ => users.get(name).copied(),
        }
    }

    fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
        let mount = self.cgroup_mount.as_ref()?;
        let rel = path.trim_start_matches('/');
        let dir = if rel.is_empty() { mount.clone() } else { mount.join(rel) };
        let m = std::fs::metadata(dir).ok()?;
        let level = self.cgroup_root_depth + rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        m.is_dir().then_some((m.ino(), level))
    }

    fn containers(&self) -> Vec<crate::container::Found> {
        let Some(mount) = self.cgroup_mount.as_ref() else { return Vec::new() };
        let mut walked = self.walked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, found)) = walked.as_ref() {
            if at.elapsed() < WALK_FRESH {
                return found.to_vec();
            }
        }
        let mut found = crate::container::walk(mount);
        for f in &mut found {
            f.depth += self.cgroup_root_depth;
        }
        *walked = Some((std::time::Instant::now(), std::sync::Arc::new(found.clone())));
        found
    }

    fn pod(&self, uid: &str) -> Result<Option<std::sync::Arc<crate::kube::PodMeta>>, String> {
        let pods = self.pods.as_ref().ok_or(NO_POD_LIST)?;
        if let Some(why) = pods.unavailable() {
            return Err(why);
        }
        Ok(pods.get(uid))
    }
}

/// The uid of `name` in a passwd file's text (`name:x:uid:gid:…`).
fn passwd_uid(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_the_host_roots_own_under_a_host_root() {
        let root = std::env::temp_dir().join(format!("ea-hostusers-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh
billing:x:4242:4242::/srv:/sbin/nologin
",
        )
        .expect("passwd");
        let r = HostResolver::new().with_host_root(Some(root.clone()));
        assert_eq!((r.user("billing"), r.user("root"), r.user("bill")), (Some(4242), Some(0), None));
        assert_eq!(passwd_uid("a:x:notanumber:0::/:/bin/sh\n", "a"), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn exe_globs_are_looked_up_under_the_host_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("ea-hostroot-{}", std::process::id()));
        let bin = root.join("usr/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let exe = bin.join("payments");
        std::fs::write(&exe, b"\x7fELF").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let r = HostResolver::new().with_host_root(Some(root.clone()));
        let found = r.exes("/usr/bin/pay*").expect("within budget");
        let id = crate::fileid::file_id(&exe).expect("id");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].path.as_str(), found[0].dev, found[0].ino), ("/usr/bin/payments", id.dev, id.ino));
        assert!(
            HostResolver::new().exes("/usr/bin/payments").expect("within budget").is_empty()
                || !std::path::Path::new("/usr/bin/payments").exists()
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn host_resolver_reads_this_host() {
        let r = HostResolver::new();
        assert_eq!(r.user("root"), Some(0));
        assert_eq!(r.user("no-such-user-egress-agent"), None);
        let sh = r.exes("/bin/s[h]").expect("within budget");
        assert_eq!(sh.len(), 1, "{sh:?}");
        let m = std::fs::metadata("/bin/sh").expect("/bin/sh");
        assert_eq!(sh[0].ino, m.ino());
        assert!(r.exes("/no/such/dir/*").expect("within budget").is_empty());
        // The root cgroup is depth 0.
        assert!(r.cgroup("/").is_some_and(|(_, level)| level == 0));
        assert!(r.cgroup("/no-such-cgroup-egress-agent").is_none());
    }

    #[test]
    fn scripts_are_recognised() {
        let r = HostResolver::new();
        let dir = std::env::temp_dir().join(format!("ea-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let script = dir.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\necho\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let found = r.exes(&script.display().to_string()).expect("within budget");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1);
        assert!(found[0].script);
        assert!(!r.exes("/bin/sh").expect("within budget")[0].script);
    }

    #[test]
    fn globs_never_reach_into_proc_or_sys() {
        let r = HostResolver::new();
        // /proc/self/exe is this test's own executable.
        assert_eq!(r.exes("/*/self/exe"), Ok(Vec::new()));
        assert_eq!(r.exes("/*/../proc/self/exe"), Ok(Vec::new()));
    }

    #[test]
    fn a_glob_over_the_whole_filesystem_is_refused_within_a_second_with_its_place() {
        let dir = std::env::temp_dir().join(format!("ea-wideglob-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("p.yaml");
        std::fs::write(
            &p,
            "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\nspec:\n  vendors:\n    - name: x\n      destinations: [{cidr: 1.1.1.1}]\n      processes: [{exe: /*/*/*/*/*/*}]\n",
        )
        .expect("write");
        let started = std::time::Instant::now();
        let e = crate::policy::load(std::slice::from_ref(&p), time::OffsetDateTime::now_utc(), &HostResolver::new())
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        let took = started.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.starts_with(&format!("{}:8:", p.display()))
                && e.contains("error: spec.vendors[0].processes[0]")
                && e.contains("exe `/*/*/*/*/*/*`")
                && e.contains("name the directory"),
            "{e}"
        );
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }
}
