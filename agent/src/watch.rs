//! Watches the policy files for changes. Directories are watched, not files: editors and config
//! tools replace a file by renaming a new one over it, and a Kubernetes ConfigMap volume swaps
//! its `..data` symlink, so the file watched yesterday is not the file there today. Only events
//! that concern a policy file are reported (its own name, `*.yaml`/`*.yml` in a policy
//! directory, or a ConfigMap's `..`-prefixed internals): an events file or a log written beside
//! the policy must not cause reloads.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

/// What changes in one watched directory matter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interest {
    /// A policy directory: its YAML files.
    Yaml,
    /// The directory of a policy file: that file.
    File(OsString),
}

fn matters(interests: &[(PathBuf, Interest)], path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return false };
    // kubelet swaps `..data`, and writes `..<timestamp>` directories and `..data_tmp`.
    let configmap = name.to_string_lossy().starts_with("..");
    interests.iter().any(|(d, i)| {
        d == dir
            && (configmap
                || match i {
                    Interest::Yaml => {
                        let n = name.to_string_lossy();
                        n.ends_with(".yaml") || n.ends_with(".yml")
                    }
                    Interest::File(f) => f == name,
                })
    })
}

/// Starts watching; `None` when there is nothing to watch (the embedded default).
pub fn watch(paths: &[PathBuf], changed: UnboundedSender<()>) -> notify::Result<Option<RecommendedWatcher>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let interests: Vec<(PathBuf, Interest)> = paths
        .iter()
        .filter_map(|p| {
            // Watched paths are absolute so that event paths compare with them.
            let p = std::path::absolute(p).ok()?;
            if p.is_dir() {
                Some((p, Interest::Yaml))
            } else {
                Some((p.parent()?.to_path_buf(), Interest::File(p.file_name()?.to_os_string())))
            }
        })
        .collect();
    let filter = interests.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(e) if e.kind.is_access() => {}
        Ok(e) => {
            if e.paths.iter().any(|p| matters(&filter, p)) {
                let _ = changed.send(());
            }
        }
        // An error (an overflowed inotify queue) may hide a change: reloading is always safe.
        Err(_) => {
            let _ = changed.send(());
        }
    })?;
    let mut dirs: Vec<&PathBuf> = interests.iter().map(|(d, _)| d).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        w.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(Some(w))
}

/// Directories whose changes can change what process selectors resolve to: the parent of each
/// `cgroup` selector's directory (a restarted service's cgroup is removed and created again,
/// with a new id) and the fixed leading directory of each `exe` glob (an upgrade puts a new file,
/// with a new inode, in place). For `pod_uid` and `container` selectors, the directories pods
/// and containers appear in (see `container::parents`) and the mount itself, found by walking
/// the hierarchy: the result changes as pods come and go, so it is asked for again after each
/// resolution. A directory that does not exist yet is represented by its nearest existing
/// ancestor.
pub fn selector_dirs(m: &crate::policy::Merged, cgroup_mount: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let containers = m.vendors.iter().flat_map(|(v, _)| &v.processes).any(|s| s.names_pod() || s.container.is_some());
    if containers {
        let found = crate::container::walk(cgroup_mount);
        dirs.push(cgroup_mount.to_path_buf());
        dirs.extend(
            crate::container::parents(&found)
                .into_iter()
                .take(MAX_CONTAINER_DIRS)
                .map(|p| cgroup_mount.join(p.trim_start_matches('/'))),
        );
    }
    for (v, _) in &m.vendors {
        for sel in &v.processes {
            if let Some(cg) = &sel.cgroup {
                let rel = cg.0.trim_start_matches('/');
                let dir = cgroup_mount.join(rel);
                dirs.push(dir.parent().map_or(dir.clone(), Path::to_path_buf));
            }
            if let Some(exe) = &sel.exe {
                let fixed: PathBuf = Path::new(&exe.0)
                    .components()
                    .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                    .collect();
                // The file name itself is not a directory: watch the one it is in.
                let dir = if fixed.as_os_str() == exe.0.as_str() {
                    fixed.parent().map(Path::to_path_buf)
                } else {
                    Some(fixed)
                };
                dirs.extend(dir);
            }
        }
    }
    let mut out: Vec<PathBuf> =
        dirs.into_iter().filter_map(|d| d.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)).collect();
    out.sort();
    out.dedup();
    out
}

/// Upper bound on the pod and container directories watched (each is an inotify watch, a
/// limited resource shared with the rest of the host); beyond it the 5 s timer still resolves.
const MAX_CONTAINER_DIRS: usize = 1024;

/// Watches `dirs` (non-recursively) and reports any change in them.
pub fn watch_dirs(dirs: &[PathBuf], changed: UnboundedSender<()>) -> notify::Result<Option<RecommendedWatcher>> {
    if dirs.is_empty() {
        return Ok(None);
    }
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.map_or(true, |e| !e.kind.is_access()) {
            let _ = changed.send(());
        }
    })?;
    for d in dirs {
        w.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_files_matter() {
        let i = vec![
            (PathBuf::from("/etc/egress"), Interest::File("policy.yaml".into())),
            (PathBuf::from("/etc/egress.d"), Interest::Yaml),
        ];
        assert!(matters(&i, Path::new("/etc/egress/policy.yaml")));
        assert!(matters(&i, Path::new("/etc/egress/..data")));
        assert!(matters(&i, Path::new("/etc/egress.d/vendors.yml")));
        assert!(!matters(&i, Path::new("/etc/egress/events.jsonl")));
        assert!(!matters(&i, Path::new("/etc/egress/other.yaml")));
        assert!(!matters(&i, Path::new("/etc/egress.d/notes.txt")));
        assert!(!matters(&i, Path::new("/etc/passwd")));
    }
}
